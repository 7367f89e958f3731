#!/usr/bin/env bash
# Inspect commands on the case tree (odd names, hard links, a sparse file, a path longer
# than PATH_MAX): id resolution (latest, prefixes, ambiguity), show, ls, dump (files byte
# for byte, a directory as a tar stream extracted by GNU tar and by python's tarfile),
# diff after known changes, find across two backups.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
make_tree "$src" || fail "make_tree failed"
# a hard link whose first name (hello.txt, met first in the walk) is outside its directory
mkdir "$src/zz"
ln "$src/hello.txt" "$src/zz/hello-link"
# (run.sh's cheap key derivation: this test opens the repository some sixty times)
assert_exit 0 cb init

# ---- ids ---------------------------------------------------------------------------------
assert_exit 7 cb show latest
assert_contains "$ERR" "no backup in repository" "latest on an empty repository: not found"

backup_json "$TEST_TMP/b1.json" --full --time 2024-01-15T03:00:00Z "$src"
assert_rc 3 "first backup (the socket and the device are skipped with warnings)"
id1=$BACKUP_ID
assert_eq file_full_2024-01-15T03-00-00 "$id1" "first backup id"

assert_exit 0 cb show latest
assert_contains "$OUT" "backup    $id1" "show latest names the only backup"
assert_exit 0 cb show file_full_2024-01
assert_contains "$OUT" "$id1" "a unique prefix resolves"
assert_exit 0 cb show latest:files
assert_exit 7 cb show latest:database
assert_contains "$ERR" "no database backup" "latest:database with no database backup: not found"
assert_exit 7 cb show file_incremental
assert_contains "$ERR" "no backup file_incremental" "an unknown id or prefix: not found"
assert_exit 2 cb show latest:tapes
assert_exit 2 env POSTGRES_URL=postgresql://nobody@127.0.0.1:9/none "$CARIS_BIN" restore database latest:files
assert_contains "$ERR" "takes database backups" "latest:files where a database backup is needed"

# show: summary, roots, warnings with full paths, drill history
run cb --json show "$id1"
assert_rc 0 "show --json"
assert_eq "$id1" "$(json_get "$OUT_FILE" '["id"]')" "show --json: the id"
assert_eq "[\"$src\"]" "$(json_get "$OUT_FILE" '["roots"]')" "show --json: the roots"
assert_eq true "$(json_eval "$OUT_FILE" 'any(w.get("fullPath") == "'"$src"'/unix.sock" for w in d["warnings"])')" \
    "show --json: each warning with its full path"
assert_eq "[]" "$(json_get "$OUT_FILE" '["testRestores"]')" "show --json: no test restores yet"
assert_eq "[]" "$(json_get "$OUT_FILE" '["verifications"]')" "show --json: no verifications recorded"
assert_exit 0 cb show "$id1"
assert_contains "$OUT" "$src/null-like: " "show: warnings with full paths"
assert_contains "$OUT" "roots     $src" "show: the root"

# ---- ls ----------------------------------------------------------------------------------
# The tree as python sees it (names as bytes, via directory descriptors), in the shape ls
# --json prints: every entry but the socket and the device.
cat >"$TEST_TMP/tree.py" <<'EOF'
import base64, json, os, stat, sys
root = os.fsencode(sys.argv[1])
out = {}
def key(p):
    try:
        return p.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(p).decode()
def walk(dirfd, rel):
    for name in sorted(map(os.fsencode, os.listdir(dirfd))):
        st = os.lstat(name, dir_fd=dirfd)
        p = rel + b"/" + name
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode):
            continue
        t = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
             stat.S_IFIFO: "fifo"}[stat.S_IFMT(st.st_mode)]
        out[key(p)] = [t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                       st.st_size if t == "file" else None]
        if t == "dir":
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dirfd)
            walk(fd, p)
            os.close(fd)
st = os.lstat(root)
out[key(root)] = ["dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, None]
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
walk(fd, root)
json.dump(out, sys.stdout, sort_keys=True)
EOF
cat >"$TEST_TMP/lsjson.py" <<'EOF'
import base64, json, sys
d = json.load(open(sys.argv[1]))
out = {}
for e in d["entries"]:
    k = e["path"] if "path" in e else "b64:" + e["pathB64"]
    t = "file" if e["type"] == "hardlink" else e["type"]
    out[k] = [t, e["mode"], e["uid"], e["gid"], e.get("size")]
json.dump(out, sys.stdout, sort_keys=True)
EOF
python3 "$TEST_TMP/tree.py" "$src" >"$TEST_TMP/tree.json"
run cb --json ls "$id1" --recursive
assert_rc 0 "ls --recursive --json"
python3 "$TEST_TMP/lsjson.py" "$OUT_FILE" >"$TEST_TMP/ls.json"
assert_true "ls --recursive lists exactly the tree (paths, types, modes, owners, sizes)" \
    cmp "$TEST_TMP/tree.json" "$TEST_TMP/ls.json"
assert_eq "[[\"$src/hardlink-a\", \"$src/docs/hardlink-b\"], [\"$src/zz/hello-link\", \"$src/hello.txt\"]]" \
    "$(json_eval "$OUT_FILE" '[[e["path"], e["link"]] for e in d["entries"] if e["type"] == "hardlink"]')" \
    "ls: the later names of hard-linked files are hard links naming the first by its full path"

# without --recursive: the root and what is directly in it
run cb --json ls "$id1"
assert_rc 0 "ls --json"
want=$(cd "$src" && python3 -c '
import os, stat, json, sys
n = [x for x in os.listdir(b".") if not (stat.S_ISSOCK(os.lstat(x).st_mode) or stat.S_ISCHR(os.lstat(x).st_mode))]
print(len(n) + 1)')
assert_eq "$want" "$(json_eval "$OUT_FILE" 'len(d["entries"])')" "ls: the root and its direct children"
assert_eq "$src" "$(json_get "$OUT_FILE" '["entries"][0]["path"]')" "ls: the root comes first"

# a path relative to the root, and the same path in full
run cb --json ls "$id1" docs
assert_rc 0 "ls ID docs"
assert_eq "[\"$src/docs\", \"$src/docs/hardlink-b\", \"$src/docs/numbers.txt\", \"$src/docs/reports\"]" \
    "$(json_eval "$OUT_FILE" '[e["path"] for e in d["entries"]]')" "ls docs: docs and what is directly in it"
run cb --json ls "$id1" "$src/docs/"
assert_eq 4 "$(json_eval "$OUT_FILE" 'len(d["entries"])')" "ls with the full path (trailing slash) lists the same"
run cb ls "$id1" docs --json
assert_eq 4 "$(json_eval "$OUT_FILE" 'len(d["entries"])')" "--json after the command word"
run cb ls -lR "$id1" docs
assert_rc 0 "ls -lR (short options together)"
assert_eq 6 "$(wc -l <"$OUT_FILE")" "ls -lR docs: docs and the five entries below it"
assert_exit 7 cb ls "$id1" docs/nope
assert_contains "$ERR" "no path docs/nope" "ls of a missing path: not found"
assert_exit 0 cb ls -l "$id1" setuid-file
assert_match '^-rwsr-xr-x ' "$OUT" "ls -l: mode string with setuid"
assert_exit 0 cb ls --long "$id1" hardlink-a
assert_contains "$OUT" "=> $src/docs/hardlink-b" "ls -l: a hard link shows its first name"
assert_exit 0 cb ls "$id1" $'name\nwith newline'
assert_eq "$src/name\\x0awith newline" "$OUT" "ls escapes a newline in a name"

# ---- dump: every regular file, byte for byte ---------------------------------------------
cat >"$TEST_TMP/dumpall.py" <<'EOF'
import os, stat, subprocess, sys
cb, bid, root = sys.argv[1], sys.argv[2], os.fsencode(sys.argv[3])
n = bad = 0
def walk(dirfd, rel):
    global n, bad
    for name in sorted(map(os.fsencode, os.listdir(dirfd))):
        st = os.lstat(name, dir_fd=dirfd)
        p = rel + b"/" + name
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dirfd)
            walk(fd, p)
            os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY, dir_fd=dirfd)
            with os.fdopen(fd, "rb") as f:  # one read: appending 1 MiB reads copies O(n^2)
                want = f.read()
            r = subprocess.run([cb, "dump", bid, p], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            n += 1
            if r.returncode != 0 or r.stdout != want:
                bad += 1
                print("MISMATCH", p, r.returncode, len(r.stdout), len(want), r.stderr[-300:])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
walk(fd, root)
print("files", n, "bad", bad)
EOF
run python3 "$TEST_TMP/dumpall.py" "$CARIS_BIN" "$id1" "$src"
assert_match "^files 2[0-9] bad 0$" "$(tail -n 1 <<<"$OUT")" "dump: every file of the tree byte-equal to the source"
# relative path, and the sparse file through a hash (64 MiB)
assert_eq "$(sha256sum <"$src/sparse.img")" "$(cb dump "${id1:0:20}" sparse.img | sha256sum)" \
    "dump of the sparse file (holes as zeros) by a relative path and an id prefix"
assert_exit 2 cb dump "$id1" link-to-hello
assert_contains "$ERR" "symbolic link" "dump of a symlink says what it is"
assert_exit 7 cb dump "$id1" nope

# a reader that stops early (head): the dump killed by SIGPIPE left no audit line for the data
# it had sent, and its lock behind. Now the write fails (EPIPE, exit 8) and the command ends as
# on any failed write.
lines0=$(wc -l <"$BACKUP_DIR/metadata/audit.log")
run bash -c '"$0" dump "$1" docs/reports/random.bin | head -c 1000 >/dev/null; echo "${PIPESTATUS[0]}"' \
    "$CARIS_BIN" "$id1"
assert_eq 8 "$OUT" "dump into a pipe closed early: exit 8, not killed by SIGPIPE"
assert_contains "$ERR" "stopped before its end" "... saying the reader stopped"
assert_eq $((lines0 + 1)) "$(wc -l <"$BACKUP_DIR/metadata/audit.log")" "... with its audit line"
assert_contains "$(tail -n 1 "$BACKUP_DIR/metadata/audit.log")" '"operation":"dump"' "... for the dump"
assert_eq "" "$(ls "$BACKUP_DIR/repository/locks")" "... and no lock left behind"

# ---- dump: a directory as a tar stream ---------------------------------------------------
run bash -c '"$0" dump "$1" "$2" >"$3"' "$CARIS_BIN" "$id1" "$src" "$TEST_TMP/src.tar"
assert_rc 0 "dump of the root directory as tar"
# python's tarfile sees the same names (non-UTF-8, newline, > 100 bytes, > PATH_MAX)
cat >"$TEST_TMP/tarnames.py" <<'EOF'
import os, stat, sys, tarfile
tf = tarfile.open(sys.argv[1], encoding="utf-8", errors="surrogateescape")
got = sorted(os.fsencode(m.name.rstrip("/")) for m in tf.getmembers())
root = os.fsencode(sys.argv[2])
base = os.path.basename(root)
want = [base]
def walk(dirfd, rel):
    for name in map(os.fsencode, os.listdir(dirfd)):
        st = os.lstat(name, dir_fd=dirfd)
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode):
            continue
        want.append(rel + b"/" + name)
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dirfd)
            walk(fd, rel + b"/" + name)
            os.close(fd)
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
walk(fd, base)
print("same" if sorted(want) == got else "differ: %r" % sorted(set(want) ^ set(got))[:5])
EOF
run python3 "$TEST_TMP/tarnames.py" "$TEST_TMP/src.tar" "$src"
assert_eq same "$OUT" "python tarfile reads every member name"

# a subdirectory whose hard link's first name is outside it: the link becomes the content
run bash -c '"$0" dump "$1" zz >"$2"' "$CARIS_BIN" "$id1" "$TEST_TMP/zz.tar"
assert_rc 0 "dump of a subdirectory as tar"
y=$TEST_TMP/untar-zz
mkdir "$y"
assert_true "GNU tar extracts the subdirectory" tar -xpf "$TEST_TMP/zz.tar" -C "$y"
assert_true "the hard link whose first name is outside is a file with its content" \
    cmp "$src/hello.txt" "$y/zz/hello-link"
run bash -c '"$0" dump "$1" docs >"$2"' "$CARIS_BIN" "$id1" "$TEST_TMP/docs.tar"
assert_rc 0 "dump of a subdirectory as tar"
y=$TEST_TMP/untar-docs
mkdir "$y"
assert_true "GNU tar extracts the subdirectory" tar -xpf "$TEST_TMP/docs.tar" -C "$y"
assert_true "docs/reports/random.bin extracted equal" cmp "$src/docs/reports/random.bin" "$y/docs/reports/random.bin"

# ---- diff after known changes ------------------------------------------------------------
root_mtime=$(stat -c %y "$src")
printf 'hello, changed world\n' >"$src/hello.txt"
touch -d '2020-01-02 03:04:05.123456789' "$src/hello.txt" # same mtime: content alone
# hardlink-a and docs/hardlink-b are one inode, written through its second name: both names
# changed content (a hard link's own entry holds no content: it is its first name's)
printf 'shared content, edited\n' >"$src/docs/hardlink-b"
touch -d '2022-03-04 05:06:07' "$src/docs/hardlink-b"
chmod 0600 "$src/odd-mode"
touch -d '1970-01-01 00:00:01.5' "$src/odd-mode"
chown 4321 "$src/owned-by-1234"
touch -d '2021-06-07 08:09:10' "$src/docs/numbers.txt"
setfattr -n user.new -v added "$src/xattr-file"
docs_mtime=$(stat -c %y "$src/docs")
printf 'new\n' >"$src/docs/new.txt"
rm "$src/name with space"
# the root directory's mtime put back (so it is not a change), the docs directory's not
touch -d "$root_mtime" "$src"
backup_json "$TEST_TMP/b2.json" --full --time 2024-02-15T03:00:00Z "$src"
assert_rc 3 "second backup"
id2=$BACKUP_ID
assert_ne "$docs_mtime" "$(stat -c %y "$src/docs")" "adding a file changed the docs directory's mtime"
run cb --json diff "$id1" "$id2"
assert_rc 0 "diff --json"
assert_eq "[\"$src/docs/new.txt\"]" "$(json_eval "$OUT_FILE" '[x["path"] for x in d["added"]]')" "diff: added"
assert_eq "[\"$src/name with space\"]" "$(json_eval "$OUT_FILE" '[x["path"] for x in d["removed"]]')" "diff: removed"
want="{\"$src/docs\": [\"mtime\"], \"$src/docs/hardlink-b\": [\"content\", \"mtime\"], \"$src/docs/numbers.txt\": [\"mtime\"], \"$src/hardlink-a\": [\"content\", \"mtime\"], \"$src/hello.txt\": [\"content\"], \"$src/odd-mode\": [\"mode\"], \"$src/owned-by-1234\": [\"owner\"], \"$src/xattr-file\": [\"xattrs\"], \"$src/zz/hello-link\": [\"content\"]}"
assert_eq "$want" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({x["path"]: x["changes"] for x in d["changed"]}, sort_keys=True))' "$OUT_FILE")" \
    "diff: exactly the changed entries, each with what changed (both names of an edited hard-linked file: content)"
assert_eq '{"added": 1, "changed": 9, "removed": 1}' "$(json_get "$OUT_FILE" '["stats"]')" "diff: counts"
assert_exit 0 cb diff "$id1" latest
assert_contains "$OUT" "+  $src/docs/new.txt" "diff: human output, added"
assert_contains "$OUT" "-  $src/name with space" "diff: human output, removed"
assert_contains "$OUT" "M  $src/hello.txt  (content)" "diff: human output, changed"
golden="comparing $id1 to $id2
M  $src/docs  (mtime)
M  $src/docs/hardlink-b  (content, mtime)
+  $src/docs/new.txt
M  $src/docs/numbers.txt  (mtime)
M  $src/hardlink-a  (content, mtime)
M  $src/hello.txt  (content)
-  $src/name with space
M  $src/odd-mode  (mode)
M  $src/owned-by-1234  (owner)
M  $src/xattr-file  (xattrs)
M  $src/zz/hello-link  (content)
1 added, 1 removed, 9 changed"
assert_eq "$golden" "$OUT" "diff: the whole human output, in tree order"
assert_exit 0 cb --json diff "$id2" "$id2"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["added"]) + len(d["removed"]) + len(d["changed"])')" \
    "diff of a backup with itself is empty"

# ---- ids again, now with two backups ------------------------------------------------------
assert_exit 2 cb show file_full_2024
assert_contains "$ERR" "ambiguous" "a prefix of two ids is ambiguous"
assert_contains "$ERR" "$id1" "the candidates are listed (first)"
assert_contains "$ERR" "$id2" "the candidates are listed (second)"
assert_exit 0 cb --json show latest
assert_eq "$id2" "$(json_get "$OUT_FILE" '["id"]')" "latest is the newest backup"
t=$TEST_TMP/restore-latest
assert_exit 0 cb restore files latest --target "$t" --include "$src/docs/new.txt"
assert_true "restore files latest restored from the newest backup" test -f "$t$src/docs/new.txt"
assert_exit 0 cb verify file_full_2024-01
assert_contains "$OUT" "$id1: valid" "verify takes a prefix and reports the full id"

# ---- find ---------------------------------------------------------------------------------
run cb --json find '*.csv'
assert_rc 0 "find --json"
assert_eq 2 "$(json_get "$OUT_FILE" '["backupsSearched"]')" "find searched both backups"
assert_eq "[[\"$id1\", \"$src/docs/reports/records.csv\"], [\"$id2\", \"$src/docs/reports/records.csv\"]]" \
    "$(json_eval "$OUT_FILE" '[[m["backupId"], m["path"]] for m in d["matches"]]')" "find: the file in both backups"
run cb --json find new.txt
assert_eq "[\"$id2\"]" "$(json_eval "$OUT_FILE" '[m["backupId"] for m in d["matches"]]')" "find: a file only the second backup has"
run cb --json find 'docs/*.txt' --since 2024-02-01T00:00:00Z
assert_eq "[\"$src/docs/new.txt\", \"$src/docs/numbers.txt\"]" \
    "$(json_eval "$OUT_FILE" '[m["path"] for m in d["matches"]]')" "find: a path pattern, --since"
run cb --json find 'name with space' --until 2024-01-31T00:00:00Z
assert_eq "[\"$id1\"]" "$(json_eval "$OUT_FILE" '[m["backupId"] for m in d["matches"]]')" "find: --until"
assert_exit 0 cb find 'hardlink-*'
assert_contains "$OUT" "backup $id1" "find: human output names the backup"
assert_contains "$OUT" "4 matches in 2 file backups" "find: human output counts"
assert_exit 2 cb find '*' --since 2025-01-01T00:00:00Z --until 2024-01-01T00:00:00Z

# ---- a whole tree through GNU tar -------------------------------------------------------
# Without the path longer than PATH_MAX, which no tar extracts (python's tarfile read its
# name above), and without the socket and the device.
tsrc=$TEST_TMP/tsrc
make_tree "$tsrc" --no-special || fail "make_tree failed"
rm -rf "${tsrc:?}/$(printf 'd%.0s' {1..200})"
touch -d '2001-02-03 04:05:06.000000001' "$tsrc"
backup_json "$TEST_TMP/b3.json" --full "$tsrc"
assert_rc 0 "backup of the tar tree"
run bash -c '"$0" dump "$1" "$2" >"$3"' "$CARIS_BIN" latest "$tsrc" "$TEST_TMP/tsrc.tar"
assert_rc 0 "dump of the root directory as tar"
assert_eq 0 "$(($(stat -c %s "$TEST_TMP/tsrc.tar") % 10240))" "the tar stream is padded to whole records"
x=$TEST_TMP/untar-gnu
mkdir "$x"
assert_true "GNU tar extracts the stream" \
    tar --xattrs --xattrs-include='*' --numeric-owner -xpf "$TEST_TMP/tsrc.tar" -C "$x"
# tar writes holes as data: dig them out again (and put the mtime back) before comparing
fallocate --dig-holes "$x/tsrc/sparse.img"
touch -d "$(stat -c %y "$tsrc/sparse.img")" "$x/tsrc/sparse.img"
tree_compare "$tsrc" "$x/tsrc"

# ---- an xattr whose name holds '=' (a pax keyword ends at the first '='): left out of the tar
# stream with a warning (exit 3), not written as another attribute ("user.a" = "b=value")
eq=$TEST_TMP/eqx
mkdir -p "$eq"
printf 'eq\n' >"$eq/f"
setfattr -n user.plain -v one "$eq/f"
setfattr -n 'user.a=b' -v two "$eq/f"
backup_json "$TEST_TMP/eq.json" "$eq"
assert_rc 0 "backup of an xattr whose name holds '='"
run bash -c '"$0" dump "$1" "$2" >"$3"' "$CARIS_BIN" "$BACKUP_ID" "$eq" "$TEST_TMP/eq.tar"
assert_rc 3 "dump of a directory with an xattr whose name holds '=': exit 3"
assert_contains "$ERR" "extended attribute user.a=b left out" "the warning names the attribute"
x=$TEST_TMP/untar-eq
mkdir "$x"
assert_true "GNU tar extracts the stream" \
    tar --xattrs --xattrs-include='*' -xf "$TEST_TMP/eq.tar" -C "$x"
assert_eq "$(printf '%s\n' 'user.plain="one"')" "$(getfattr -d "$x/eqx/f" 2>/dev/null | grep '^user')" \
    "the extracted file has the other attribute, and no attribute made up from the odd one"
assert_exit 0 cb restore files "$BACKUP_ID" --target "$TEST_TMP/eq-restored"
assert_eq two "$(getfattr --only-values -n 'user.a=b' "$TEST_TMP/eq-restored$eq/f")" \
    "restore files gives the attribute back"

# ---- damage: dump stops, and never writes a damaged chunk's bytes ---------------------------
export BACKUP_DIR=$TEST_TMP/damaged
# shellcheck disable=SC2034 # read by lib.sh's helpers
REPO=$BACKUP_DIR/repository
mkdir -p "$TEST_TMP/d/sub"
seeded_bytes 3M inspect/patient-scan >"$TEST_TMP/d/patient-scan.bin"
printf 'small\n' >"$TEST_TMP/d/sub/small.txt"
assert_exit 0 cb init
backup_json "$TEST_TMP/d.json" "$TEST_TMP/d"
assert_rc 0 "backup of the tree to damage"
pack=$(list_packs | xargs -d '\n' ls -S | head -n 1)
flip_byte "$pack"
run bash -c '"$0" dump latest "$1" >"$2"' "$CARIS_BIN" "$TEST_TMP/d/patient-scan.bin" "$TEST_TMP/scan.out"
assert_rc 4 "dump of a file with a damaged chunk exits 4"
assert_contains "$ERR" "patient-scan.bin" "the error names the file"
n=$(stat -c %s "$TEST_TMP/scan.out")
assert_cmp "$n" -lt $((3 << 20)) "dump stopped before the end of the file"
assert_true "what dump wrote before it stopped is the file's own first bytes" \
    cmp -n "$n" "$TEST_TMP/scan.out" "$TEST_TMP/d/patient-scan.bin"
run bash -c '"$0" dump latest "$1" >"$2"' "$CARIS_BIN" "$TEST_TMP/d" "$TEST_TMP/d.tar"
assert_rc 4 "dump of the directory as tar exits 4"
run cb dump latest sub/small.txt
assert_rc 0 "dump of an intact file of the damaged backup"
assert_eq small "$OUT" "its bytes"

# ---- find --until: the whole second ------------------------------------------------------
# A backup made now starts at a fraction of a second; find and list show the second. Given as
# --until, that second holds the backup. (With a start at .000 the check proves less, never
# fails.)
export BACKUP_DIR=$TEST_TMP/until
assert_exit 0 cb init
mkdir -p "$TEST_TMP/u"
echo until >"$TEST_TMP/u/until-file.txt"
backup_json "$TEST_TMP/u.json" "$TEST_TMP/u"
assert_rc 0 "backup without --time"
started=$(cb --json list | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["started"])')
assert_match '^[0-9-]+T[0-9:]+(\.[0-9]+)?Z$' "$started" "list --json: the start time"
second=${started%%.*}
second=${second%Z}Z
run cb --json find until-file.txt --until "$second"
assert_rc 0 "find --until the start's second"
assert_eq "[\"$TEST_TMP/u/until-file.txt\"]" "$(json_eval "$OUT_FILE" '[m["path"] for m in d["matches"]]')" \
    "find --until the second the backup started in finds it"

# ---- ls --json: mtimes beyond 2262 (past the nanoseconds an int64_t holds) ---------------
mkdir -p "$TEST_TMP/far"
echo far >"$TEST_TMP/far/future.txt"
touch -d '2300-06-01 12:00:00.5 UTC' "$TEST_TMP/far/future.txt"
if [[ $(stat -c %Y "$TEST_TMP/far/future.txt") == 10426881600 ]]; then
    backup_json "$TEST_TMP/far.json" "$TEST_TMP/far"
    assert_rc 0 "backup of a file dated 2300"
    run cb --json ls "$BACKUP_ID" future.txt
    assert_rc 0 "ls --json of a file dated 2300"
    assert_eq "2300-06-01T12:00:00.500000000Z" "$(json_get "$OUT_FILE" '["entries"][0]["mtime"]')" \
        "ls --json: an mtime in 2300 is 2300, not a wrapped-around date"
else
    skip "ls --json of a file dated 2300: this file system cannot store that mtime"
fi

# ---- help ---------------------------------------------------------------------------------
for c in show ls dump diff find; do
    assert_exit 0 cb "$c" --help
    assert_contains "$OUT" "usage: caris-backup" "$c --help"
done

test_done
