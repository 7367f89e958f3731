#!/usr/bin/env bash
# Retention on real backups made with --time over 14 months (gaps, several a day, both
# changes of daylight-saving time, ISO weeks that span two years), in two file groups and
# one database group at once, in Europe/Berlin. The kept sets were worked out by hand (the
# same timeline as tests/unit/test_retention.c, which explains each one). Then forget for
# real, prune, check --read-data; and the newest backup of each group survives any policy.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

export TZ=Europe/Berlin BACKUP_TZ=Europe/Berlin
assert_exit 0 cb --quiet init

declare -A label_of=() id_of=()
# backup_at LABEL UTC-TIME KIND ROOT: a backup recorded at that time
backup_at() {
    local label=$1 when=$2 kind=$3 root=$4
    if [[ $kind == files ]]; then
        printf '%s\n' "$label" >"$root/label.txt"
        run cb --json backup files --time "$when" "$root"
    else
        psql_db "$CARIS_PG_DB" -c "INSERT INTO visits (label) VALUES ('$label')" >/dev/null
        run cb --json backup database --time "$when"
    fi
    if [[ $RC != 0 ]]; then
        fail "backup $label at $when" "$(_last_ctx)"
        return
    fi
    local id
    id=$(json_get "$OUT_FILE" '["id"]')
    label_of[$id]=$label
    id_of[$label]=$id
}

mkdir -p "$TEST_TMP/A" "$TEST_TMP/B"
while read -r label when; do
    backup_at "$label" "$when" files "$TEST_TMP/A"
done <<'EOF'
a13 2025-10-26T01:30:00Z
a01 2024-11-15T10:00:00Z
a02 2024-12-20T10:00:00Z
a03 2024-12-30T22:30:00Z
a04 2024-12-31T23:30:00Z
a05 2025-01-05T12:00:00Z
a06 2025-01-06T12:00:00Z
a07 2025-02-10T12:00:00Z
a08 2025-03-30T00:30:00Z
a09 2025-03-30T22:30:00Z
a10 2025-05-15T10:00:00Z
a11 2025-08-01T10:00:00Z
a12 2025-10-25T23:30:00Z
a14 2025-11-20T10:00:00Z
a15 2025-12-28T10:00:00Z
a16 2025-12-29T10:00:00Z
a17 2026-01-01T08:00:00Z
a18 2026-01-03T09:00:00Z
a19 2026-01-03T18:00:00Z
a20 2026-01-05T07:00:00Z
a21 2026-01-07T07:00:00Z
a22 2026-01-08T07:00:00Z
a23 2026-01-08T12:00:00Z
a24 2026-01-08T23:30:00Z
a25 2026-01-10T06:00:00Z
EOF
while read -r label when; do
    backup_at "$label" "$when" files "$TEST_TMP/B"
done <<'EOF'
b2 2025-06-01T01:00:00Z
b1 2025-06-01T00:00:00Z
b3 2025-06-02T00:00:00Z
EOF
# local time in BACKUP_TZ: 2025-03-31 00:30 CEST is a09's instant plus one minute
assert_exit 0 cb --json backup files --time "2025-03-31 00:31" "$TEST_TMP/B"
assert_eq file_incremental_2025-03-30T22-31-00 "$(json_get "$OUT_FILE" '["id"]')" \
    "--time in local time (BACKUP_TZ) gives the UTC id"
label_of[$(json_get "$OUT_FILE" '["id"]')]=b0
id_of[b0]=$(json_get "$OUT_FILE" '["id"]')

pg_start
psql_db "$CARIS_PG_DB" -c "CREATE TABLE visits (id serial PRIMARY KEY, label text)" >/dev/null
while read -r label when; do
    backup_at "$label" "$when" database -
done <<'EOF'
d1 2025-06-01T00:00:00Z
d3 2025-09-15T00:00:00Z
d2 2025-06-01T01:00:00Z
EOF

# kept LABELS...: the labels of the backups a forget --json output keeps, sorted
kept_labels() {
    python3 - "$1" <<'PY' | while read -r id; do printf '%s\n' "${label_of[$id]:-?$id}"; done | sort | tr '\n' ' '
import json, sys
d = json.load(open(sys.argv[1]))
for g in d["groups"]:
    for b in g["backups"]:
        if b["keep"]:
            print(b["id"])
PY
}
listed_labels() {
    cb --json list | python3 -c 'import json,sys; [print(b["id"]) for b in json.load(sys.stdin)]' |
        while read -r id; do printf '%s\n' "${label_of[$id]:-?$id}"; done | sort | tr '\n' ' '
}

# group B: daily keeps b3 (Jun 2), b2 (Jun 1) and b0 (Mar 31 in Berlin); the database: d3, d2
want_default="a01 a03 a06 a07 a09 a10 a11 a13 a14 a15 a16 a17 a19 a20 a21 a23 a24 a25 b0 b2 b3 d2 d3 "

fp=$(cd "$REPO" && find . -type f ! -path './locks/*' | sort | md5sum)
run cb --json forget --dry-run
assert_rc 0 "forget --dry-run with the configured policy (7 daily, 4 weekly, 12 monthly)"
cp "$OUT_FILE" "$TEST_TMP/dry.json"
assert_eq 3 "$(json_eval "$TEST_TMP/dry.json" 'len(d["groups"])')" "three groups: two file roots, one database"
assert_eq "$want_default" "$(kept_labels "$TEST_TMP/dry.json")" "default policy: the kept set worked out by hand"
assert_eq '["monthly"]' \
    "$(json_eval "$TEST_TMP/dry.json" '[b["reasons"] for g in d["groups"] for b in g["backups"] if b["id"] == "'"${id_of[a09]}"'"][0]')" \
    "a09 is kept as the newest of March in Berlin (a08 is March 30 there)"
assert_eq "$fp" "$(cd "$REPO" && find . -type f ! -path './locks/*' | sort | md5sum)" "dry run changed nothing"
run cb forget --dry-run
assert_contains "$OUT" "forget" "the text dry run names what would go"
assert_contains "$OUT" "daily, weekly, monthly, newest" "the text dry run says which rules keep a backup"
assert_contains "$OUT" "no rule keeps it" "... and that none keeps the others"

run cb --json forget --dry-run --keep-monthly 6 --keep-yearly 3 --type files
assert_eq "a03 a10 a11 a13 a14 a16 a25 b0 b3 " "$(kept_labels "$OUT_FILE")" \
    "monthly 6, yearly 3, files only (B: June b3, March b0)"

run cb --json forget --dry-run --keep-daily 3 --type files
assert_eq "a23 a24 a25 b0 b2 b3 " "$(kept_labels "$OUT_FILE")" "daily 3 in Berlin (a24 is Jan 9 there)"
BACKUP_TZ=UTC run cb --json forget --dry-run --keep-daily 3 --type files
assert_eq "a21 a24 a25 b0 b2 b3 " "$(kept_labels "$OUT_FILE")" "daily 3 in UTC (a24 is Jan 8 there)"
BACKUP_TZ=UTC run cb --json forget --dry-run --keep-weekly 100 --type files
assert_eq "a01 a02 a05 a06 a07 a09 a10 a11 a13 a14 a15 a19 a25 b0 b2 b3 " "$(kept_labels "$OUT_FILE")" \
    "every ISO week in UTC: 2024-12-30 and -31 are 2025-W01 with 2025-01-05"

# --- for real ------------------------------------------------------------------------------
assert_exit 0 cb --quiet forget
assert_eq "$want_default" "$(listed_labels)" "forget removed exactly the others"
assert_exit 0 cb --quiet prune
assert_exit 0 cb --quiet check --read-data
assert_exit 0 cb --quiet verify "${id_of[a25]}"
assert_exit 0 cb --quiet verify "${id_of[a01]}"
assert_exit 0 cb --quiet verify "${id_of[d2]}"
# the database backup restores: its row count is the one recorded
assert_exit 0 cb --quiet test-restore "${id_of[d3]}"

# --- a verification record that cannot be read --------------------------------------------
# It may have said a backup is damaged: the policy counted that backup as whole, kept it and
# forgot the older ones that are; list showed it ok, without a word. Now every command warns,
# and retention by policy refuses until the record is gone.
rec=$(find "$BACKUP_DIR/repository/records/verify" -type f ! -name '.*' | head -n 1)
assert_ne "" "$rec" "the verifications left records"
flip_byte "$rec" 40
run cb list
assert_rc 0 "list with a verification record that cannot be read"
assert_contains "$ERR" "a verification record cannot be read" "list warns"
before=$(listed_labels)
run cb forget --keep-last 1
assert_rc 4 "retention by policy: refused (exit 4)"
assert_contains "$ERR" "record(s) cannot be read, and may have said a backup is damaged" "it says why"
assert_eq "$before" "$(listed_labels)" "nothing was forgotten"
mv "$rec" "$TEST_TMP/"
assert_exit 0 cb --quiet forget --dry-run --keep-last 1

# --- the newest of each group stays whatever the policy says -------------------------------
# a policy with every rule at 0 (by option or by configuration) is refused: nothing forgotten
before=$(listed_labels)
assert_exit 2 cb --json forget --keep-last 0 --keep-daily 0 --prune
assert_contains "$ERR" "keeps nothing" "an all-zero policy is refused"
BACKUP_RETENTION_DAILY=0 BACKUP_RETENTION_WEEKLY=0 BACKUP_RETENTION_MONTHLY=0 \
    assert_exit 2 cb --quiet forget
BACKUP_RETENTION_DAILY=0 BACKUP_RETENTION_WEEKLY=0 BACKUP_RETENTION_MONTHLY=0 \
    assert_exit 2 cb --quiet forget --dry-run
assert_eq "$before" "$(listed_labels)" "a refused policy forgot nothing"
assert_exit 0 cb --json forget --keep-last 1 --prune
assert_eq "a25 b3 d3 " "$(listed_labels)" "keep-last 1 keeps each group's newest"
assert_exit 0 cb --quiet check --read-data
t=$TEST_TMP/restore
assert_exit 0 cb --quiet restore files "${id_of[a25]}" --target "$t"
assert_eq a25 "$(cat "$t$TEST_TMP/A/label.txt")" "the newest backup of A restores"

test_done
