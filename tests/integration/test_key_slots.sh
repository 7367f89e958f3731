#!/usr/bin/env bash
# Hostile key slots and parameters, and the process's own protection (issue 14): init refuses
# Argon2id parameters readers would refuse; a slot planted with huge parameters is refused
# without a derivation and locks nobody out; every field of a slot is bound to its key; the
# slot that opened the repository is remembered outside it; a running caris-backup is not
# dumpable (its /proc files belong to root) and has core dumps off.
source "$(dirname "$0")/lib.sh"

key=$BACKUP_ENCRYPTION_KEY
REPO=$BACKUP_DIR/repository

# --- init checks its options against the readers' bounds ---------------------------------------
assert_exit 2 cb init --kdf-ops 101
assert_contains "$ERR" "--kdf-ops takes 1 to 8" "the message gives the accepted range"
assert_exit 2 cb init --kdf-ops 9
assert_exit 2 cb init --kdf-ops 0
assert_exit 2 cb init --kdf-memory 1025
assert_exit 2 cb init --kdf-memory 64abc
# a zstd level out of 1-19 (0 meant the default, a negative one never compressed, "abc" was 0)
for lvl in 0 -5 20 abc; do
    assert_exit 2 cb init --compression "$lvl"
done
assert_contains "$ERR" "--compression takes a zstd level, 1 to 19" "the message gives the range"
# an operand was ignored and the repository made at $BACKUP_DIR/repository instead
assert_exit 2 cb init "$TEST_TMP/elsewhere"
assert_contains "$ERR" "init takes no operand" "init with an operand: refused, saying why"
assert_false "the operand is not echoed (it may be a key)" grep -qF -- "$TEST_TMP/elsewhere" "$ERR_FILE"
assert_false "nothing made at the operand" test -e "$TEST_TMP/elsewhere"
assert_false "a refused init created nothing" test -e "$REPO/caris-repository"
assert_exit 0 "$CARIS_BIN" --quiet --repo "$TEST_TMP/level19" init --compression 19

# --- BACKUP_KDF_MEMORY / BACKUP_KDF_OPS: init's defaults (run.sh sets 1 MiB, 1 pass) -----------
slot_param() { # DIR FIELD: the field of the one key slot of the repository DIR
    python3 -c 'import glob, json, sys; print(json.load(open(glob.glob(sys.argv[1] + "/keys/*")[0]))[sys.argv[2]])' "$1" "$2"
}
d=$TEST_TMP/kdf
assert_exit 0 env -u BACKUP_KDF_MEMORY -u BACKUP_KDF_OPS "$CARIS_BIN" --quiet --repo "$d/default" init
assert_eq "3 67108864" "$(slot_param "$d/default" ops) $(slot_param "$d/default" mem)" \
    "without the variables init uses the defaults: 3 passes, 64 MiB"
assert_exit 0 env BACKUP_KDF_MEMORY=16 BACKUP_KDF_OPS=2 "$CARIS_BIN" --quiet --repo "$d/env" init
assert_eq "2 16777216" "$(slot_param "$d/env" ops) $(slot_param "$d/env" mem)" \
    "BACKUP_KDF_OPS and BACKUP_KDF_MEMORY set init's parameters"
assert_exit 0 env BACKUP_KDF_MEMORY=16 BACKUP_KDF_OPS=2 "$CARIS_BIN" --quiet --repo "$d/flags" init \
    --kdf-memory 9 --kdf-ops 4
assert_eq "4 9437184" "$(slot_param "$d/flags" ops) $(slot_param "$d/flags" mem)" \
    "--kdf-ops and --kdf-memory win over the variables"
printf 'BACKUP_KDF_OPS=5\n' >"$TEST_TMP/kdf.env"
assert_exit 0 env -u BACKUP_KDF_OPS BACKUP_KDF_MEMORY=16 "$CARIS_BIN" --quiet --repo "$d/env-file" \
    --env-file "$TEST_TMP/kdf.env" init
assert_eq "5 16777216" "$(slot_param "$d/env-file" ops) $(slot_param "$d/env-file" mem)" \
    "BACKUP_KDF_OPS is read from the env file too"
for bad in 0 9 2x -1; do
    assert_exit 6 env BACKUP_KDF_OPS="$bad" "$CARIS_BIN" --repo "$d/bad" init
    assert_contains "$ERR" "BACKUP_KDF_OPS takes 1 to 8 (passes), not '$bad'" "BACKUP_KDF_OPS='$bad' is refused, saying why"
done
assert_exit 6 env BACKUP_KDF_MEMORY=1025 "$CARIS_BIN" --repo "$d/bad" init
assert_contains "$ERR" "BACKUP_KDF_MEMORY takes 1 to 1024 (MiB), not '1025'" "BACKUP_KDF_MEMORY=1025 is refused"
assert_false "a refused init created nothing" test -e "$d/bad"

assert_exit 0 cb init --kdf-ops 8 --kdf-memory 8
assert_exit 0 cb list
slot=$(basename "$(ls "$REPO"/keys/)")
assert_match '^[0-9a-f]{16}$' "$slot" "one key slot"
assert_eq "$(printf '%s\t%s' "$REPO" "$slot")" "$(cat "$BACKUP_DIR/metadata/key-slot" 2>/dev/null)" \
    "the slot that opened the repository is remembered in BACKUP_DIR/metadata/key-slot"
assert_eq 3 "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$REPO/keys/$slot")" \
    "new slots are version 3 (with a checksum)"

# --- a planted slot with huge parameters ------------------------------------------------------
planted=$REPO/keys/0000000000000000 # sorts before ours
python3 - "$planted" <<'PY'
import json, sys
json.dump({"version": 1, "kdf": "argon2id13", "ops": 100, "mem": 4 << 30, "salt": "00" * 16,
           "nonce": "00" * 12, "wrapped": "00" * 80, "created": "2026-11-30T00:00:00.000Z",
           "label": "planted"}, open(sys.argv[1], "w"))
PY
# under a 2 GiB address-space limit: a 4 GiB derivation could not even start (not under
# AddressSanitizer or ThreadSanitizer, which reserve terabytes of address space for their
# shadow memory)
limit=(prlimit --as=$((2 << 30)))
grep -qaE '__(asan|tsan)_init' "$CARIS_BIN" && limit=()
run "${limit[@]}" "$CARIS_BIN" --json list
assert_rc 0 "the repository opens with a planted 100-pass / 4 GiB slot present"
run cb --json key list
assert_rc 0 "key list"
assert_eq "bounds" "$(json_eval "$OUT_FILE" '"bounds" if "bounds" in [k for k in d if k["id"] == "0000000000000000"][0].get("error", "") else "accepted"')" \
    "key list reports the planted slot as beyond the accepted bounds"
cp "$OUT_FILE" "$TEST_TMP/keylist.json"
run python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "key list" "$TEST_TMP/keylist.json"
assert_rc 0 "key list with a slot that cannot be used: the shape docs/JSON.md gives"
# check reports a slot that cannot be used (a second custodian's damaged slot would otherwise
# be found the day the first key is lost)
run cb check
assert_rc 4 "check: a key slot that cannot be used is damage"
assert_contains "$OUT" "keys/0000000000000000" "check names the slot"
assert_contains "$OUT" "key remove 0000000000000000" "and says how to replace it"
rm -f "$planted"
assert_exit 0 cb check

# --- every field is bound ---------------------------------------------------------------------
# A changed field is damage to a version-3 slot (its checksum, exit 4, never "wrong key"), and
# opens nothing in a version-2 slot (no checksum: the associated data binds it, exit 5).
cp "$REPO/keys/$slot" "$TEST_TMP/slot.orig"
for v in 3 2; do
    for field in label created; do
        python3 - "$REPO/keys/$slot" "$field" "$v" <<'PY'
import json, sys
p, f, v = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(p))
d[f] = d[f] + "x" if f == "label" else "2001-01-01T00:00:00.000Z"
if v == 2:
    d["version"] = 2
    del d["check"]
json.dump(d, open(p, "w"))
PY
        assert_exit $((v == 3 ? 4 : 5)) cb list
        cp "$TEST_TMP/slot.orig" "$REPO/keys/$slot"
    done
done
mv "$REPO/keys/$slot" "$REPO/keys/0123456789abcdef"
assert_exit 4 cb list
assert_contains "$ERR" "damaged" "a slot under another name: damaged (its checksum)"
mv "$REPO/keys/0123456789abcdef" "$REPO/keys/$slot"
assert_exit 0 cb list

# --- a new key that could not be given back -----------------------------------------------------
# .env.local drops the blanks around an unquoted value: a key added with a trailing blank (a
# copy and paste) answered "wrong encryption key" from the env file it was written into.
blank="new key of the blank test, long enough 0123456789  "
run_stdin "$blank" cb key add --label blank
assert_rc 6 "key add refuses a new key that ends with a blank"
assert_contains "$ERR" "begins or ends with a blank" "it says why"
assert_exit 6 env CARIS_NEW_ENCRYPTION_KEY="  ${blank% }" "$CARIS_BIN" key add
assert_contains "$ERR" "begins or ends with a blank" "a leading blank too"
assert_exit 6 env CARIS_NEW_ENCRYPTION_KEY="$(printf 'tab\tin the new key, long enough 0123456789')" \
    "$CARIS_BIN" key add
assert_contains "$ERR" "control character" "a tab inside: refused"
assert_false "the key is not in the error" grep -qF -- "long enough 0123456789" "$ERR_FILE"
run_stdin "new key with a hash, long enough 0123456789 #x" cb key add --label hash
assert_rc 6 "key add refuses a key holding ' #' (the env file takes it for a comment)"
# init too: it took them, and made a repository no key written into .env.local opened
for bad in " leading blank key, long enough 0123456789" "$(printf 'tab\tinit key, long enough 0123456789')" \
    "init key with a hash, long enough 0123456789 #x" "'quoted init key, long enough 0123456789"; do
    assert_exit 6 env BACKUP_ENCRYPTION_KEY="$bad" BACKUP_DIR="$TEST_TMP/init-bad" "$CARIS_BIN" init
    assert_contains "$ERR" "BACKUP_ENCRYPTION_KEY" "init refuses such a key, naming it"
done
assert_false "nothing was created" test -e "$TEST_TMP/init-bad/repository/config"
run cb --json key list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "no slot was added"
inner="a new key with \"quotes\", blanks and ünïcödé inside 0123"
run_stdin "$inner" cb key add --label inner
assert_rc 0 "a key with blanks, quotes and UTF-8 inside is added"
printf "BACKUP_ENCRYPTION_KEY='%s'\n" "$inner" >"$TEST_TMP/inner.env"
chmod 600 "$TEST_TMP/inner.env"
assert_exit 0 env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" --env-file "$TEST_TMP/inner.env" list
assert_exit 0 cb key remove "$(python3 -c 'import json,sys; print([k["id"] for k in json.load(open(sys.argv[1])) if k["label"] == "inner"][0])' <(cb --json key list))"

# --- a new key given on the command line by mistake ----------------------------------------------
# `key add KEY` printed "unexpected argument 'KEY'" and the audit log kept the key in its argv
# (and in the error), for good: the log's lines are hash-chained.
argkey="a new key given as an argument by mistake, 0123456789"
assert_exit 2 cb key add --label mistaken "$argkey"
assert_contains "$ERR" "key add takes no argument" "key add with an operand: refused, saying why"
assert_false "the key given as an argument is not printed" grep -qF -- "$argkey" "$ERR_FILE"
assert_false "... nor kept in the audit log" grep -qF -- "$argkey" "$BACKUP_DIR/metadata/audit.log"
run cb audit
assert_contains "$OUT" '"--label","(redacted)","(redacted)"' "the audit log shows --label and the operand redacted"
# the new key, or the key in use, given as the label: refused (a label is stored in clear, in
# the slot and in `key list`), and kept nowhere
slots_before=$(ls "$REPO/keys")
labkey="the new key typed as its own label 0123456789abc"
run_stdin "$labkey" cb key add --label "$labkey"
assert_rc 2 "key add --label NEWKEY is refused"
assert_contains "$ERR" "the key slot's label holds the new key" "it says why"
run_stdin "$labkey" cb key add --label "key: $BACKUP_ENCRYPTION_KEY"
assert_rc 2 "key add --label holding BACKUP_ENCRYPTION_KEY is refused"
assert_contains "$ERR" "holds a secret of the configuration" "it says why"
assert_eq "$slots_before" "$(ls "$REPO/keys")" "no slot was added"
assert_false "the new key is not kept in the audit log" grep -qF -- "$labkey" "$BACKUP_DIR/metadata/audit.log"
assert_false "nor in the repository" grep -rqF -- "$labkey" "$REPO"
assert_false "the key in use is not kept in the audit log" grep -qF -- "$BACKUP_ENCRYPTION_KEY" "$BACKUP_DIR/metadata/audit.log"
assert_exit 2 cb init --compression 3 "$argkey"
assert_false "a key given to init as an operand is not kept in the audit log" \
    grep -qF -- "$argkey" "$BACKUP_DIR/metadata/audit.log"
run cb audit
assert_contains "$OUT" '"--compression","3","(redacted)"' "init's option values shown, the operand redacted"
# `key remove` of the old key itself instead of its slot's id: the same
assert_exit 2 cb key remove "$argkey"
assert_contains "$ERR" "invalid key id" "key remove of a key, not a slot id: refused"
assert_false "the key given to key remove is not printed" grep -qF -- "$argkey" "$ERR_FILE"
assert_false "... nor kept in the audit log" grep -qF -- "$argkey" "$BACKUP_DIR/metadata/audit.log"
assert_exit 7 cb key remove 0123456789abcdef
run cb audit
assert_contains "$OUT" '"argv":["0123456789abcdef"]' "a slot id given to key remove is kept in the audit log"

# The repository's own key given where an argument goes (a backup id, a path): the messages
# that quote the argument, their JSON, and the audit log show "(redacted)" in its place.
for cmd in show verify ls forget "backup files"; do
    # shellcheck disable=SC2086 # the command's words
    run cb --json $cmd "$BACKUP_ENCRYPTION_KEY"
    assert_ne 0 "$RC" "$cmd with the key as its argument fails"
    assert_not_contains "$OUT$ERR" "$BACKUP_ENCRYPTION_KEY" "$cmd: the key is not printed, in JSON either"
done
run cb backup files "/x/$BACKUP_ENCRYPTION_KEY/y"
assert_contains "$ERR" "/x/(redacted)/y" "a path holding the key is quoted with the key redacted"
# errors printed beside a result (a restore's --include), not through the common path
run cb --json restore files latest --target "$TEST_TMP/r-key" --include "$BACKUP_ENCRYPTION_KEY"
assert_rc 7 "restore files --include KEY: no such path"
assert_not_contains "$OUT$ERR" "$BACKUP_ENCRYPTION_KEY" "restore files --include KEY: the key is not printed"
# an argument that merely ends in the key's first bytes is kept as it is in the audit log
run cb ls latest "/nowhere/${BACKUP_ENCRYPTION_KEY:0:12}"
run cb audit
assert_contains "$OUT" "/nowhere/${BACKUP_ENCRYPTION_KEY:0:12}" "an argument ending in the key's first bytes is not redacted"
assert_false "the key given as an argument is not in the audit log" \
    grep -qF -- "$BACKUP_ENCRYPTION_KEY" "$BACKUP_DIR/metadata/audit.log"

# --- two key adds at once at the last free slots ------------------------------------------------
# Each counted the slots, then spent its derivations, then wrote: at 31 slots both went, and
# 33 slots are more than any open reads: no key opened the repository. They take turns now.
slot=$(basename "$(ls "$REPO"/keys/ | head -n 1)")
for i in $(seq 10 39); do cp "$REPO/keys/$slot" "$REPO/keys/00000000000000$i"; done # damaged copies
assert_eq 31 "$(ls "$REPO/keys" | wc -l)" "31 key slots (30 of them damaged copies)"
mkfifo "$TEST_TMP/add-a.fifo" "$TEST_TMP/add-b.fifo"
exec {fd_a}<>"$TEST_TMP/add-a.fifo" {fd_b}<>"$TEST_TMP/add-b.fifo"
cb key add --label "race a" <"$TEST_TMP/add-a.fifo" >"$TEST_TMP/add-a.out" 2>"$TEST_TMP/add-a.err" &
pid_a=$!
cb key add --label "race b" <"$TEST_TMP/add-b.fifo" >"$TEST_TMP/add-b.out" 2>"$TEST_TMP/add-b.err" &
pid_b=$!
_BG_PIDS+=("$pid_a" "$pid_b")
# each opens the repository and waits for its key: give them both at once
printf 'the first racing key of the slot count test, 0123456789\n' >&"$fd_a"
printf 'the second racing key of the slot count test, 0123456789\n' >&"$fd_b"
wait "$pid_a"
rc_a=$?
wait "$pid_b"
rc_b=$?
exec {fd_a}>&- {fd_b}>&-
assert_eq "1" "$(( (rc_a == 0) + (rc_b == 0) ))" "one of two key adds at the 32nd slot went (exits $rc_a, $rc_b)"
assert_match "^(2|9)$" "$(( rc_a == 0 ? rc_b : rc_a ))" "the other was refused: the limit (2) or the other's turn (9)"
assert_eq 32 "$(ls "$REPO/keys" | wc -l)" "32 key slots, the most an open reads"
assert_exit 0 cb list
rm -f "$REPO"/keys/00000000000000[1-3]?
run cb --json key list
for id in $(json_eval "$OUT_FILE" '" ".join(k["id"] for k in d if k.get("label", "").startswith("race"))'); do
    assert_exit 0 cb key remove "$id"
done

# --- a key typed at the prompt is not shown ----------------------------------------------------
# `key add` on a terminal echoed the key as it was typed: on the screen, in the scrollback and
# in any session recording. The echo is off while it is typed, and back on after (also after a
# Ctrl-C at the prompt).
typed="typed key of the terminal test, long enough 0123456789"
run env PTY_KEY="$typed" python3 "$(dirname "$0")/pty_key_add.py" "$CARIS_BIN" key add --label typed
assert_contains "$OUT" "added key slot" "key add reads a key typed at its prompt"
assert_false "the typed key was not shown on the terminal" grep -qF -- "$typed" "$OUT_FILE"
assert_contains "$OUT" "ECHO-ON" "the echo is back on once the key is read"
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$typed" "$CARIS_BIN" list
run env PTY_KEY=unused python3 "$(dirname "$0")/pty_key_add.py" --interrupt "$CARIS_BIN" key add
assert_contains "$OUT" "ECHO-ON" "a Ctrl-C at the prompt leaves the terminal's echo on"
assert_contains "$OUT" "exit -2" "... and ends key add by the signal"
run cb --json key list
assert_exit 0 cb key remove "$(json_eval "$OUT_FILE" '[k["id"] for k in d if k["label"] == "typed"][0]')"

# --- not dumpable, no core dumps: a caris-backup held waiting for `key add` input -------------
if ! command -v setpriv >/dev/null; then
    skip "dumpable check: setpriv not installed (package util-linux)"
elif ! setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
    skip "dumpable check: setpriv cannot switch to uid 65534 here"
else
    # As root every /proc file is root's anyway: run it as nobody, on a repository of its own.
    p=$TEST_TMP/nobody
    mkdir "$p" && chown 65534:65534 "$p"
    as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups env BACKUP_DIR="$p/backup")
    assert_exit 0 "${as_nobody[@]}" "$CARIS_BIN" --quiet init --kdf-ops 1 --kdf-memory 1
    fifo=$TEST_TMP/newkey.fifo
    mkfifo "$fifo" && chmod 666 "$fifo"
    exec {kfd}<>"$fifo"
    "${as_nobody[@]}" "$CARIS_BIN" key add --label second <"$fifo" >"$TEST_TMP/add.out" \
        2>"$TEST_TMP/add.err" {kfd}>&- &
    kpid=$!
    _BG_PIDS+=("$kpid")
    # shellcheck disable=SC2317 # called through wait_until
    protected() { # the process runs caris-backup and its /proc files are root's
        [[ $(cat "/proc/$kpid/comm" 2>/dev/null) == caris-backup && $(stat -c %u "/proc/$kpid/environ") == 0 ]]
    }
    if wait_until 20 protected; then
        pass "caris-backup running as uid 65534 is not dumpable: /proc/$kpid/environ belongs to root"
        assert_false "... and uid 65534 cannot read it" \
            setpriv --reuid=65534 --regid=65534 --clear-groups cat "/proc/$kpid/environ"
        assert_match "Max core file size +0 +0 " "$(grep 'Max core file size' "/proc/$kpid/limits")" \
            "core dumps are off in the running process"
    else
        fail "the /proc files of caris-backup (uid 65534) still belong to its user" \
            "$(ls -ln "/proc/$kpid/environ" 2>&1)"
    fi
    printf '%s\n' "second key of the hygiene test, long enough 0123" >&"$kfd"
    exec {kfd}>&-
    wait "$kpid"
    assert_eq 0 "$?" "key add (as nobody) completes with the key from stdin"
    assert_contains "$(cat "$TEST_TMP/add.out")" "added key slot" "it says so"
fi

assert_false "the key is in no output" grep -qF -- "$key" "$ALL_OUTPUT"
test_done
