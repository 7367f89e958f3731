#!/usr/bin/env bash
# `schedule next`: the configured schedules (defaults, .env.local, off, BACKUP_TZ, the local
# zone from TZ), --cron/--tz/--from/--count, the --json shape, and every input error with its
# exit code. Expected times are worked out from a calendar (see tests/unit/test_cron.c):
# Berlin moves its clocks forward on 2026-03-29 at 02:00, New York on 2026-03-08.
source "$(dirname "$0")/lib.sh"

unset BACKUP_TZ BACKUP_SCHEDULE_DAILY BACKUP_SCHEDULE_WEEKLY BACKUP_SCHEDULE_MONTHLY
export TZ=Europe/Berlin

# --- help and the subcommands --------------------------------------------------------------
assert_exit 0 cb schedule --help
assert_contains "$OUT" "schedule next [--cron EXPR]" "schedule --help shows the usage"
assert_exit 0 cb schedule next --help
assert_contains "$OUT" "BACKUP_SCHEDULE_DAILY" "schedule next --help names the variables"
assert_exit 2 cb schedule
assert_exit 2 cb schedule later
assert_contains "$ERR" "unknown schedule command 'later'" "an unknown subcommand is named"
assert_exit 0 cb schedule status
assert_contains "$OUT" "daemon: not running" "schedule status without a daemon says so"
assert_exit 0 cb --help
assert_contains "$OUT" "schedule next" "the main help lists schedule next"

# --- the defaults, in the local zone (TZ), with neither key nor repository ----------------
assert_exit 0 env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" --json schedule next --from 2026-03-28T12:00:00Z
assert_json "$OUT_FILE" "schedule next --json is JSON"
assert_eq "" "$ERR" "nothing on stderr"
assert_eq "Europe/Berlin" "$(json_get "$OUT_FILE" '["tz"]')" "the zone is the local one (TZ)"
assert_eq "2026-03-28T13:00:00+01:00" "$(json_get "$OUT_FILE" '["from"]')" "from, in the zone"
assert_eq '["daily", "weekly", "monthly"]' "$(json_eval "$OUT_FILE" '[s["name"] for s in d["schedules"]]')" \
    "three schedules, in order"
assert_eq '["BACKUP_SCHEDULE_DAILY", "incremental", "0 3 * * *", true]' \
    "$(json_eval "$OUT_FILE" '[d["schedules"][0][k] for k in ("variable", "type", "cron", "enabled")]')" \
    "daily: variable, type, default expression"
assert_eq '["0 2 * * 0", "full"]' "$(json_eval "$OUT_FILE" '[d["schedules"][1][k] for k in ("cron", "type")]')" \
    "weekly default"
assert_eq '["0 1 1 * *", "full"]' "$(json_eval "$OUT_FILE" '[d["schedules"][2][k] for k in ("cron", "type")]')" \
    "monthly default"
assert_eq '["2026-03-29T03:00:00+02:00"]' "$(json_get "$OUT_FILE" '["schedules"][0]["next"]')" \
    "daily 03:00 on the day the clocks go forward (03:00 exists: CEST)"
# 02:00 on Sunday 29 March does not exist: it runs right after the gap
assert_eq '["2026-03-29T03:00:00+02:00"]' "$(json_get "$OUT_FILE" '["schedules"][1]["next"]')" \
    "weekly 02:00 Sunday falls in the gap: 03:00 CEST"
assert_eq '["2026-04-01T01:00:00+02:00"]' "$(json_get "$OUT_FILE" '["schedules"][2]["next"]')" \
    "monthly on the 1st at 01:00"
assert_eq '{"daily": "2026-03-29T03:00:00+02:00", "monthly": "2026-04-01T01:00:00+02:00", "weekly": "2026-03-29T03:00:00+02:00"}' \
    "$(json_eval "$OUT_FILE" 'd["nextRuns"]')" "nextRuns, as the seed's getStatus()"

assert_exit 0 cb schedule next --from 2026-03-28T12:00:00Z --count 2
assert_eq "daily    0 3 * * *        incremental  2026-03-29T03:00:00+02:00
                                       2026-03-30T03:00:00+02:00
weekly   0 2 * * 0        full         2026-03-29T03:00:00+02:00
                                       2026-04-05T02:00:00+02:00
monthly  0 1 1 * *        full         2026-04-01T01:00:00+02:00
                                       2026-05-01T01:00:00+02:00
(time zone Europe/Berlin)" "$OUT" "the text table"

# --- configured: .env.local, off, BACKUP_TZ (wins over TZ) --------------------------------
cat >.env.local <<'EOF'
BACKUP_SCHEDULE_DAILY="*/30 * * * *"
BACKUP_SCHEDULE_MONTHLY=off
BACKUP_TZ=America/New_York
EOF
assert_exit 0 cb schedule next --json --from 2026-03-08T06:40:00Z --count 3
assert_eq "America/New_York" "$(json_get "$OUT_FILE" '["tz"]')" "BACKUP_TZ wins over TZ"
# 01:40 EST; 02:00 and 02:30 do not exist: one run at 03:00 EDT
assert_eq '["2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00", "2026-03-08T04:00:00-04:00"]' \
    "$(json_get "$OUT_FILE" '["schedules"][0]["next"]')" "daily from .env.local, over the gap"
assert_eq '["off", false, []]' "$(json_eval "$OUT_FILE" '[d["schedules"][2][k] for k in ("cron", "enabled", "next")]')" \
    "monthly off"
assert_eq "null" "$(json_eval "$OUT_FILE" 'd["nextRuns"]["monthly"]')" "an off schedule has no next run"
assert_exit 0 cb schedule next --from 2026-03-08T06:40:00Z
assert_contains "$OUT" "monthly  off" "text: monthly off"
assert_exit 0 cb schedule next --tz Asia/Tokyo --json --from 2026-03-08T06:40:00Z
assert_eq "Asia/Tokyo" "$(json_get "$OUT_FILE" '["tz"]')" "--tz wins over BACKUP_TZ"
BACKUP_SCHEDULE_MONTHLY="0 0 1 1 *" assert_exit 0 cb schedule next --json --from 2026-03-08T06:40:00Z
assert_eq '["2027-01-01T00:00:00-05:00"]' "$(json_get "$OUT_FILE" '["schedules"][2]["next"]')" \
    "the environment wins over .env.local"
rm .env.local

# --- --cron --------------------------------------------------------------------------------
assert_exit 0 cb schedule next --cron '30 2 * * *' --tz America/New_York --from 2026-03-07T12:00:00Z
# (12:00 UTC is 07:00 EST: 02:30 on the 7th has passed)
assert_eq "2026-03-08T03:00:00-04:00
2026-03-09T02:30:00-04:00
2026-03-10T02:30:00-04:00
2026-03-11T02:30:00-04:00
2026-03-12T02:30:00-04:00" "$OUT" "--cron: five times by default, one per line"
assert_exit 0 cb --json schedule next --cron '@weekly' --tz UTC --from 2026-06-01T10:00:00Z --count 2
assert_eq '{"cron": "@weekly", "from": "2026-06-01T10:00:00+00:00", "next": ["2026-06-07T00:00:00+00:00", "2026-06-14T00:00:00+00:00"], "tz": "UTC"}' \
    "$(json_eval "$OUT_FILE" 'd')" "--cron --json: the whole document"
# a local --from is read in the zone
assert_exit 0 cb --json schedule next --cron '0 * * * *' --tz Europe/Berlin --from '2026-10-25 01:30' --count 3
assert_eq "2026-10-25T01:30:00+02:00" "$(json_get "$OUT_FILE" '["from"]')" "--from without offset: zone time"
assert_eq '["2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]' \
    "$(json_get "$OUT_FILE" '["next"]')" "hourly over the change back: 02:00 once"
assert_exit 0 cb schedule next --cron '0 0 29 2 *' --tz UTC --from 2025-01-01T00:00:00Z --count 1
assert_eq "2028-02-29T00:00:00+00:00" "$OUT" "the next 29 February"
# without --from: after now, in order
assert_exit 0 cb --json schedule next --cron '* * * * *' --tz UTC --count 3
now=$(date -u +%s)
assert_eq "true" "$(json_eval "$OUT_FILE" "(lambda t: t == sorted(t) and len(set(t)) == 3)(d['next'])")" \
    "three distinct times in order"
first=$(date -u -d "$(json_get "$OUT_FILE" '["next"][0]')" +%s)
assert_cmp "$first" -le "$((now + 60))" "the first run is within the next minute"
assert_cmp "$first" -ge "$((now - 60))" "the first run is not in the past"

# --- errors --------------------------------------------------------------------------------
assert_exit 2 cb schedule next --cron '0 25 * * *'
assert_contains "$ERR" "error: cron expression '0 25 * * *': field 2 (hour): 25 is out of range 0-23" \
    "the error points at the field"
assert_contains "$ERR" "HINT: five fields" "with a hint"
assert_eq "" "$OUT" "nothing on stdout on error"
assert_exit 2 cb schedule next --cron '0 0 31 2 *'
assert_contains "$ERR" "never matches" "an expression that never matches"
assert_exit 2 cb schedule next --cron '* * * *'
assert_contains "$ERR" "4 fields, 5 needed" "a missing field"
assert_exit 2 cb schedule next --cron 'off'
assert_contains "$ERR" "'off' turns a configured schedule off" "--cron off"
assert_exit 2 cb schedule next --cron '@daily' --tz Mars/Olympus
assert_contains "$ERR" "--tz: unknown time zone 'Mars/Olympus'" "an unknown --tz"
assert_exit 2 cb schedule next --tz ../../etc/passwd
assert_contains "$ERR" "unknown time zone" "a path is not a zone name"
assert_exit 2 cb schedule next --tz /etc/passwd
assert_contains "$ERR" "is not a valid zone file" "a file that is not a zone"
assert_exit 0 cb schedule next --tz /usr/share/zoneinfo/Asia/Tokyo --cron @daily --count 1 --from 2026-01-01T00:00:00Z
assert_eq "2026-01-02T00:00:00+09:00" "$OUT" "a zone file given by its path"
assert_exit 2 cb schedule next --count 0
assert_exit 2 cb schedule next --count 1001
assert_exit 2 cb schedule next --count 3x
assert_contains "$ERR" "--count takes a number from 1 to 1000" "a bad --count"
assert_exit 2 cb schedule next --from yesterday
assert_contains "$ERR" "invalid time 'yesterday'" "a bad --from"
assert_exit 2 cb schedule next --from 2026-02-30T00:00:00Z
assert_exit 2 cb schedule next --cron @daily --from 3000-01-01T00:00:00Z
assert_contains "$ERR" "after 2261" "a --from beyond the nanosecond clock is refused"
assert_exit 2 cb schedule next extra
assert_contains "$ERR" "takes no arguments" "an extra argument"
assert_exit 2 cb schedule next --every-day
BACKUP_SCHEDULE_WEEKLY='0 2 * * 8' assert_exit 6 cb schedule next
assert_contains "$ERR" "BACKUP_SCHEDULE_WEEKLY: cron expression '0 2 * * 8': field 5 (day-of-week): 8 is out of range 0-7" \
    "a bad configured schedule names the variable (exit 6)"
BACKUP_TZ=Europe/Atlantis assert_exit 6 cb schedule next
assert_contains "$ERR" "BACKUP_TZ: unknown time zone 'Europe/Atlantis'" "a bad BACKUP_TZ (exit 6)"
# --cron does not read the configured schedules: a bad one does not stop it
BACKUP_SCHEDULE_DAILY='bad' assert_exit 0 cb schedule next --cron '@hourly' --count 1
TZ=Nowhere/Zone assert_exit 6 cb schedule next
assert_contains "$ERR" "environment variable TZ: unknown time zone 'Nowhere/Zone'" "a bad TZ is reported"

test_done
