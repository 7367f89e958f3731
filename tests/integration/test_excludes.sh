#!/usr/bin/env bash
# backup files --exclude: a name, a path below the root, a trailing '/' (once ignored by the
# match: nothing was excluded), an absolute pattern under a root (the same); an absolute
# pattern outside every root or naming a root itself is refused before anything is written.
# Backup roots inside one another are refused (their files were backed up twice, and the
# backup could not be restored).
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
mkdir -p "$src/excl/cache" "$src/keep/cache" "$src/other"
echo c >"$src/excl/cache/c"
echo k >"$src/keep/cache/k"
echo o >"$src/other/o"
init_repo
# paths_of: the backup's paths below the root, sorted, on one line
paths_of() { cb ls latest --recursive | sed "s|^$src/||;s|^$src\$||" | grep -v '^$' | LC_ALL=C sort | tr '\n' ' '; }
count() { cb --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

for pat in cache 'cache/'; do
    assert_exit 0 cb --quiet backup files --full --exclude "$pat" "$src"
    assert_eq "excl keep other other/o " "$(paths_of)" "--exclude '$pat' leaves out every cache"
done
for pat in excl/cache 'excl/cache/' "$src/excl/cache" "$src/excl/cache/" "$src/excl/*"; do
    assert_exit 0 cb --quiet backup files --full --exclude "$pat" "$src"
    assert_eq "excl keep keep/cache keep/cache/k other other/o " "$(paths_of)" \
        "--exclude '${pat#"$TEST_TMP"/}' leaves out excl/cache only"
done
# an absolute pattern is anchored at its root: /ROOT/tmp is that tmp, not every tmp below it
# (made relative, it once became a bare name and matched at any depth)
src2=$TEST_TMP/src2
mkdir -p "$src2/tmp" "$src2/app/tmp"
echo t >"$src2/tmp/t"
echo a >"$src2/app/tmp/a"
assert_exit 0 cb --quiet backup files --full --exclude "$src2/tmp" "$src2"
assert_eq "$(printf '%s\n' "$src2" "$src2/app" "$src2/app/tmp" "$src2/app/tmp/a")" \
    "$(cb ls latest --recursive | LC_ALL=C sort)" "--exclude ROOT/tmp leaves out that tmp only"
n=$(count)
run cb backup files --full --exclude /elsewhere/cache "$src"
assert_rc 2 "an absolute --exclude outside every root is refused"
assert_contains "$ERR" "outside every backup root" "the error says why"
# a pattern no normalised path can match (a ".." or "." component, "//", or empty) left out
# nothing, exit 0, while the operator thought the directory excluded
for pat in "$src/../$(basename "$src")/tmp" "$src/./tmp" "$src//tmp" "app/../tmp" ""; do
    run cb backup files --full --exclude "$pat" "$src"
    assert_rc 2 "--exclude '$pat', which would match nothing, is refused"
    assert_contains "$ERR" "would match nothing" "... saying why"
done
# the same in an exclude file: refused, naming the file and the line
printf '# caches\n\n%s\n%s\n' "$src2/app/tmp/" "$src2/./tmp" >"$TEST_TMP/excl-bad"
run cb backup files --full --exclude-file "$TEST_TMP/excl-bad" "$src2"
assert_rc 2 "an exclude file with a pattern that would match nothing is refused"
assert_contains "$ERR" "excl-bad, line 4: '$src2/./tmp' would match nothing" \
    "... naming the file, the line and the pattern"
run cb backup files --full --exclude "$src/" "$src"
assert_rc 2 "an --exclude of the root itself is refused"
assert_contains "$ERR" "the backup root itself" "the error says why"
run cb backup files --full "$src" "$src/keep"
assert_rc 2 "a root inside another is refused"
assert_contains "$ERR" "is inside backup root" "the error names both roots"
BACKUP_FILES_PATHS=$src:$src/other run cb backup files
assert_rc 2 "BACKUP_FILES_PATHS with a root inside another is refused"
assert_eq "$n" "$(count)" "the refused backups wrote no snapshot"
# an exclude file's patterns apply as --exclude's do (comments and blank lines skipped)
printf '# caches\n\n%s\n' "$src2/app/tmp/" >"$TEST_TMP/excl-good"
assert_exit 0 cb --quiet backup files --full --exclude-file "$TEST_TMP/excl-good" "$src2"
assert_eq "$(printf '%s\n' "$src2" "$src2/app" "$src2/tmp" "$src2/tmp/t")" \
    "$(cb ls latest --recursive | LC_ALL=C sort)" "--exclude-file leaves out what it lists"
# two roots side by side are fine, and an absolute pattern applies to its own root only
assert_exit 0 cb --quiet backup files --full --exclude "$src/keep/cache" "$src/keep" "$src/excl"
assert_eq "$(printf '%s\n' "$src/excl" "$src/excl/cache" "$src/excl/cache/c" "$src/keep")" \
    "$(cb ls latest --recursive | LC_ALL=C sort)" "an absolute pattern excludes below its own root only"

# a pattern of '*' only leaves out everything below every root: a backup of nothing, never what
# was meant (it used to complete with exit 0, and count as a backup for retention). Refused.
n=$(count)
for pat in '*' '**' '?*' "$src/keep/*"; do
    run cb backup files --full --exclude "$pat" "$src/keep" "$src/excl"
    assert_rc 2 "--exclude '$pat' is refused"
    assert_contains "$ERR" "would exclude everything below the backup root" "... saying why"
done
assert_eq "$n" "$(count)" "the refused backups wrote no snapshot"
# '??*' leaves names of one character: not every name, so not refused
assert_exit 0 cb --quiet backup files --full --exclude '??*' "$src/keep"

test_done
