#!/usr/bin/env bash
# Command-line conventions (issue 11): global options before or after the command word,
# `--opt=value` (always literal) and `--opt value` (refused when the value starts with `--`:
# `--label --json` is a forgotten value, so `--label=--json`), exact long options (no silent
# abbreviation), one line with
# the closest match for an unknown command or option (exit 2), JSON errors on stdout with
# --json, local times with their offset and short durations in human output.
source "$(dirname "$0")/lib.sh"

REPO=$BACKUP_DIR/repository
mkdir -p "$TEST_TMP/src/sub"
printf 'one\n' >"$TEST_TMP/src/one.txt"
printf 'two\n' >"$TEST_TMP/src/sub/two.txt"

# one_line MESSAGE: the last command printed exactly one line on stderr.
one_line() {
    assert_eq 1 "$(wc -l <"$ERR_FILE")" "$1: one line on stderr"
}

# --- unknown commands and options: one line, the closest match, exit 2 -------------------
run cb lst
assert_rc 2 "unknown command: exit 2"
one_line "unknown command"
assert_contains "$ERR" "unknown command 'lst': did you mean \`list\`?" "lst: did you mean list"
assert_not_contains "$OUT$ERR" "Commands:" "unknown command: not the whole help"
run cb verfy latest
assert_contains "$ERR" "did you mean \`verify\`?" "verfy: did you mean verify (a deletion)"
run cb lsit
assert_contains "$ERR" "did you mean \`list\`?" "lsit: did you mean list (a transposition)"
run cb frobnicate
assert_rc 2 "a command like none: exit 2"
one_line "a command like none"
assert_not_contains "$ERR" "did you mean" "a command like none: no suggestion"

run cb --jsn list
assert_rc 2 "--jsn before the command: exit 2"
one_line "--jsn before the command"
assert_contains "$ERR" "did you mean \`--json\`?" "--jsn: did you mean --json"
run cb list --jsn
assert_rc 2 "--jsn after the command: exit 2"
one_line "--jsn after the command"
assert_contains "$ERR" "did you mean \`--json\`?" "list --jsn: did you mean --json"
run cb list --typ files
assert_rc 2 "list --typ: exit 2"
assert_contains "$ERR" "did you mean \`--type\`?" "list --typ: did you mean --type"

# --- no repository yet: errors as JSON on stdout too ------------------------------------
run cb --json list
assert_rc 7 "list before init: exit 7"
assert_json "$OUT_FILE" "--json error: stdout is JSON"
assert_eq "not_found 7" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "--json error: code and exitCode"
assert_contains "$(json_get "$OUT_FILE" '["error"]["message"]')" "no repository at $REPO" \
    "--json error: the message"
assert_contains "$(json_get "$OUT_FILE" '["error"]["hint"]')" "init" "--json error: the hint"
assert_contains "$ERR" "error: no repository at $REPO" "--json error: stderr keeps the human text"
run cb list --json
assert_rc 7 "list --json (after the command) before init: exit 7"
assert_eq 7 "$(json_eval "$OUT_FILE" 'd["error"]["exitCode"]')" "--json after the command: JSON error"
run cb lst --json
assert_rc 2 "unknown command with --json: exit 2"
assert_eq "usage 2" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "unknown command with --json: a usage error object"
assert_eq "['code', 'exitCode', 'hint', 'message']" "$(json_eval "$OUT_FILE" 'str(sorted(d["error"]))')" \
    "the error object's keys"
run cb list
assert_eq "" "$OUT" "without --json an error prints nothing on stdout"

init_repo
run cb list
assert_rc 0 "list of an empty repository"
assert_eq "no backups in $REPO" "$OUT" "an empty list says so"
run cb list --type=database
assert_eq "no database backups in $REPO" "$OUT" "an empty list of one kind says so"
run cb list -q
assert_eq "" "$OUT" "list -q of an empty repository: nothing"

# --- exact long options: an abbreviation is refused, nothing happens --------------------
run cb backup files --ful "$TEST_TMP/src"
assert_rc 2 "backup files --ful: exit 2"
one_line "backup files --ful"
assert_contains "$ERR" "unknown option '--ful' for backup files: did you mean \`--full\`?" \
    "backup files --ful: did you mean --full"
run cb --json list
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d)')" "backup files --ful backed up nothing"
for args in "verify --al" "check --read" "forget --keep-l 1 --dry-run" "prune --dry" \
    "list --ty files" "unlock --forc" "schedule next --cro *"; do
    # shellcheck disable=SC2086 # word splitting of $args is the point
    run cb $args
    assert_rc 2 "$args: an abbreviation is refused (exit 2)"
    assert_contains "$ERR" "did you mean" "$args: names the full option"
done
run cb list --json=yes
assert_rc 2 "--json=yes: exit 2"
assert_contains "$ERR" "option '--json' takes no value" "--json=yes: takes no value"
run cb list --type
assert_rc 2 "--type without its value: exit 2"
assert_contains "$ERR" "option '--type' needs a value" "--type: needs a value"
run cb list --threads=0
assert_rc 2 "--threads=0 after the command: checked (exit 2)"

# --- global options after the command word and its subcommand; --opt=value -------------
run cb backup files --json --time=2024-01-15T03:00:00Z --full "$TEST_TMP/src" --threads=2
assert_rc 0 "backup files with global options after it"
assert_json "$OUT_FILE" "--json after the subcommand: JSON"
id1=$(json_get "$OUT_FILE" '["id"]')
assert_eq "2024-01-15T03:00:00" "$(json_get "$OUT_FILE" '["started"]' | cut -c1-19)" "--time=VALUE taken"
run cb backup files "$TEST_TMP/src" -q --lock-wait=5s
assert_rc 0 "backup files -q --lock-wait=5s after the paths"
assert_eq "" "$OUT" "-q after the paths: quiet"
run cb list --json --type=files
assert_rc 0 "list --json --type=files"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d)')" "list --json --type=files: both backups"
run cb list --type files --repo="$REPO" --json
assert_rc 0 "list --repo=PATH after the command"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d)')" "--repo=PATH after the command: same repository"
run cb list --repo "$TEST_TMP/typo" --json
assert_rc 7 "list --repo TYPO (after the command): exit 7"
assert_false "a typo'd --repo after the command created nothing" test -e "$TEST_TMP/typo"
run cb verify "$id1" --json
assert_rc 0 "verify ID --json"
assert_eq "$id1" "$(json_get "$OUT_FILE" '[0]["backupId"]')" "verify ID --json: a list of one, the backup"
run cb restore files "$id1" --target="$TEST_TMP/out" --json
assert_rc 0 "restore files --target=DIR --json"
assert_true "--target=DIR restored" cmp "$TEST_TMP/src/sub/two.txt" "$TEST_TMP/out$TEST_TMP/src/sub/two.txt"
run cb --json restore files no_such_backup --target "$TEST_TMP/out2"
assert_rc 7 "restore files of a missing backup: exit 7"
assert_eq 7 "$(json_eval "$OUT_FILE" 'd["error"]["exitCode"]')" "restore files: the error as JSON"

# `--` ends the options: what follows is the command's, even if it looks like one.
mkdir -p "$TEST_TMP/dash/--json"
printf 'x\n' >"$TEST_TMP/dash/--json/x"
run bash -c "cd '$TEST_TMP/dash' && '$CARIS_BIN' backup files -q -- --json"
assert_rc 0 "backup files -- --json: a path named --json"
assert_eq "" "$OUT" "backup files -q -- --json: --json was a path, not the option"

# --- a value that looks like an option: --opt=VALUE is literal; --opt --x is refused -----
run_stdin "conv-second-key-0123456789abcdef0123" "$CARIS_BIN" key add --label=--json
assert_rc 0 "key add --label=--json: a label that starts with --"
assert_match "^added key slot [0-9a-f]+$" "$OUT" "key add --label=--json: --json was the label, not the option (human output)"
run cb --json key list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len([k for k in d if k["label"] == "--json"])')" \
    "key list: the slot labelled '--json'"
for args in "key add --label --json" "key add --label --quiet" "key add --label --no-such" \
    "list --type --json" "list --repo --json" "backup files --exclude --json $TEST_TMP/src"; do
    opt=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^--/) { print $i; exit } }' <<<"$args")
    val=$(awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^--/ && ++n == 2) { print $i; exit } }' <<<"$args")
    # shellcheck disable=SC2086 # word splitting of $args is the point
    run cb $args
    assert_rc 2 "$args: refused (exit 2)"
    assert_contains "$ERR" "option '$opt' needs a value: '$val' after it is an option (to give a value that starts with '--', write $opt=$val)" \
        "$args: says the value is missing and how to give one starting with --"
done
assert_eq 2 "$(cb --json key list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" \
    "the refused key add commands added no key slot"

# --- human output: local time with offset (BACKUP_TZ), to the second; durations ---------
run env BACKUP_TZ=Europe/Berlin "$CARIS_BIN" list
assert_rc 0 "list in Europe/Berlin"
assert_match "$id1 +files/full +2024-01-15T04:00:00\\+01:00 " "$OUT" "list: the time in BACKUP_TZ with its offset"
run env BACKUP_TZ=America/New_York "$CARIS_BIN" list
assert_match "2024-01-14T22:00:00-05:00" "$OUT" "list: another zone, another offset"
assert_not_contains "$OUT" "(UTC)" "list: no UTC header"
durs=$(awk 'NR > 1 { print $4 }' "$OUT_FILE")
bad=$(grep -Evx '[0-9]+ms|[0-9]+\.[0-9]s|[0-9]+m[0-9]{2}s|[0-9]+h[0-9]{2}m' <<<"$durs")
assert_eq "" "$bad" "list: durations like 850ms, 1.4s, 2m03s"
assert_ne "" "$durs" "list: durations printed"
run cb backup files "$TEST_TMP/src"
assert_match ", ([0-9]+ms|[0-9]+\\.[0-9]s|[0-9]+m[0-9]{2}s)"$'\n' "$OUT"$'\n' "backup summary: a short duration"
assert_not_contains "$OUT" "0.0 s" "backup summary: no '0.0 s'"
run env BACKUP_TZ=Europe/Berlin "$CARIS_BIN" show "$id1"
assert_contains "$OUT" "2024-01-15T04:00:00+01:00" "show: the same time format"

test_done
