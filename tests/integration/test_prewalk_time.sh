#!/usr/bin/env bash
# `backup files` starts reading the first path before it opens the repository (the key
# derivation), and its "started" is then when that reading began. Its "finished" must still be
# when it finished: started + durationMs covers the opening of the repository as well. The key
# derivation is made slow here (256 MiB, 8 passes) so that the difference shows; a summary
# whose "finished" came before the repository was even open said the backup ended before files
# it may hold were changed (before the fix: 0.017 s from started to finished).
#
# The bound, without timing anything: 8 passes over 256 MiB write and read 4 GiB of memory,
# which takes more than 0.1 s on any machine (over 40 GB/s otherwise, one core); the backup of
# one small file adds to that.
source "$(dirname "$0")/lib.sh"

assert_exit 0 cb --quiet init --kdf-memory 256 --kdf-ops 8
src=$TEST_TMP/src
mkdir -p "$src/a/b"
printf 'one\n' >"$src/a/b/f"

t0=$(date +%s.%N)
run cb --json backup files "$src"
t1=$(date +%s.%N)
assert_rc 0 "backup"
cp "$OUT_FILE" "$TEST_TMP/b.json"
# started >= t0, finished <= t1, and finished - started (= durationMs) covers the opening
verdict=$(python3 - "$TEST_TMP/b.json" "$t0" "$t1" <<'EOF'
import datetime, json, sys
d = json.load(open(sys.argv[1]))
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
started, finished = ts(d["started"]), ts(d["finished"])
bad = []
if started < t0 - 0.01:
    bad.append("started %.3f s before the command" % (t0 - started))
if finished > t1 + 0.01:
    bad.append("finished %.3f s after the command" % (finished - t1))
if finished - started < 0.1:
    bad.append("finished - started %.3f s: less than the key derivation alone takes"
               % (finished - started))
if abs(d["durationMs"] / 1000 - (finished - started)) > 0.01:
    bad.append("durationMs %d is not finished - started" % d["durationMs"])
print("; ".join(bad) or "ok")
EOF
)
assert_eq "ok" "$verdict" "started..finished holds the backup, the opening of the repository included"

test_done
