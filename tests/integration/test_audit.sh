#!/usr/bin/env bash
# The audit log: the command line's operations appended with their actor, arguments (URLs
# redacted), result and duration; the hash chain intact under concurrent appends from many
# processes; an edited line, a deleted line and a truncated tail each detected by
# `audit verify`, which names the first bad line.
source "$(dirname "$0")/lib.sh"

LOG=$BACKUP_DIR/metadata/audit.log
make_tree "$TEST_TMP/src" --no-special
assert_exit 0 cb init
assert_exit 0 cb backup files "$TEST_TMP/src"
assert_exit 0 cb list
assert_exit 0 cb verify latest
assert_exit 2 cb restore database latest --target-url "postgresql://someone:pw-4713-secret@db.example/x" --bogus
assert_exit 0 cb audit verify
assert_contains "$OUT" "intact" "audit verify: intact"
assert_eq 600 "$(stat -c %a "$LOG")" "the audit log is 0600"
run cb --json audit
assert_eq "backup files|list|verify|restore database" \
    "$(json_eval "$OUT_FILE" '"|".join(l["operation"] for l in d if l["operation"] != "init")')" \
    "one line per command, in order"
assert_eq "ok ok ok failed (exit 2)" \
    "$(json_eval "$OUT_FILE" '" ".join(l["result"] for l in d if l["operation"] != "init")')" "each with its result"
assert_eq "cli:$(id -un)" "$(json_eval "$OUT_FILE" 'd[-1]["actor"]')" "the actor is the user"
assert_contains "$(json_eval "$OUT_FILE" 'd[-1]["error"]')" "--bogus" "a failed command's line has its error"
assert_match '^file_full_' "$(json_eval "$OUT_FILE" '[l for l in d if l["operation"] == "backup files"][0]["backupIds"][0]')" \
    "the backup's line names the backup made"
assert_eq "$(json_eval "$OUT_FILE" '[l for l in d if l["operation"] == "backup files"][0]["backupIds"][0]')" \
    "$(json_eval "$OUT_FILE" '[l for l in d if l["operation"] == "verify"][0]["backupIds"][0]')" \
    "the verify's line names the backup verified (latest, resolved)"
assert_eq true "$(json_eval "$OUT_FILE" 'd[-2]["error"] is None')" "a command that succeeded has none"
assert_eq true "$(json_eval "$OUT_FILE" 'all(isinstance(l["durationMs"], int) for l in d)')" "each with its duration"
assert_false "no URL's user, password or host in the log" grep -q -e someone -e secret -e db.example "$LOG"
assert_contains "$(cat "$LOG")" 'postgresql://' "the URL's scheme is kept"
assert_exit 0 cb audit --since 2000-01-01T00:00:00Z
assert_exit 0 cb --json audit --since 2200-01-01T00:00:00Z
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d)')" "--since in the future: no line"
assert_exit 2 cb audit --since yesterday
# --since as --time takes it: an offset, a local time in BACKUP_TZ
assert_exit 0 cb --json audit --since 2000-01-01T01:00:00+01:00
assert_cmp "$(json_eval "$OUT_FILE" 'len(d)')" -ge 4 "--since with an offset"
assert_exit 0 env BACKUP_TZ=Europe/Berlin "$CARIS_BIN" --json audit --since "2000-01-01 01:00"
assert_cmp "$(json_eval "$OUT_FILE" 'len(d)')" -ge 4 "--since in local time"

# concurrent appends from 8 processes keep the chain whole
before=$(wc -l <"$LOG")
pids=()
for _ in 1 2 3 4 5 6 7 8; do
    "$CARIS_BIN" list >/dev/null 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
assert_eq $((before + 8)) "$(wc -l <"$LOG")" "eight concurrent commands: eight lines"
assert_exit 0 cb audit verify

cp "$LOG" "$TEST_TMP/audit.good"
n=$(wc -l <"$LOG")

# an edited line (the second: its result changed)
sed -i '2s/"result":"ok"/"result":"failed"/' "$LOG"
assert_ne "$(cat "$TEST_TMP/audit.good")" "$(cat "$LOG")" "line 2 was edited"
assert_exit 4 cb audit verify
assert_contains "$ERR" "line 2 was changed" "an edited line is named"

# a deleted line
cp "$TEST_TMP/audit.good" "$LOG"
sed -i '3d' "$LOG"
assert_exit 4 cb audit verify
assert_contains "$ERR" "line 3 carries sequence number 4" "a deleted line is found where it was"

# a truncated tail (the last line cut short)
cp "$TEST_TMP/audit.good" "$LOG"
truncate -s -20 "$LOG"
assert_exit 4 cb audit verify
assert_contains "$ERR" "line $n is cut short" "a truncated tail is found"
run cb --json audit verify
assert_eq "False $n" "$(json_eval "$OUT_FILE" '"%s %s" % (d["ok"], d["badLine"])')" "--json names the bad line"
assert_true "its document has the shape docs/JSON.md gives (the error object, not a text)" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "audit verify" "$OUT_FILE"
assert_eq "damage 4" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "... with its code and exit code"

# an append after a torn line keeps the torn line visible to verify, and numbering goes on
# (it restarted at 1: the log could then never verify past the torn line)
# (the log then never verified again: the torn line is held in the chain by the lines after it,
# which number it and carry its hash, so it is reported, not damage)
assert_exit 0 cb list
assert_exit 0 cb audit verify
assert_contains "$ERR" "cut short when written (a crash or a full disk) and the log went on after it: $n" \
    "the torn line stays named after more appends"
run cb --json audit verify
assert_rc 0 "audit verify --json after a torn line"
assert_eq "True [$n]" "$(json_eval "$OUT_FILE" '"%s %s" % (d["ok"], d["tornLines"])')" "--json names the torn line"
# garbage in its place breaks the chain: the next line no longer carries its hash
cp "$LOG" "$TEST_TMP/audit.torn"
sed -i "${n}s/.*/not an audit line/" "$LOG"
assert_exit 4 cb audit verify
assert_contains "$ERR" "line $((n + 1)) does not carry the hash of line $n" "a torn line replaced is found"
cp "$TEST_TMP/audit.torn" "$LOG"
assert_eq $((n + 1)) "$(tail -n 1 "$LOG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')" \
    "the line after the torn one is numbered after it"

cp "$TEST_TMP/audit.good" "$LOG"
assert_exit 0 cb audit verify

# the heads the repository records with each backup: a deleted tail and an edited last line,
# which leave the chain itself whole, are found too
assert_exit 0 cb backup files "$TEST_TMP/src"
m=$(wc -l <"$LOG")
cp "$LOG" "$TEST_TMP/audit.good2"
head -n $((m - 1)) "$TEST_TMP/audit.good2" >"$LOG"
assert_exit 4 cb audit verify
assert_contains "$ERR" "recorded line $m" "a deleted tail is found through the repository's head"
assert_contains "$ERR" "lines at its end were deleted" "and called so"
cp "$TEST_TMP/audit.good2" "$LOG"
sed -i "${m}s/\"result\":\"ok\"/\"result\":\"failed\"/" "$LOG"
assert_ne "$(cat "$TEST_TMP/audit.good2")" "$(cat "$LOG")" "the last line was edited"
assert_exit 4 cb audit verify
assert_contains "$ERR" "line $m is not the one the repository recorded" "an edited last line is found"
: >"$LOG"
assert_exit 4 cb audit verify
assert_contains "$ERR" "lines at its end were deleted" "an emptied log is found"
cp "$TEST_TMP/audit.good2" "$LOG"
assert_exit 0 cb audit verify
assert_contains "$OUT" "2 heads recorded in the repository agree" "the intact log agrees with both heads"
run cb --json audit verify
assert_eq "True True 2" "$(json_eval "$OUT_FILE" '"%s %s %s" % (d["ok"], d["headsChecked"], d["heads"])')" "--json: heads checked"

# a log deleted and begun anew (its first line is another): the repository recorded a log of
# this BACKUP_DIR that began otherwise
mv "$LOG" "$TEST_TMP/audit.moved"
assert_exit 0 cb list
assert_eq 1 "$(wc -l <"$LOG")" "a new log of one line"
assert_exit 4 cb audit verify
assert_contains "$ERR" "the log was replaced or begun anew" "a log begun anew is found through the repository's heads"
mv "$TEST_TMP/audit.moved" "$LOG"
assert_exit 0 cb audit verify

# a restore's line names the backup restored (latest, resolved)
assert_exit 0 cb restore files latest --target "$TEST_TMP/restored"
assert_match '^file_' "$(tail -n 1 "$LOG" | python3 -c 'import json,sys; print((json.load(sys.stdin)["backupIds"] or [""])[0])')" \
    "the restore's line names the backup"
# last_line_deletion_found MESSAGE: with the log's last line deleted, audit verify fails naming
# it (the head recorded with it); the log is put back after
last_line_deletion_found() {
    local m
    m=$(wc -l <"$LOG")
    cp "$LOG" "$TEST_TMP/audit.kept"
    head -n $((m - 1)) "$TEST_TMP/audit.kept" >"$LOG"
    assert_exit 4 cb audit verify
    assert_contains "$ERR" "recorded line $m" "$1"
    cp "$TEST_TMP/audit.kept" "$LOG"
}
# a restore (data taken out) records the head as a backup does: its line, the last, cannot be
# deleted unnoticed (lines since the last backup were covered by the chain only)
last_line_deletion_found "the restore's deleted line is found through the head it recorded"
# so does a dump of a file's contents
assert_exit 0 cb dump latest "$(find "$TEST_TMP/src" -maxdepth 1 -type f | LC_ALL=C sort | head -n 1)"
last_line_deletion_found "a dump's deleted line is found too"
assert_exit 0 cb audit verify

# a head record that cannot be read vouches for nothing: the log is not "intact" (it was, and
# an edit of the lines it covered, chain recomputed, went unseen)
head_rec=$(find "$BACKUP_DIR/repository/records/audit-head" -type f ! -name '.*' | LC_ALL=C sort | tail -n 1)
cp "$head_rec" "$TEST_TMP/head.kept"
flip_byte "$head_rec" 40
run cb audit verify
assert_rc 4 "audit verify with a head record that cannot be read: exit 4"
assert_contains "$ERR" "head records in the repository cannot be read" "it says so"
assert_not_contains "$OUT" "intact" "... and does not call the log intact"
cp "$TEST_TMP/head.kept" "$head_rec"
assert_exit 0 cb audit verify

# a secret typed where key's or token's subcommand goes (or as an argument they do not take):
# neither the error on stderr nor the log's operation, arguments and error keep it
newkey=typed-new-key-4c1f9a0e7b3d5f2a8c6e1b9d
token=cbt_$(printf '%s' "$newkey" | sha256sum | cut -c1-43)
# an abbreviated --label (getopt takes --lab=) with a key in it, where key list takes none
run cb key list --lab="$newkey"
assert_rc 2 "key list --lab=KEY: a usage error"
assert_not_contains "$ERR" "$newkey" "key list --lab=KEY: stderr does not show the key"
for cmdline in "key $BACKUP_ENCRYPTION_KEY" "key $newkey" "key list $newkey" "token $token" \
    "token list $token" "token add --label ops $token"; do
    read -ra words <<<"$cmdline"
    run cb "${words[@]}"
    assert_rc 2 "$cmdline: a usage error"
    assert_contains "$ERR" "not shown: it may be" "$cmdline: the error says why the word is not shown"
    for s in "$BACKUP_ENCRYPTION_KEY" "$newkey" "${token#cbt_}"; do
        assert_not_contains "$ERR" "$s" "$cmdline: stderr does not show the secret"
    done
done
# a connection URL typed as backup database's operand: quoted by its scheme alone
run cb backup database "postgresql://someone:pw-5821-secret@db.example/x"
assert_rc 2 "backup database URL: a usage error"
assert_contains "$ERR" "'postgresql://…'" "the operand is quoted by its scheme"
assert_not_contains "$ERR" "pw-5821-secret" "... without its password"
assert_false "nor is the password in the audit log" grep -qF pw-5821-secret "$LOG"
assert_exit 0 cb audit
audit_out=$OUT
run cb --json audit
assert_eq "key (unknown subcommand)|key (unknown subcommand)|key list|token (unknown subcommand)|token list|token add" \
    "$(json_eval "$OUT_FILE" '"|".join(l["operation"] for l in d[-7:-1])')" \
    "an unknown subcommand is not the operation's second word"
for s in "$BACKUP_ENCRYPTION_KEY" "$newkey" "${token#cbt_}"; do
    assert_false "the audit log does not keep a secret typed for key or token" grep -qF -e "$s" "$LOG"
    assert_not_contains "$audit_out" "$s" "audit does not show it"
    assert_not_contains "$(cat "$OUT_FILE")" "$s" "audit --json does not show it"
done
assert_exit 0 cb audit verify

test_done
