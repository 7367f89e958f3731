#!/usr/bin/env bash
# A daemon started after a long stop runs one catch-up, for the newest missed slot. The slots
# were counted from the last run one at a time, at most 600,000: a schedule of every minute
# stopped for more than 417 days caught up "the run of" a slot a year old, and every restart
# after it caught up again (no slot had passed).
source "$(dirname "$0")/lib.sh"
export BACKUP_TZ=UTC BACKUP_ALERT_AFTER=100w
export BACKUP_SCHEDULE_DAILY='* * * * *' BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
unset POSTGRES_URL
mkdir -p "$TEST_TMP/src"
echo note >"$TEST_TMP/src/note.txt"
export BACKUP_FILES_PATHS=$TEST_TMP/src
assert_exit 0 cb --quiet init
run env CARIS_TEST_CLOCK=2024-06-01T00:00:30Z,2024-06-01T00:01:30Z "$CARIS_BIN" daemon
assert_rc 0 "a daemon in June 2024"
run env CARIS_TEST_CLOCK=2026-11-01T00:00:30Z,2026-11-01T00:00:40Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon again, two and a half years later"
assert_contains "$ERR" "daily run of 2026-11-01T00:00:00.000Z was missed: running it once now" \
    "the catch-up is for the newest missed slot"
run env CARIS_TEST_CLOCK=2026-11-01T00:00:45Z,2026-11-01T00:00:55Z "$CARIS_BIN" daemon
assert_rc 0 "a restart within the same minute"
assert_not_contains "$ERR" "was missed" "no slot passed since: no catch-up"
# a stop of a week: the newest slot, and how many were passed over is not needed to find it
run env CARIS_TEST_CLOCK=2026-11-08T10:20:30Z,2026-11-08T10:20:40Z "$CARIS_BIN" daemon
assert_contains "$ERR" "daily run of 2026-11-08T10:20:00.000Z was missed" "after a week: the newest slot"
test_done
