#!/usr/bin/env bash
# Hosts that share a repository and back up the same paths are judged apart: one host's
# backups of a day must not take the other's slot (host B's backup an hour after host A's
# made A's only backup of that day "an older backup of a day already kept", and forget
# removed it).
source "$(dirname "$0")/lib.sh"

export BACKUP_TZ=UTC
init_repo
mkdir -p "$TEST_TMP/src"
printf 'host A\n' >"$TEST_TMP/src/who"
run cb --json backup files --time 2026-11-01T10:00:00Z "$TEST_TMP/src"
assert_rc 0 "host A backs up"
A=$(json_get "$OUT_FILE" '["id"]')
printf 'host B\n' >"$TEST_TMP/src/who"
# the same paths from another machine: a UTS namespace with another host name
run unshare --uts sh -c 'hostname caris-other-host && exec "$0" "$@"' \
    "$CARIS_BIN" --json backup files --time 2026-11-01T11:00:00Z "$TEST_TMP/src"
assert_rc 0 "host B backs up the same path"
B=$(json_get "$OUT_FILE" '["id"]')
assert_json "$OUT_FILE" 'd.get("host") == "caris-other-host"' "B's backup records its host"

run cb --json forget --dry-run --keep-daily 1
assert_rc 0 "forget --dry-run"
assert_json "$OUT_FILE" 'len(d["groups"]) == 2' "one group per host"
assert_json "$OUT_FILE" 'd["removed"] == 0 and d["kept"] == 2' "each host keeps its backup"
assert_exit 0 cb --quiet forget --keep-daily 1
ids=$(list_ids)
assert_contains "$ids" "$A" "host A's only backup of the day is kept"
assert_contains "$ids" "$B" "and host B's"
run cb forget --dry-run --keep-daily 1
assert_contains "$OUT" "on caris-other-host:" "the plan names the host of each group"

test_done
