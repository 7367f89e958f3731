#!/usr/bin/env bash
# An S3 repository behind tests/integration/faultproxy.py, which spoils requests on purpose:
# 500 InternalError, 503 SlowDown, connections dropped before the answer, answers cut after
# their headers, bodies truncated, delays. A backup through it succeeds (every failure is
# retried) and verifies; restore is byte-exact. Behind a server that keeps failing, a backup
# fails cleanly: exit 8 naming the object and the status, no backup listed, and `check`
# (straight to the server) passes. Pack uploads run in parallel (two held in flight at once),
# and one failing for good while another is in flight fails the backup just as cleanly.
# Behind a server that confirms x-amz-checksum-sha256 (as AWS S3 does), uploads stop sending
# Content-MD5, and send it again when the server stops confirming. A PUT answered 200 with
# neither ETag nor checksum (nothing says it was stored) is sent again; answered so every time,
# the backup fails and none is listed. 400 RequestTimeout and 409 OperationAborted are retried,
# a 400 InvalidArgument is not. A listing answered with a 200 that is not a listing (empty, an
# HTML page) fails list and prune; prune deletes nothing. An endpoint that is no S3 server
# (answering 200 or 404 with an HTML page to everything) is said to be one, not taken for a
# damaged or existing repository. An expired session token (400 ExpiredToken) is a credentials
# error (exit 6). A server that ignores continuation tokens fails a listing (it never ended).
# Credentials that may not delete leave a backup's lock and claim behind, and that is said.
# verify --all fails when the state record cannot be audited (a backup whose snapshot is gone
# would pass unnoticed).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
direct=s3:$S3_ENDPOINT/bkt/repo

# proxy_start ARGS...: a fault proxy in front of s3rver; sets PROXY (its s3: location)
# and PROXY_STATS (its counters, JSON).
proxy_n=0
proxy_start() {
    proxy_n=$((proxy_n + 1))
    local port
    port=$(_s3_free_port)
    PROXY_STATS=$TEST_TMP/proxy$proxy_n.json
    bg_start python3 "$LIB_DIR/faultproxy.py" --port "$port" --upstream "${S3_ENDPOINT#http://}" \
        --stats "$PROXY_STATS" "$@"
    if ! wait_until 20 _s3_ready "$port"; then
        fail "the fault proxy did not start" "$(_tail "$BG_ERR")"
        test_done
    fi
    PROXY=s3:http://127.0.0.1:$port/bkt/repo
}
stat_of() { json_get "$PROXY_STATS" "[\"$1\"]" 2>/dev/null || echo 0; }

assert_exit 0 cb --repo "$direct" init

# --- every third request spoiled: everything still works -----------------------------------
# (and every request's SigV4 signature checked by the proxy's own implementation)
proxy_start --every 3 --verify-sigv4 "$AWS_SECRET_ACCESS_KEY"
export BACKUP_S3_LIST_PAGE=1 # listings page through continuation tokens, signed and checked
export BACKUP_S3_RETRY_SECONDS=30
src=$TEST_TMP/src
make_tree "$src" --no-special || fail "make_tree failed"
seeded_bytes 6000000 s3_faults/big >"$src/big.bin"

run cb --repo "$PROXY" --json backup files "$src"
assert_rc 0 "backup through the fault proxy succeeds"
id=$(json_get "$OUT_FILE" '["id"]')
for k in 500 503 drop cut truncate delay; do
    assert_cmp "$(stat_of "$k")" -ge 1 "the proxy injected '$k' at least once"
done
assert_exit 0 cb --repo "$PROXY" verify "$id"
assert_exit 0 cb --repo "$PROXY" check --read-data
target=$TEST_TMP/restore
mkdir "$target"
assert_exit 0 cb --repo "$PROXY" restore files "$id" --target "$target"
tree_compare "$src" "$target$src"
assert_exit 0 cb --repo "$direct" check --read-data
assert_contains "$OUT" "no errors found" "the repository is sound, seen straight from the server"
note "proxy: $(cat "$PROXY_STATS")"
assert_cmp "$(stat_of sig_ok)" -ge 50 "the proxy checked the signatures of the requests"
assert_eq 0 "$(stat_of sig_bad)" "every request was signed right (SigV4 checked independently)"
run env AWS_SECRET_ACCESS_KEY=not-the-secret "$CARIS_BIN" --repo "$PROXY" list
assert_rc 6 "a request signed with another secret is refused by the checking proxy"
assert_cmp "$(stat_of sig_bad)" -ge 1 "... and counted as a bad signature"

unset BACKUP_S3_LIST_PAGE
assert_cmp "$(stat_of continued_lists)" -ge 1 "listings went through continuation tokens"

# --- a server that keeps answering 503 to pack uploads: a clean failure --------------------
proxy_start --always 503 --match /data/ --method PUT
export BACKUP_S3_RETRY_SECONDS=2
printf 'new content\n' >"$src/new.txt"
seeded_bytes 3000000 s3_faults/big2 >"$src/big2.bin"
run cb --repo "$PROXY" backup files "$src"
assert_rc 8 "backup fails when the server keeps failing"
assert_contains "$ERR" "HTTP 503 SlowDown" "the error gives the status and S3's code"
assert_match "PUT data/[0-9a-f]{2}/[0-9a-f]{64}" "$ERR" "the error names the object"
run cb --repo "$direct" --json list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "no backup listed for the failed one"
assert_exit 0 cb --repo "$direct" check
assert_contains "$OUT" "no errors found" "check passes after the failed backup"
assert_exit 0 cb --repo "$direct" unlock
assert_eq "" "$(find "$S3_DIR/bkt/repo/locks" -name '*._S3rver_object' 2>/dev/null)" "no lock left behind"

# --- a 503 with Retry-After: the retry waits at least that long ------------------------------
# (a server shedding load asks for more time than the backoff's first 50-100 ms)
proxy_start --always retryafter --times 1 --match /data/ --method PUT
export BACKUP_S3_RETRY_SECONDS=20
ra=$TEST_TMP/ra
mkdir -p "$ra"
seeded_bytes 300000 s3_faults/ra >"$ra/a.bin"
assert_exit 0 cb --repo "$PROXY" backup files "$ra"
assert_eq 1 "$(stat_of retryafter)" "one pack upload was answered 503 with Retry-After: 2"
assert_json "$PROXY_STATS" 'd.get("retry_after_gap_min", 0) >= 1.9' \
    "the client waited the 2 s Retry-After asked for before sending it again ($(stat_of retry_after_gap_min) s)"

# --- uploads run beside the hashing: two pack PUTs in flight at once ------------------------
# The proxy holds the first two PUTs of packs until both are held: an uploader that sends one
# pack at a time would keep the first held until the proxy gives up (hold_timeouts). Packs of
# 4 MiB (the test-only CARIS_TEST_PACK_TARGET) and 12 MB of data: 2 workers fill 2 packs while
# they hash (16 MiB packs and 48 MB were a fifth of this test's CPU, through the Python proxy).
proxy_start --hold 2 --match /data/ --method PUT
export BACKUP_S3_RETRY_SECONDS=30
par=$TEST_TMP/par
mkdir -p "$par"
seeded_bytes 12000000 s3_faults/a >"$par/a.bin"
assert_exit 0 env CARIS_TEST_PACK_TARGET=4194304 "$CARIS_BIN" --repo "$PROXY" --threads 2 --s3-connections 4 \
    --json backup files "$par"
assert_eq 2 "$(stat_of max_held)" "two pack uploads were in flight at once"
assert_eq 0 "$(stat_of hold_timeouts)" "no upload waited for another to finish"
par_id=$(json_get "$OUT_FILE" '["id"]')
assert_cmp "$(json_get "$OUT_FILE" '["s3"]["requests"]')" -ge 3 "--json counts the S3 requests"
assert_cmp "$(json_get "$OUT_FILE" '["s3"]["bytesSent"]')" -ge 12000000 "... and the bytes sent"
assert_exit 0 cb --repo "$direct" verify "$par_id"

# --- one pack PUT failing for good while another is in flight: a clean failure --------------
# The second pack is refused every time; the first is held until the second was refused three
# times, so it is in flight during the retries. The backup fails naming the refused pack;
# no backup is listed and the repository checks clean.
run cb --repo "$direct" --json list
nbefore=$(json_eval "$OUT_FILE" 'len(d)')
proxy_start --hold 1 --fail-object 2 --match /data/ --method PUT
export BACKUP_S3_RETRY_SECONDS=3
par2=$TEST_TMP/par2
mkdir -p "$par2"
seeded_bytes 12000000 s3_faults/b >"$par2/b.bin" # 3 packs of 4 MiB, as above
run env CARIS_TEST_PACK_TARGET=4194304 "$CARIS_BIN" --repo "$PROXY" --threads 2 backup files "$par2"
assert_rc 8 "a backup whose pack upload fails for good fails"
failed=$(stat_of failed_object)
assert_contains "$ERR" "${failed#/bkt/repo/}" "the error names the pack that could not be stored"
assert_contains "$ERR" "HTTP 503 SlowDown" "... and the server's answer"
assert_cmp "$(stat_of object_fails)" -ge 3 "the failing upload was retried"
assert_eq 0 "$(stat_of hold_timeouts)" "another pack was being uploaded while it failed"
run cb --repo "$direct" --json list
assert_eq "$nbefore" "$(json_eval "$OUT_FILE" 'len(d)')" "no backup listed for the failed one"
assert_exit 0 cb --repo "$direct" check
assert_contains "$OUT" "no errors found" "check passes after the failed upload"
assert_exit 0 cb --repo "$direct" unlock

# --- an exclusive create whose answer was lost ---------------------------------------------
# The PUT of init.lock (If-None-Match: *) reaches the server but its answer is lost; the retry
# is refused with 412 as AWS does. The object holds our own bytes: init goes on.
proxy_start --if-none-match --always cut --match /init.lock --method PUT --times 1
assert_exit 0 cb --repo "${PROXY%/repo}/repo2" init
assert_eq 1 "$(stat_of cut)" "the first PUT of init.lock lost its answer"
assert_eq 1 "$(stat_of 412)" "its retry was refused with 412"
assert_exit 0 cb --repo "${PROXY%/repo}/repo2" list

# --- a 2xx answer to a PUT that confirms nothing: sent again, never taken for stored ----------
# The proxy's 'empty' answers 200 OK with an empty body and no ETag, and forwards nothing (a
# proxy answering in the server's place). S3 answers every PUT it stored with an ETag (or the
# checksum it checked): without either, nothing says the object is there. Once: the PUT goes
# again and the backup is whole (its packs checked, its snapshot listed). Every time: the
# backup fails naming the object, and no backup is listed.
nempty=0
# left_nothing WHAT: after failed backups, the repository (read straight from the server) lists
# no more backups than $nbefore, check passes, and the failed backups' locks go with unlock
left_nothing() {
    run cb --repo "$direct" --json list
    assert_eq "$nbefore" "$(json_eval "$OUT_FILE" 'len(d)')" "no backup listed for $1"
    assert_exit 0 cb --repo "$direct" check
    assert_contains "$OUT" "no errors found" "check passes after $1"
    assert_exit 0 cb --repo "$direct" unlock
}
for where in data snapshots; do
    proxy_start --always empty --match "/$where/" --method PUT --times 1
    export BACKUP_S3_RETRY_SECONDS=30
    nempty=$((nempty + 1))
    printf 'empty answer, once, to a PUT in %s\n' "$where" >"$src/empty$nempty.txt"
    run cb --repo "$PROXY" --json backup files "$src"
    assert_rc 0 "backup with one PUT in $where/ answered 200 without an ETag: succeeds"
    eid=$(json_get "$OUT_FILE" '["id"]')
    assert_eq 1 "$(stat_of empty)" "the proxy answered one PUT in $where/ with an empty 200"
    run cb --repo "$direct" --json list
    assert_eq 1 "$(json_eval "$OUT_FILE" "sum(b['id'] == '$eid' for b in d)")" \
        "the backup is listed, seen straight from the server"
    assert_exit 0 cb --repo "$direct" check
    assert_contains "$OUT" "no errors found" "check passes: the PUT answered empty went again"
done
export BACKUP_S3_RETRY_SECONDS=2
for where in data snapshots; do
    run cb --repo "$direct" --json list
    nbefore=$(json_eval "$OUT_FILE" 'len(d)')
    proxy_start --always empty --match "/$where/" --method PUT
    nempty=$((nempty + 1))
    printf 'empty answer, every time, to PUTs in %s\n' "$where" >"$src/empty$nempty.txt"
    run cb --repo "$PROXY" backup files "$src"
    assert_rc 8 "backup whose PUTs in $where/ are always answered 200 without an ETag: fails"
    assert_contains "$ERR" "confirmed nothing (no ETag, no x-amz-checksum-sha256)" \
        "the error says the answer confirmed nothing"
    assert_match "cannot PUT $where/([0-9a-f]{2}/)?[0-9a-f]{64} in " "$ERR" "the error names the object"
    assert_match "after [0-9]+ attempts" "$ERR" "... after several attempts"
    assert_cmp "$(stat_of empty)" -ge 2 "the PUT was sent again"
    assert_not_contains "$OUT$ERR" "completed" "no success is reported"
    left_nothing "the failed backup"
done

# --- transient errors under a 4xx status: sent again; any other 4xx is final -----------------
# AWS answers an upload that stalled with 400 RequestTimeout, and a request that met a
# conflicting operation with 409 OperationAborted: both are sent again (the SDKs do too), so
# one of them does not fail the backup; answered so every time, the backup fails like a server
# that keeps failing (exit 8). A 400 InvalidArgument is final: one attempt, no retry.
export BACKUP_S3_RETRY_SECONDS=30
ntransient=0
for kw in reqtimeout:data aborted:snapshots; do
    kind=${kw%%:*} where=${kw#*:}
    proxy_start --always "$kind" --match "/$where/" --method PUT --times 1
    ntransient=$((ntransient + 1))
    printf 'one %s to a PUT in %s\n' "$kind" "$where" >"$src/transient$ntransient.txt"
    run cb --repo "$PROXY" --json backup files "$src"
    assert_rc 0 "backup with one PUT in $where/ answered '$kind': succeeds"
    tid=$(json_get "$OUT_FILE" '["id"]')
    assert_eq 1 "$(stat_of "$kind")" "the proxy answered one PUT in $where/ with '$kind'"
    assert_exit 0 cb --repo "$direct" verify "$tid"
    assert_exit 0 cb --repo "$direct" check
    assert_contains "$OUT" "no errors found" "check passes: the PUT answered '$kind' went again"
done
run cb --repo "$direct" --json list
nbefore=$(json_eval "$OUT_FILE" 'len(d)')
export BACKUP_S3_RETRY_SECONDS=2
proxy_start --always reqtimeout --match /data/ --method PUT
printf 'RequestTimeout every time\n' >"$src/transient-always.txt"
run cb --repo "$PROXY" backup files "$src"
assert_rc 8 "backup whose pack PUTs are always answered 400 RequestTimeout: fails (I/O)"
assert_match "cannot PUT data/[0-9a-f]{2}/[0-9a-f]{64} in .*: HTTP 400 RequestTimeout \(after [0-9]+ attempts\)" \
    "$ERR" "the error names the object, the status and the code, after several attempts"
assert_cmp "$(stat_of reqtimeout)" -gt "$(stat_of always_objects)" "a PUT was sent again"
export BACKUP_S3_RETRY_SECONDS=30
proxy_start --always invalid --match /data/ --method PUT
run cb --repo "$PROXY" backup files "$src"
assert_rc 1 "backup whose pack PUT is answered 400 InvalidArgument: fails"
assert_match "cannot PUT data/[0-9a-f]{2}/[0-9a-f]{64} in .*: HTTP 400 InvalidArgument \(after 1 attempt\)" \
    "$ERR" "the error names the object, the status and the code, after one attempt"
assert_cmp "$(stat_of invalid)" -ge 1 "the proxy refused a pack"
assert_eq "$(stat_of always_objects)" "$(stat_of invalid)" "no PUT answered InvalidArgument was sent again"
left_nothing "the failed backups"

# --- a server that checks x-amz-checksum-sha256 and says so (AWS S3, MinIO) ------------------
# The first PUT carries Content-MD5 too; once the server answered with the checksum it checked,
# the others go without the MD5. A server that stops confirming gets the PUT again with it.
proxy_start --checksums
seeded_bytes 3000000 s3_faults/new1 >"$src/new1.bin"
run cb --repo "$PROXY" --json backup files "$src"
assert_rc 0 "backup through a server that confirms checksums"
note "proxy: $(cat "$PROXY_STATS")"
assert_eq 1 "$(stat_of put_md5)" "one PUT with Content-MD5 (the first)"
assert_cmp "$(stat_of put_no_md5)" -ge 4 "the later PUTs (claim, pack, index, snapshot, ...) without it"
assert_eq 0 "$(stat_of bad_digest)" "every checksum sent was the body's"
proxy_start --checksums --echo-checksums 2
seeded_bytes 3000000 s3_faults/new2 >"$src/new2.bin"
run cb --repo "$PROXY" --json backup files "$src"
assert_rc 0 "backup through a server that stops confirming checksums"
note "proxy: $(cat "$PROXY_STATS")"
# (PUTs of packs run at once: more than one may go out unconfirmed before the first answer)
assert_eq 2 "$(stat_of checksum_echoed)" "the server confirmed two checksums, then stopped"
assert_cmp "$(stat_of put_no_md5)" -ge 2 "PUTs without Content-MD5 after the first confirmation"
assert_cmp "$(stat_of put_md5)" -ge "$(stat_of put_no_md5)" \
    "every unconfirmed one went again with Content-MD5 (and the first PUT had it)"
assert_exit 0 cb --repo "$direct" check --read-data
assert_contains "$OUT" "no errors found" "the repository is sound, seen straight from the server"

# --- ETags that are not the MD5 of the bytes ------------------------------------------------
# A server that encrypts with keys of a key service (SSE-KMS) answers with an ETag of 32 hex
# digits that is not the MD5, and says so in x-amz-server-side-encryption: the Content-MD5 it
# checked confirms the bytes. The same ETag without that header: the bytes stored may not be
# those sent, and the backup fails.
run cb --repo "$direct" --json list
nbefore=$(json_eval "$OUT_FILE" 'len(d)')
proxy_start --always kms --match /data/ --method PUT
seeded_bytes 300000 s3_faults/kms >"$src/kms.bin"
run cb --repo "$PROXY" --json backup files "$src"
assert_rc 0 "backup through a server whose ETags are not MD5s (SSE-KMS, and it says so)"
assert_cmp "$(stat_of kms)" -ge 1 "the proxy answered the pack PUTs as SSE-KMS does"
nbefore=$((nbefore + 1))
export BACKUP_S3_RETRY_SECONDS=2
proxy_start --always badetag --match /data/ --method PUT
seeded_bytes 300000 s3_faults/badetag >"$src/badetag.bin"
run cb --repo "$PROXY" backup files "$src"
assert_rc 8 "backup whose pack PUTs are answered with an ETag that is not the MD5: fails"
assert_contains "$ERR" "ETag differs from the MD5" "the error says what the answer did not confirm"
assert_cmp "$(stat_of badetag)" -ge 1 "the proxy answered with a wrong ETag"
left_nothing "the backup whose packs were not confirmed"
export BACKUP_S3_RETRY_SECONDS=30

# --- a wrong region: said at once, with the bucket's region, without retries ---------------
proxy_start --always region --match /bkt
AWS_REGION=us-west-2 assert_exit 6 cb --repo "$PROXY" list
assert_contains "$ERR" "wrong region" "a wrong region is named as such"
assert_contains "$ERR" "eu-west-1" "the bucket's region is given"
assert_contains "$ERR" "AWS_REGION" "the hint names AWS_REGION"
assert_eq 1 "$(stat_of requests)" "one request, no retries"

# --- a clock too far off: S3 refuses the request's time; said as such, without retries --------
proxy_start --always skew --match /bkt
assert_exit 6 cb --repo "$PROXY" list
assert_contains "$ERR" "the S3 server refused the time of the request" "a clock too far off is named as such"
assert_contains "$ERR" "the server's 2026-12-03T10:00:00Z" "with the server's time"
assert_contains "$ERR" "timedatectl" "the hint says how to set the clock"
assert_eq 1 "$(stat_of requests)" "one request, no retries"

# --- temporary credentials that expired: S3 answers 400 ExpiredToken; said as such, exit 6 ------
# (it was a generic failure: exit 1, no hint)
proxy_start --always expired --match /bkt
token=FQoGZXIvYXdzEXAMPLE-session-token-do-not-show
AWS_SESSION_TOKEN=$token assert_exit 6 cb --repo "$PROXY" list
assert_contains "$ERR" "the S3 session token has expired: GET (bucket) in $PROXY (HTTP 400 ExpiredToken)" \
    "an expired session token is named as such, with the request"
assert_contains "$ERR" "HINT: renew the temporary credentials: AWS_SESSION_TOKEN" "the hint says to renew it"
assert_not_contains "$OUT$ERR" "$token" "the token is shown nowhere"
assert_eq 1 "$(stat_of requests)" "one request, no retries"

# --- credentials that may write but not delete (a bucket policy against ransomware) ----------
# The backup is made; its lock and its claim stay behind, which is said (nothing was: check then
# called them the leftovers of a crash). unlock, with permission to delete, removes them.
proxy_start --always denied --method DELETE --match /bkt
printf 'no delete\n' >"$src/nodelete.txt"
run cb --repo "$PROXY" backup files "$src"
assert_rc 0 "a backup with credentials that may not delete is made"
assert_match "warning: locks/[0-9a-f]{32}: this lock could not be removed: access denied: DELETE locks/[0-9a-f]{32} in $PROXY \(HTTP 403 AccessDenied\)" \
    "$ERR" "the lock left behind is named, with the reason"
assert_match "warning: locks/claim-file_[a-z]+_[0-9T-]+: this claim could not be removed" "$ERR" "... and the claim"
assert_contains "$ERR" "stays until \`caris-backup unlock\` removes it" "... and what removes them"
assert_exit 0 cb --repo "$direct" unlock
assert_eq "" "$(find "$S3_DIR/bkt/repo/locks" -name '*._S3rver_object' 2>/dev/null)" "unlock removed them"

# --- an endpoint that is no S3 server (a wrong host or port, a captive portal) --------------
# Answering 200 with an HTML page to everything, it was taken for a bucket: list called the
# repository damaged (its page read as the marker, exit 4) and init said a repository exists
# there. Answering 404 with an HTML page, the hint only said to create the bucket.
proxy_start --always html --match /bkt
run cb --repo "$PROXY" list
assert_rc 1 "list on an endpoint answering 200 with an HTML page: fails (exit 1)"
assert_contains "$ERR" "cannot list the bucket in $PROXY: the answer (HTTP 200, " "... saying what was asked"
assert_contains "$ERR" "is not an S3 listing" "... that the answer is not S3's"
assert_contains "$ERR" "HINT: check the endpoint" "... and to check the endpoint"
assert_not_contains "$ERR" "damaged" "the repository is not called damaged"
run cb --repo "${PROXY%/repo}/repo3" init
assert_rc 1 "init on it fails"
assert_contains "$ERR" "is not an S3 listing" "... saying the answer is not S3's"
assert_not_contains "$ERR" "already exists" "... not that a repository exists there"
proxy_start --always page404 --match /bkt
run cb --repo "$PROXY" list
assert_rc 7 "list on an endpoint answering 404 with an HTML page: exit 7"
assert_contains "$ERR" "no bucket bkt at" "the bucket is named"
assert_contains "$ERR" "HINT: check the endpoint and the bucket" "the hint names the endpoint first"
# a listed pack whose GET answers 404 (deleted between the listing and the read, or lost by the
# server): check --read-data reports it as damage with the backups that need it (exit 4); it
# stopped at the first such pack with exit 7 and no word of what was lost (audit M4)
proxy_start --always page404 --match /data/ --method GET
run cb --repo "$PROXY" check --read-data
assert_rc 4 "check --read-data with packs answering 404: damage found (exit 4)"
assert_contains "$OUT$ERR" "pack is listed but gone when read" "... each such pack named as gone"
assert_contains "$OUT$ERR" "$id" "... and the backups that need it"
# a listed index file whose GET answers 404, under prune's exclusive lock (so no other prune
# replaced it): damage, and prune refuses (it exited 7 with the storage's "not found" alone)
proxy_start --always page404 --match /index/ --method GET
run cb --repo "$PROXY" prune
assert_rc 4 "prune with an index file answering 404: refused as damage (exit 4)"
assert_contains "$ERR" "listed but gone when read" "... the index file named as gone"
assert_contains "$ERR" "HINT: run \`caris-backup check\`" "... and what to do"

# --- a server that ignores continuation-token: it answers the first page again, for ever -----
# (list sent requests until killed). A continued page must list keys after the pages before.
proxy_start --always notoken --match list-type
run timeout 120 env BACKUP_S3_LIST_PAGE=1 "$CARIS_BIN" --repo "$PROXY" list
assert_rc 1 "list behind a server that ignores continuation-token: fails"
assert_contains "$ERR" "a continued listing answered keys listed before" "the error says why"
assert_contains "$ERR" "HINT: the S3 server does not page listings as S3 does" "... and what it means"
assert_cmp "$(stat_of continued_lists)" -le 2 "it stopped at the first page answered again"

# --- a 200 that is not a listing (an empty body; an HTML page, as a captive portal sends) ------
# is an error, never an empty listing: prune would take "no snapshots" for "nothing is used"
data_objects() { find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' | wc -l; }
for kind in empty html; do
    ndata=$(data_objects)
    assert_cmp "$ndata" -ge 1 "the repository holds packs"
    proxy_start --always "$kind" --match "snapshots%2F" --method GET
    run cb --repo "$PROXY" --json list
    assert_rc 1 "list behind a proxy answering the snapshot listing with '$kind': fails"
    assert_contains "$ERR" "not an S3 listing" "the error says the answer is not a listing"
    run cb --repo "$PROXY" prune
    assert_rc 1 "prune behind it fails"
    assert_eq "$ndata" "$(data_objects)" "prune deleted no pack"
    assert_cmp "$(stat_of "$kind")" -ge 2 "the proxy spoiled the listings ($kind)"
done
assert_exit 0 cb --repo "$direct" check --read-data

# --- verify --all when the state record cannot be audited ---------------------------------------
# (the audit finds the backups whose snapshot file is gone: without it, verify --all said all was
# well, exit 0). A repository of one small backup of its own: verify --all reads every backup
# through the proxy, and the main one's 60 MB were a tenth of this test's CPU.
small=$TEST_TMP/small
mkdir -p "$small"
printf 'one small file\n' >"$small/a.txt"
assert_exit 0 cb --repo "$direct-small" init
assert_exit 0 cb --repo "$direct-small" backup files "$small"
proxy_start --always denied --match "state%2F" --method GET
run cb --repo "$PROXY-small" verify --all
assert_rc 6 "verify --all when the state record's listing is refused: fails"
assert_contains "$ERR" "cannot audit the state record, so backups whose snapshot file is gone cannot be found" \
    "... saying what it could not check"
assert_cmp "$(stat_of denied)" -ge 2 "the proxy refused the state listings"

test_done
