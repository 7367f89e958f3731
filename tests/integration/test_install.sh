#!/usr/bin/env bash
# Installing like a real tool (issue 11): `meson install` of the build that made the binary
# under test, into a staging DESTDIR, puts the binary, the man page and the bash and zsh
# completions (both generated from --help in the build), the systemd units, the example env
# and the docs in place; the man page renders without warnings and names every command of
# --help; the completions load and complete commands, options and backup ids; the units pass
# systemd-analyze verify; scripts/demo.sh backs up files and a throwaway database.
source "$(dirname "$0")/lib.sh"

ROOT=$(cd "$LIB_DIR/../.." && pwd)
BUILD=$(cd "$(dirname "$CARIS_BIN")/../.." && pwd)
if [[ ! -f $BUILD/build.ninja ]]; then
    fail "no meson build directory above $CARIS_BIN"
    test_done
fi
PREFIX=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
STAGE=$TEST_TMP/stage
P=$STAGE$PREFIX

# --- meson install --------------------------------------------------------------------
run meson install -C "$BUILD" --no-rebuild --destdir "$STAGE"
assert_rc 0 "meson install into a staging DESTDIR"
for f in bin/caris-backup share/man/man1/caris-backup.1 \
    share/bash-completion/completions/caris-backup share/zsh/site-functions/_caris-backup \
    lib/systemd/system/caris-backup.service lib/systemd/system/caris-backup-run@.service \
    lib/systemd/system/caris-backup-daily.timer lib/systemd/system/caris-backup-weekly.timer \
    lib/systemd/system/caris-backup-monthly.timer \
    share/doc/caris-backup/README.md share/doc/caris-backup/BACKUP_RECOVERY.md \
    share/doc/caris-backup/REPOSITORY-FORMAT.md; do
    assert_true "installed: $PREFIX/$f" test -s "$P/$f"
done
assert_true "the installed binary is the one built" cmp "$CARIS_BIN" "$P/bin/caris-backup"
assert_true "installed: /etc/caris-backup/env.example" test -s "$STAGE/etc/caris-backup/env.example"
assert_false "no /etc/caris-backup/env is installed (only the example)" test -e "$STAGE/etc/caris-backup/env"
assert_eq 700 "$(stat -c %a "$STAGE/etc/caris-backup")" "/etc/caris-backup is mode 0700"
assert_true "the example env holds no usable key (an empty BACKUP_ENCRYPTION_KEY)" \
    grep -qx 'BACKUP_ENCRYPTION_KEY=' "$STAGE/etc/caris-backup/env.example"

# --- the man page ---------------------------------------------------------------------
# The commands as `--help` lists them: the first word, and the second when it is a
# subcommand word (backup files, schedule status...).
run cb --help
assert_rc 0 "caris-backup --help"
mapfile -t COMMANDS < <(printf '%s\n' "$OUT" | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit }
    on && /^  [a-z]/ { print $1 }' | sort -u)
note "${#COMMANDS[@]} commands in --help: ${COMMANDS[*]}"
assert_true "--help lists at least 20 commands" test "${#COMMANDS[@]}" -ge 20
MAN=$P/share/man/man1/caris-backup.1
LC_ALL=C MANWIDTH=100 man --warnings -l "$MAN" >"$TEST_TMP/man.txt" 2>"$TEST_TMP/man.err" </dev/null
assert_eq 0 "$?" "man -l renders the installed page"
assert_eq "" "$(cat "$TEST_TMP/man.err")" "man --warnings: no warning from groff"
MANTXT=$(cat "$TEST_TMP/man.txt")
assert_contains "$MANTXT" "caris-backup - encrypted" "the page has its NAME line"
for s in SYNOPSIS DESCRIPTION COMMANDS OPTIONS ENVIRONMENT "EXIT STATUS" FILES; do
    assert_true "the page has a $s section" grep -qx "$s" "$TEST_TMP/man.txt"
done
missing=()
for c in "${COMMANDS[@]}"; do
    # each command has its own subsection (its `COMMAND --help`), a heading at indent 3
    grep -qE "^   $c( |$)" "$TEST_TMP/man.txt" || missing+=("$c")
done
assert_eq "" "${missing[*]}" "the page describes every command of --help in its own subsection"
usage_lines=$(grep -c '^ *usage: caris-backup' "$TEST_TMP/man.txt")
assert_true "the page holds the usage lines of the commands' --help ($usage_lines)" test "$usage_lines" -ge 20
assert_contains "$MANTXT" "--kdf-memory MIB" "init's options as init --help prints them"
assert_contains "$MANTXT" "--scratch database" "test-restore's options as its --help prints them"

# --- bash completion ------------------------------------------------------------------
BASHC=$P/share/bash-completion/completions/caris-backup
run bash -c 'source "$1" && complete -p caris-backup' bash "$BASHC"
assert_rc 0 "the bash completion loads"
assert_contains "$OUT" "-F _caris_backup" "complete -p caris-backup names the completion function"
# complete WORDS...: what the completion offers for the last word
complete_bash() {
    # shellcheck disable=SC2016
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        _caris_backup; printf "%s\n" "${COMPREPLY[@]}"' bash "$BASHC" "$CARIS_BIN" "$@"
}
all=$(complete_bash "")
missing=()
for c in "${COMMANDS[@]}"; do grep -qx -- "$c" <<<"$all" || missing+=("$c"); done
assert_eq "" "${missing[*]}" "bash: every command of --help completes after caris-backup"
assert_eq "list" "$(complete_bash li)" "bash: li -> list"
assert_eq "$(printf 'files\ndatabase')" "$(complete_bash backup "")" "bash: backup -> files database"
assert_eq "$(printf -- '--exclude\n--exclude-file')" "$(complete_bash backup files --ex)" \
    "bash: backup files --ex -> --exclude --exclude-file"
assert_eq "$(printf -- '--clean\n--create')" "$(complete_bash --json restore database x --c)" \
    "bash: restore database ID --c -> --clean --create (after a global option)"
assert_eq "$(printf 'files\ndatabase')" "$(complete_bash list --type "")" "bash: list --type -> files database"
# backup ids from the repository (caris-backup --json list)
init_repo
mkdir -p "$TEST_TMP/src" && echo hello >"$TEST_TMP/src/a.txt"
run cb --json backup files "$TEST_TMP/src"
assert_rc 0 "a backup for the id completion"
id=$(json_get "$OUT_FILE" '["id"]' 2>/dev/null || json_get "$OUT_FILE" '["backupId"]' 2>/dev/null)
ids=$(complete_bash verify "")
assert_contains "$ids" "$id" "bash: verify <TAB> offers the backup's id ($id)"
assert_contains "$ids" "latest:files" "bash: verify <TAB> offers latest:files"
assert_eq "$id" "$(complete_bash show "${id:0:12}")" "bash: show PREFIX<TAB> completes the id"

# --- zsh completion -------------------------------------------------------------------
ZSHC=$P/share/zsh/site-functions/_caris-backup
if command -v zsh >/dev/null; then
    assert_true "zsh -n: the zsh completion parses" zsh -n "$ZSHC"
    mkdir -p "$TEST_TMP/zfunc" && cp "$ZSHC" "$TEST_TMP/zfunc/"
    # compadd/_describe/_files replaced by functions that print what they were given
    cat >"$TEST_TMP/zt.zsh" <<ZSH
fpath=($TEST_TMP/zfunc \$fpath)
autoload -Uz _caris-backup
compadd() { local seen=0 a; for a in "\$@"; do if ((seen)); then print -r -- "\$a"; elif [[ \$a == -- ]]; then seen=1; fi; done }
_describe() { print -rl -- \${(P)\${@[-1]}} }
_files() { print -r -- FILES }
words=($CARIS_BIN "\$@"); CURRENT=\${#words}
_caris-backup
ZSH
    z=$(zsh -f "$TEST_TMP/zt.zsh" backup "")
    assert_eq "$(printf 'files\ndatabase')" "$z" "zsh: backup -> files database"
    z=$(zsh -f "$TEST_TMP/zt.zsh" --json list --t)
    assert_contains "$z" "--type" "zsh: list --t offers --type"
    z=$(zsh -f "$TEST_TMP/zt.zsh" "")
    missing=()
    for c in "${COMMANDS[@]}"; do grep -q -- "^$c:" <<<"$z" || missing+=("$c"); done
    assert_eq "" "${missing[*]}" "zsh: every command of --help is offered, with its description"
    z=$(zsh -f "$TEST_TMP/zt.zsh" verify "")
    assert_contains "$z" "$id" "zsh: verify <TAB> offers the backup's id ($id)"
    assert_contains "$z" "latest:database" "zsh: verify <TAB> offers latest:database"
else
    skip "zsh is not installed: the zsh completion is only checked to exist"
fi

# --- systemd units --------------------------------------------------------------------
UNITS=$TEST_TMP/units
mkdir -p "$UNITS"
# the installed units with their paths pointing into the stage (the build's own rewrite)
for u in "$P"/lib/systemd/system/*; do
    python3 "$ROOT/dist/gen-docs.py" subst "$P" "$u" "$UNITS/$(basename "$u")"
done
assert_true "the units run the installed binary" grep -q "^ExecStart=$P/bin/caris-backup --env-file /etc/caris-backup/env daemon" "$UNITS/caris-backup.service"
assert_true "the daily timer starts run-now incremental" grep -qx "Unit=caris-backup-run@incremental.service" "$UNITS/caris-backup-daily.timer"
assert_true "the weekly timer starts run-now full" grep -qx "Unit=caris-backup-run@full.service" "$UNITS/caris-backup-weekly.timer"
assert_true "the run service runs run-now" grep -q "run-now %i --wait" "$UNITS/caris-backup-run@.service"
cp "$UNITS/caris-backup-run@.service" "$UNITS/caris-backup-run@full.service"
cp "$UNITS/caris-backup-run@.service" "$UNITS/caris-backup-run@incremental.service"
if command -v systemd-analyze >/dev/null; then
    for u in caris-backup.service caris-backup-run@full.service caris-backup-run@incremental.service \
        caris-backup-daily.timer caris-backup-weekly.timer caris-backup-monthly.timer; do
        run systemd-analyze verify --man=no "$UNITS/$u"
        assert_rc 0 "systemd-analyze verify $u"
        assert_eq "" "$ERR" "systemd-analyze verify $u: no complaint"
    done
else
    for u in "$UNITS"/*; do
        assert_true "$(basename "$u") is a well-formed unit file" python3 -c '
import configparser, sys
c = configparser.ConfigParser(strict=False, interpolation=None)
c.optionxform = str
c.read(sys.argv[1])
assert "Unit" in c and "Install" in c or "Service" in c, c.sections()' "$u"
    done
fi
for t in daily weekly monthly; do
    cal=$(sed -n 's/^OnCalendar=//p' "$UNITS/caris-backup-$t.timer")
    if command -v systemd-analyze >/dev/null; then
        assert_true "the $t timer's OnCalendar=$cal is valid" systemd-analyze calendar "$cal"
    fi
done

# --- the demo (files and a throwaway database) ----------------------------------------
: >"$TEST_TMP/demo.env"
run env -u POSTGRES_URL TMPDIR="$TEST_TMP" BACKUP_DIR="$TEST_TMP/demo-backup" \
    bash "$ROOT/scripts/demo.sh" --bin "$CARIS_BIN" --env-file "$TEST_TMP/demo.env"
assert_rc 0 "scripts/demo.sh backs up files and a throwaway database"
assert_contains "$OUT" "loaded a demo schema" "the demo started its own PostgreSQL and loaded its schema"
assert_match "test restore of [^ ]+: PASSED" "$OUT" "the demo test-restored the database backup"
assert_contains "$OUT" "POSTGRES_URL=" "the demo says how to point it at one's own database"
port=$(grep -o 'PostgreSQL on 127.0.0.1:[0-9]*' <<<"$OUT" | cut -d: -f2)
assert_match "^[0-9]+$" "$port" "the demo named its server's port"
assert_false "the demo's server directory is removed at the end" test -e "/tmp/caris-demo-pg-$port"
# its processes are gone (not "nothing listens on the port": with tests running in parallel
# another test's server may take the freed port at once)
# (pg_ctl stop -w returns once the pid file is gone: the last process may take a moment more)
no_demo_server() { ! pgrep -f -- "caris-demo-pg-$port/" >/dev/null; }
assert_true "the demo's server is stopped (no process of /tmp/caris-demo-pg-$port is left)" \
    wait_until 20 no_demo_server
run cb --repo "$TEST_TMP/demo-backup/repository" --json list --type database
assert_rc 0 "list the demo's repository"
assert_eq 1 "$(python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' <"$OUT_FILE")" \
    "the demo's repository holds its database backup"

test_done
