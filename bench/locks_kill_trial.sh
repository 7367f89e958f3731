#!/usr/bin/env bash
# Kill -9 trial for issue 6 section 2: file backups killed with SIGKILL at different points
# (once their lock exists, after 0..4 new packs), counting what each kill leaves (lock,
# claim, temporary files), what `check` reports, what `unlock` removes, and whether `check`
# is clean afterwards. A program, not a test: it prints figures and never fails a build.
#
# usage: bench/locks_kill_trial.sh [--bin PATH] [TRIALS] [MIB]
set -u
bin=build/src/cli/caris-backup
if [[ ${1:-} == --bin ]]; then
    bin=$2
    shift 2
fi
trials=${1:-20}
mib=${2:-96}
[[ $bin == /* ]] || bin=$PWD/$bin
work=$(mktemp -d /tmp/caris-kill-trial.XXXXXX)
trap '[[ $BASHPID == "$$" ]] || exit; rm -rf "$work"' EXIT
export BACKUP_DIR=$work/backup
BACKUP_ENCRYPTION_KEY="trial-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export BACKUP_ENCRYPTION_KEY
repo=$BACKUP_DIR/repository
mkdir -p "$work/src"
# new data for every trial: a backup of known data stores no packs and ends too soon
fresh_data() { for i in $(seq 1 8); do head -c $((mib / 8))M /dev/urandom >"$work/src/f$i"; done; }
"$bin" --quiet init

packs() { find "$repo/data" -type f ! -name '.*' 2>/dev/null | wc -l; }
locks() { find "$repo/locks" -maxdepth 1 -type f ! -name '.*' ! -name 'claim-*' 2>/dev/null | wc -l; }
claims() { find "$repo/locks" -maxdepth 1 -type f -name 'claim-*' 2>/dev/null | wc -l; }
tmps() { find "$repo" -type f -name '.tmp-*' | wc -l; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

left_lock=0 left_claim=0 left_tmp=0 reported=0 removed_all=0 clean_after=0 finished=0
for t in $(seq 1 "$trials"); do
    want=$((t % 5))
    fresh_data
    before=$(packs)
    "$bin" --quiet backup files --full "$work/src" >/dev/null 2>&1 &
    pid=$!
    until (($(locks) > 0)) || ! kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    until (($(packs) >= before + want)) || ! kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    if ! kill -9 "$pid" 2>/dev/null; then
        wait "$pid"
        finished=$((finished + 1))
        continue
    fi
    wait "$pid" 2>/dev/null
    l=$(locks) c=$(claims) m=$(tmps)
    ((l)) && left_lock=$((left_lock + 1))
    ((c)) && left_claim=$((left_claim + 1))
    ((m)) && left_tmp=$((left_tmp + 1))
    w=$("$bin" --json check | json 'sum(1 for x in d["warnings"] if "stale" in x["error"] or "temporary file" in x["error"])')
    ((w == l + c + m)) && reported=$((reported + 1))
    "$bin" --quiet unlock >/dev/null
    (($(locks) + $(claims) + $(tmps) == 0)) && removed_all=$((removed_all + 1))
    # (packs of the killed backup that no index lists yet stay warnings until the next
    # backup adopts them: not counted here)
    w=$("$bin" --json check | json 'sum(1 for x in d["warnings"] if "stale" in x["error"] or "temporary file" in x["error"])')
    ((w == 0)) && clean_after=$((clean_after + 1))
    printf 'trial %2d: killed after %d new pack(s): left lock %d, claim %d, temporary files %d\n' \
        "$t" $(($(packs) - before)) "$l" "$c" "$m"
done
killed=$((trials - finished))
echo "killed $killed of $trials backups ($finished finished before the kill)"
echo "left a lock: $left_lock, a claim: $left_claim, temporary files: $left_tmp"
echo "check reported every leftover: $reported of $killed; unlock removed all: $removed_all; check clean after: $clean_after"
"$bin" --quiet backup files "$work/src" && echo "a backup after the trial: ok"
