#!/usr/bin/env bash
# A repository on an S3 server (s3rver on loopback, which checks every SigV4 signature):
# every command works on it as on a directory, the restored tree is byte-exact, and the
# failures a user meets first (wrong credentials, no bucket, no server, a bad location) are
# clear errors with their exit codes, at once, without a storm of retries. A prefix with
# characters that need escaping (&, +, =, non-ASCII, XML entities) works like any other.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_REPOSITORY=s3:$S3_ENDPOINT/bkt/caris/repo
export BACKUP_S3_RETRY_SECONDS=5
objects() { find "$S3_DIR/bkt/caris/repo" -name '*._S3rver_object' | sed "s|$S3_DIR/bkt/caris/repo/||; s|._S3rver_object$||" | sort; }

# --- init, backup, list, verify, check, restore ------------------------------------------
assert_exit 0 cb init
assert_contains "$OUT" "created repository s3:$S3_ENDPOINT/bkt/caris/repo" "init names the S3 location"
assert_true "the marker is an object under the prefix" test -f "$S3_DIR/bkt/caris/repo/caris-repository._S3rver_object"
assert_exit 1 cb init
assert_contains "$ERR" "already exists" "a second init refuses"

src=$TEST_TMP/src
make_tree "$src" || fail "make_tree failed"
backup_json "$TEST_TMP/full.json" --full "$src"
assert_rc 3 "backup to S3 completes (with the warnings for the socket and the device)"
id1=$BACKUP_ID
assert_match '^file_full_' "$id1" "backup id"
assert_match $'(^|\n)data/[0-9a-f]{2}/[0-9a-f]{64}(\n|$)' "$(objects)" "packs are objects data/xx/<sha256>"
assert_eq "" "$(objects | grep -F '.tmp-')" "no temporary objects on S3"

run cb --json list
assert_rc 0 "list"
assert_eq "$id1" "$(json_get "$OUT_FILE" '[0]["id"]')" "list shows the backup"
assert_exit 0 cb verify "$id1"
assert_contains "$OUT" "valid" "verify: valid"
assert_exit 0 cb check --read-data
assert_contains "$OUT" "no errors found" "check --read-data: no errors"

target=$TEST_TMP/restore
mkdir "$target"
assert_exit 0 cb restore files "$id1" --target "$target"
tree_compare "$src" "$target$src" --skip-special

# A pack's name is still the SHA-256 of its bytes (as on disk).
pack=$(objects | grep -m1 '^data/')
assert_eq "$(basename "$pack")" "$(sha256sum "$S3_DIR/bkt/caris/repo/$pack._S3rver_object" | cut -c1-64)" \
    "an uploaded pack is named by the SHA-256 of its bytes"

# --- incremental, forget + prune ---------------------------------------------------------
printf 'changed\n' >>"$src/hello.txt"
backup_json "$TEST_TMP/incr.json" "$src"
assert_rc 3 "incremental backup to S3"
id2=$BACKUP_ID
assert_ne "$id1" "$id2" "a second backup"
assert_exit 0 cb forget --keep-last 1 --prune
run cb --json list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "forget --keep-last 1 leaves one backup"
assert_eq "$id2" "$(json_get "$OUT_FILE" '[0]["id"]')" "the newest one"
assert_exit 0 cb prune
assert_exit 0 cb check --read-data
target2=$TEST_TMP/restore2
mkdir "$target2"
assert_exit 0 cb restore files "$id2" --target "$target2"
tree_compare "$src" "$target2$src" --skip-special

# --- the local copies of index files and snapshots (BACKUP_DIR/metadata/cache) ----------
cache=$(find "$BACKUP_DIR/metadata/cache" -mindepth 1 -maxdepth 1 -name 's3-*' 2>/dev/null | head -n 1)
assert_ne "" "$cache" "a local cache directory for the S3 repository"
assert_eq "$(objects | grep -c '^snapshots/')" "$(find "$cache/snapshots" -type f | wc -l)" \
    "after forget and prune, the cache holds copies of the remaining snapshots only"
assert_eq "$(objects | grep '^index/' | sort)" "$(cd "$cache" && find index -type f | sort)" \
    "the cache holds copies of exactly the index files there are"
idx=$(cd "$cache/index" && find . -type f -printf '%f\n' | head -n 1)
printf 'garbage' >"$cache/index/$idx"
assert_exit 0 cb check --read-data
assert_eq "$idx" "$(sha256sum "$cache/index/$idx" | cut -c1-64)" "a damaged local copy is read from S3 again"
# damage in the bucket while the local copies are good: check reads the bucket (it read the
# copies, said 'no errors found', and only a new host found the backup gone)
for kind in snapshots index; do
    obj=$(objects | grep -m1 "^$kind/")
    f=$S3_DIR/bkt/caris/repo/$obj._S3rver_object
    cp "$f" "$TEST_TMP/obj.saved"
    flip_byte "$f" 100
    assert_exit 4 cb check
    assert_contains "$OUT$ERR" "$(basename "$obj")" "check finds a damaged $kind object in the bucket, local copy or not"
    if [[ $kind == snapshots ]]; then
        # verify reads its snapshot from the bucket too (it read the good local copy: valid)
        run cb verify --all
        assert_rc 4 "verify finds the damaged snapshot object in the bucket, local copy or not"
        assert_contains "$OUT$ERR" "$(basename "$obj")" "and names it"
    fi
    cp "$TEST_TMP/obj.saved" "$f"
    assert_exit 0 cb --quiet check
done

# --- keys, unlock, --repo ----------------------------------------------------------------
newkey="second-key-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CARIS_NEW_ENCRYPTION_KEY=$newkey assert_exit 0 cb key add --label second
run cb --json key list
assert_rc 0 "key list"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d) if isinstance(d, list) else len(d["slots"])')" "two key slots"
BACKUP_ENCRYPTION_KEY=$newkey assert_exit 0 cb list
assert_contains "$OUT" "$id2" "the added key opens the S3 repository"
run cb --json key list
second=$(json_eval "$OUT_FILE" '[k["id"] for k in d if k.get("label") == "second"][0]')
assert_match '^[0-9a-f]{16}$' "$second" "the added slot's id"
assert_exit 0 cb key remove "$second"
assert_eq "" "$(objects | grep "^keys/$second\$")" "key remove deletes the slot object"
BACKUP_ENCRYPTION_KEY=$newkey assert_exit 5 cb list
assert_exit 0 cb unlock
assert_exit 0 env -u BACKUP_REPOSITORY "$CARIS_BIN" --repo "$BACKUP_REPOSITORY" list
assert_contains "$OUT" "$id2" "--repo s3:... works as BACKUP_REPOSITORY does"
assert_eq "" "$(objects | grep '^locks/')" "no lock left behind"

# --- a no-change backup: few requests, one open -------------------------------------------
# Its requests, counted by the server: opening (probe, marker, key slots, config, listings of
# data/ index/ state/ snapshots/, the state record; index files and snapshots come from the
# local cache), the lock (list, put, list), the backup-id claim (HEAD, PUT), the lock check,
# the snapshot, the state record (list, get, list, put, delete), three deletes and the audit
# log's head. 54 before whole objects were read in one GET (no HEAD first), the backup's open
# handle was kept for the audit head (a second open: a dozen requests and a second key
# derivation) and a new lock stopped being read back.
backup_json "$TEST_TMP/same0.json" "$src"
n0=$(s3_requests)
backup_json "$TEST_TMP/same.json" "$src"
assert_rc 3 "a no-change backup to S3"
n1=$(s3_requests)
note "no-change backup: $((n1 - n0)) requests"
assert_cmp $((n1 - n0)) -le 30 "a no-change backup makes at most 30 requests ($((n1 - n0)))"
assert_eq 1 "$(grep -c 'records/audit-head' <(tail -n +$((n0 + 1)) <(grep -E ' [0-9]{3} [0-9.,]+ms' "$S3_LOG")))" \
    "the backup recorded the audit log's head in the repository"
assert_exit 7 cb --repo "s3:$S3_ENDPOINT/bkt/caris/nothing-here" list
assert_contains "$ERR" "no repository at s3:$S3_ENDPOINT/bkt/caris/nothing-here" \
    "an S3 location without a repository: no repository at (exit 7)"

# --- virtual-hosted addressing: the same repository through BUCKET.s3.localhost ---------
vport=${S3_ENDPOINT##*:}
BACKUP_S3_VIRTUAL_HOST=true assert_exit 0 cb --repo "s3:http://bkt.s3.localhost:$vport/caris/repo" list
assert_contains "$OUT" "$id2" "BACKUP_S3_VIRTUAL_HOST=true: the bucket from the host name"
BACKUP_S3_VIRTUAL_HOST=maybe assert_exit 6 cb list
assert_contains "$ERR" "BACKUP_S3_VIRTUAL_HOST" "a typo in BACKUP_S3_VIRTUAL_HOST is an error"

# --- a prefix with characters that need escaping: in the URL, the signature and the listing's XML
# (S3 escapes a key's '&' as "&amp;": a listing's key was decoded twice, so a prefix holding
# "&amp;" or "&lt;" never matched its own objects: init succeeded, then every command said
# the repository had no key slots, exit 4). Pages of one key, through continuation tokens.
psrc=$TEST_TMP/psrc
make_tree "$psrc" --no-special || fail "make_tree failed"
for pfx in 'R&amp;D+x=y' "$(printf 'caf\xc3\xa9/a&lt;b')"; do
    loc="s3:$S3_ENDPOINT/bkt/$pfx"
    assert_exit 0 cb --repo "$loc" init
    run env BACKUP_S3_LIST_PAGE=1 "$CARIS_BIN" --repo "$loc" --json backup files "$psrc"
    assert_rc 0 "backup under the prefix '${loc##*/bkt/}'"
    pid=$(json_get "$OUT_FILE" '["id"]')
    BACKUP_S3_LIST_PAGE=1 assert_exit 0 cb --repo "$loc" list
    assert_contains "$OUT" "$pid" "... listed"
    BACKUP_S3_LIST_PAGE=1 assert_exit 0 cb --repo "$loc" check
    assert_contains "$OUT" "no errors found" "... and checked"
done

# --- errors: at once, clear, no retry storm ----------------------------------------------
# (s3rver knows one access key and does not check V4 signatures themselves: a wrong key id
# is the wrong credential it refuses. The signatures are checked against AWS's published
# examples in tests/unit/test_sigv4.c.)
n0=$(s3_requests)
AWS_ACCESS_KEY_ID=AKIANOBODY AWS_SECRET_ACCESS_KEY=wrong-secret assert_exit 6 cb list
assert_contains "$ERR" "access denied" "wrong credentials: access denied"
assert_contains "$ERR" "InvalidAccessKeyId" "S3's error code is shown"
assert_contains "$ERR" "AWS_SECRET_ACCESS_KEY" "the hint names the variables"
assert_not_contains "$ERR" "wrong-secret" "the secret is not printed"
n1=$(s3_requests)
assert_cmp $((n1 - n0)) -le 2 "wrong credentials: no retries"

n0=$(s3_requests)
assert_exit 7 cb --repo "s3:$S3_ENDPOINT/no-such-bucket/x" list
assert_contains "$ERR" "no bucket no-such-bucket" "missing bucket named"
n1=$(s3_requests)
assert_cmp $((n1 - n0)) -le 2 "missing bucket: no retries"

assert_exit 6 env -u AWS_ACCESS_KEY_ID "$CARIS_BIN" list
assert_contains "$ERR" "no S3 credentials" "missing credentials said"

# a BACKUP_S3_RETRY_SECONDS that is not a number was read as 0 (every retry off, without a word)
for bad in abc 60s; do
    BACKUP_S3_RETRY_SECONDS=$bad assert_exit 6 cb list
    assert_contains "$ERR" "BACKUP_S3_RETRY_SECONDS is invalid: '$bad'" "BACKUP_S3_RETRY_SECONDS=$bad is refused"
done

assert_exit 2 cb --repo "s3:ftp://127.0.0.1/bkt" list
assert_contains "$ERR" "invalid S3 repository location" "a bad location"
assert_exit 2 cb --repo "s3:http://user:pw@127.0.0.1/bkt" list
assert_contains "$ERR" "credentials do not belong in the location" "credentials in the URL are refused"
# a port out of range: refused as a location (it was an I/O error at the first request, exit 8)
assert_exit 2 cb --repo "s3:http://127.0.0.1:99999/bkt" list
assert_contains "$ERR" "the port is not a number from 1 to 65535" "a port out of range is refused"
# the same location from BACKUP_REPOSITORY: the configuration's fault, exit 6 (was 2)
BACKUP_REPOSITORY="s3:ftp://127.0.0.1/bkt" assert_exit 6 "$CARIS_BIN" list
assert_contains "$ERR" "BACKUP_REPOSITORY: invalid S3 repository location" "... and names the variable"

# Plain http: a warning, except on loopback.
assert_not_contains "$(cat "$ALL_OUTPUT")" "plain http" "no warning for http on loopback"
BACKUP_S3_RETRY_SECONDS=0 assert_exit 8 cb --repo "s3:http://caris-test.invalid/bkt" list
assert_contains "$ERR" "reached over plain http" "a warning for http elsewhere"

# No server at all: retries within BACKUP_S3_RETRY_SECONDS, then an I/O error.
dead=$(_s3_free_port)
t0=$SECONDS
BACKUP_S3_RETRY_SECONDS=1 assert_exit 8 cb --repo "s3:http://127.0.0.1:$dead/bkt" list
assert_contains "$ERR" "attempts" "the error says it retried"
assert_cmp $((SECONDS - t0)) -le 10 "bounded retry time"

# --- https: the certificate is verified; BACKUP_S3_CA_FILE trusts a private CA -------------
if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TEST_TMP/tls.key" -out "$TEST_TMP/tls.crt" \
    -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1; then
    tport=$(_s3_free_port)
    mkdir -p "$TEST_TMP/s3tls"
    NODE_OPTIONS=--openssl-legacy-provider bg_start s3rver -d "$TEST_TMP/s3tls" -a 127.0.0.1 \
        -p "$tport" --no-vhost-buckets --configure-bucket tb --key "$TEST_TMP/tls.key" \
        --cert "$TEST_TMP/tls.crt"
    if wait_until 30 _s3_ready "$tport"; then
        t0=$SECONDS
        assert_exit 8 cb --repo "s3:https://127.0.0.1:$tport/tb/r" init
        assert_contains "$ERR" "certificate" "an unknown certificate is refused"
        assert_cmp $((SECONDS - t0)) -le 4 "a certificate error is not retried"
        BACKUP_S3_CA_FILE=$TEST_TMP/tls.crt assert_exit 0 cb --repo "s3:https://127.0.0.1:$tport/tb/r" init
        BACKUP_S3_CA_FILE=$TEST_TMP/tls.crt assert_exit 0 cb --repo "s3:https://127.0.0.1:$tport/tb/r" backup files "$src/docs"
    else
        fail "s3rver with TLS did not start" "$(_tail "$BG_ERR")"
    fi
else
    fail "openssl could not make a test certificate"
fi

test_done
