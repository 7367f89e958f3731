#!/usr/bin/env bash
# Two backups of different trees, started at the same moment against one repository:
# both succeed with distinct ids, both are listed, both verify and restore. Without a
# repository both refuse and create nothing (only `init` creates one); two `init` at once.
# Opens (`list`) while backups and prunes run: none fails.
source "$(dirname "$0")/lib.sh"

# Two trees, each with its own data and one file they share (both backups may store the
# shared chunks at the same time).
seeded_bytes 1M concurrent/shared >"$TEST_TMP/shared.bin"
for t in one two; do
    mkdir -p "$TEST_TMP/$t/dir"
    seeded_bytes 3M "concurrent/unique-$t" >"$TEST_TMP/$t/unique.bin"
    seq 1 5000 | sed "s/^/$t /" >"$TEST_TMP/$t/dir/lines.txt"
    cp "$TEST_TMP/shared.bin" "$TEST_TMP/$t/shared.bin"
done

# Start gate: both processes block reading a line from a FIFO until the test writes two
# lines at once, so they start together (no sleep, no head start for the first one). The
# test holds the FIFO open read-write, so opening it never blocks and no line is lost.
gate=$TEST_TMP/gate
declare -A pid rc out err id

start_together() { # [init]: start two backups (or two inits), wait for both; sets rc[one|two]
    local what=${1:-backup} t gate_fd
    rm -f "$gate"
    mkfifo "$gate"
    exec {gate_fd}<>"$gate"
    for t in one two; do
        if [[ $what == init ]]; then
            set -- "$CARIS_BIN" --quiet init
        else
            set -- "$CARIS_BIN" --json backup files "$TEST_TMP/$t"
        fi
        # shellcheck disable=SC2016 # $1 and $@ are the inner shell's
        bg_start bash -c 'read -r _ <"$1"; shift; exec "$@"' _ "$gate" "$@"
        pid[$t]=$BG_PID out[$t]=$BG_OUT err[$t]=$BG_ERR
    done
    printf 'go\ngo\n' >&"$gate_fd"
    for t in one two; do
        wait "${pid[$t]}"
        rc[$t]=$?
    done
    exec {gate_fd}>&-
}

check_round() { # LABEL
    local label=$1 t ids
    for t in one two; do
        if [[ ${rc[$t]} == 0 ]]; then
            pass "$label: backup $t exits 0"
        else
            fail "$label: backup $t exited ${rc[$t]}" "stderr:" "$(_tail "${err[$t]}")"
        fi
        id[$t]=$(json_get "${out[$t]}" '["id"]' 2>/dev/null)
        assert_ne "" "${id[$t]}" "$label: backup $t printed its id"
    done
    assert_ne "${id[one]}" "${id[two]}" "$label: the two ids are distinct"
    run cb --json list
    assert_rc 0 "$label: list"
    ids=" $(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)') "
    for t in one two; do
        assert_contains "$ids" " ${id[$t]} " "$label: list shows backup $t"
        assert_exit 0 cb verify "${id[$t]}"
    done
}

# --- round 1: the repository exists ----------------------------------------------------
assert_exit 0 cb init
start_together
check_round "existing repository"
assert_exit 0 cb check --read-data
for t in one two; do
    mkdir "$TEST_TMP/r-$t"
    assert_exit 0 cb restore files "${id[$t]}" --target "$TEST_TMP/r-$t"
    tree_compare "$TEST_TMP/$t" "$TEST_TMP/r-$t$TEST_TMP/$t"
done

# --- round 2: again, now incremental, after changing both trees --------------------------
for t in one two; do printf 'more\n' >>"$TEST_TMP/$t/dir/lines.txt"; done
start_together
check_round "second round"
assert_exit 0 cb check
run cb --json list
assert_eq 4 "$(json_eval "$OUT_FILE" 'len(d)')" "four backups in all"

# --- round 3: no repository yet: only `init` creates one, both backups refuse -------------
export BACKUP_DIR=$TEST_TMP/backup-fresh
REPO=$BACKUP_DIR/repository
start_together
for t in one two; do
    assert_eq 7 "${rc[$t]}" "no repository: backup $t exits 7"
    assert_contains "$(cat "${err[$t]}")" "caris-backup init" "no repository: backup $t names init"
done
assert_false "no repository: the backups created nothing" test -e "$BACKUP_DIR"

# --- round 4: two `init` at once --------------------------------------------------------
# One creates the repository; the other may succeed (nothing to do) or fail, but the
# repository must come out whole: one master key, usable.
export BACKUP_DIR=$TEST_TMP/backup-init
REPO=$BACKUP_DIR/repository
start_together init
if [[ ${rc[one]} == 0 || ${rc[two]} == 0 ]]; then
    pass "two inits: at least one succeeds"
else
    fail "two inits: both failed (${rc[one]}, ${rc[two]})" "$(_tail "${err[one]}")" "$(_tail "${err[two]}")"
fi
run cb --json key list
assert_rc 0 "two inits: the repository opens"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "two inits: one key slot"
assert_exit 0 cb --quiet backup files "$TEST_TMP/one"
assert_exit 0 cb check
# an init killed before it finished left init.lock: the next init said "another process is
# creating the repository" every time; now it says the process is gone, and what to remove
mkdir -p "$TEST_TMP/backup-killed-init/repository"
true &
gone=$!
wait "$gone"
printf '{"pid":%d,"host":"%s"}' "$gone" "$(cat /proc/sys/kernel/hostname)" >"$TEST_TMP/backup-killed-init/repository/init.lock"
BACKUP_DIR=$TEST_TMP/backup-killed-init run cb init
assert_rc 9 "init over a killed init's lock: exit 9"
assert_contains "$ERR" "was interrupted (its process $gone is gone)" "it says the init was interrupted"
# (the pid of another host, on a shared directory, says nothing here: the cautious message)
printf '{"pid":%d,"host":"elsewhere.example"}' "$gone" >"$TEST_TMP/backup-killed-init/repository/init.lock"
BACKUP_DIR=$TEST_TMP/backup-killed-init run cb init
assert_rc 9 "init over another host's init lock: exit 9"
assert_contains "$ERR" "another process is creating the repository" "it does not call that init interrupted"

# --- opens while a prune deletes ---------------------------------------------------------
# An open takes no lock: it lists data/ (while the key slot's KDF runs) and index/, then
# reads what the listings named. A prune meanwhile deletes index files, then packs, that the
# listings saw: the open must leave them out, not fail ("cannot stat ..."). Before stop 29
# about 1 % of such opens failed (23 of 2,257 in a minute with this loop); with the listing
# moved before the KDF, a third did. 20 backup + prune rounds race the opens below (70-140
# opens; 40 rounds were 32 CPU-s with ASan, the suite's costliest step): a return of that 1 %
# is caught in one run of the two builds' tests about nine times in ten, not every time.
export BACKUP_DIR=$TEST_TMP/backup-prune
# shellcheck disable=SC2034 # read by lib.sh's helpers
REPO=$BACKUP_DIR/repository
init_repo
mkdir -p "$TEST_TMP/pr"
cat >"$TEST_TMP/prune-loop.sh" <<'EOS'
trap 'touch "$DONE"' EXIT # its own bash
for i in $(seq 1 20); do
    seeded_bytes 300000 "concurrent/loop-$i" >"$SRC/f"
    "$CARIS_BIN" --quiet backup files --full "$SRC" >/dev/null || { echo "backup $i failed"; exit 1; }
    "$CARIS_BIN" --quiet forget --keep-last 1 --prune >/dev/null || { echo "prune $i failed"; exit 1; }
done
EOS
export -f seeded_bytes # the loop runs in a bash of its own
DONE=$TEST_TMP/prune-done SRC=$TEST_TMP/pr bg_start bash "$TEST_TMP/prune-loop.sh"
prune_pid=$BG_PID prune_err=$BG_ERR
opens=0 failed=0 deadline=$((SECONDS + 600))
: >"$TEST_TMP/open-errors"
# the loop's EXIT trap writes prune-done however it ends; the deadline bounds a hung loop
while [[ ! -e $TEST_TMP/prune-done ]] && ((SECONDS < deadline)); do
    opens=$((opens + 1))
    if ! "$CARIS_BIN" --quiet list >/dev/null 2>"$TEST_TMP/open-err"; then
        failed=$((failed + 1))
        head -c 300 "$TEST_TMP/open-err" >>"$TEST_TMP/open-errors"
    fi
done
assert_true "the backup + prune loop ended within 600 s" test -e "$TEST_TMP/prune-done" ||
    kill -9 "$prune_pid" 2>/dev/null
wait "$prune_pid"
prune_rc=$?
assert_eq 0 "$prune_rc" "20 backups and prunes succeed beside the opens"
[[ $prune_rc == 0 ]] || note "$(_tail "$prune_err")"
assert_eq 0 "$failed" "no open fails while a prune deletes what it listed ($opens opens)"
[[ $failed == 0 ]] || note "$(_tail "$TEST_TMP/open-errors")"
assert_exit 0 cb check

test_done
