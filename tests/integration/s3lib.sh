# shellcheck shell=bash disable=SC2034
# (SC2034: S3_* are set here for the tests to read.)
# Helpers for the S3 tests, sourced after lib.sh:
#
#   source "$(dirname "$0")/lib.sh"
#   source "$(dirname "$0")/s3lib.sh"
#   s3_start BUCKET...      # a private s3rver on a free loopback port, with these buckets
#
# s3_start exports the credentials s3rver accepts (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# = S3RVER / S3RVER), sets S3_ENDPOINT (http://127.0.0.1:PORT), S3_DIR (its data directory)
# and S3_LOG (its log: one "info:" line per request), and stops the server when the test
# exits. Path-style requests go to 127.0.0.1; virtual-hosted ones to BUCKET.s3.localhost
# (curl resolves *.localhost to loopback). s3rver checks the access key id of every request, but not V4 signatures.
#
# s3rver 3.7 makes continuation tokens with DES, which OpenSSL 3 keeps in its legacy
# provider: node runs with --openssl-legacy-provider.

S3_PID=""
S3_ENDPOINT=""
S3_DIR=$TEST_TMP/s3rver
S3_LOG=$TEST_TMP/s3rver.log

_s3_on_exit() {
    [[ -n $S3_PID ]] && kill "$S3_PID" 2>/dev/null
    return 0
}
at_exit '_lib_on_exit; _s3_on_exit'

_s3_free_port() { free_port; } # lib.sh: reserved for this run

_s3_ready() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# s3_start BUCKET...: start the server; on failure the test cannot go on (one failure).
s3_start() {
    if ! command -v s3rver >/dev/null; then
        fail "s3rver is not installed" "HINT: scripts/install-deps.sh installs it (npm install -g s3rver)"
        test_done
    fi
    local port args=() b
    port=$(_s3_free_port)
    mkdir -p "$S3_DIR"
    for b in "$@"; do args+=(--configure-bucket "$b"); done
    NODE_OPTIONS=--openssl-legacy-provider exec_bg_s3 s3rver -d "$S3_DIR" -a 127.0.0.1 -p "$port" \
        --service-endpoint localhost "${args[@]}"
    if ! wait_until 30 _s3_ready "$port"; then
        fail "s3rver did not start listening on 127.0.0.1:$port within 30 s" "$(_tail "$S3_LOG" 30)"
        test_done
    fi
    S3_ENDPOINT=http://127.0.0.1:$port
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    unset AWS_SESSION_TOKEN AWS_REGION AWS_DEFAULT_REGION
    note "s3rver on $S3_ENDPOINT"
}

exec_bg_s3() {
    "$@" >"$S3_LOG" 2>&1 </dev/null &
    S3_PID=$!
}

# s3_requests: how many requests the server has answered so far.
# (s3rver writes durations of a second or more as "1,234ms")
s3_requests() { grep -cE ' [0-9]{3} [0-9.,]+ms' "$S3_LOG" 2>/dev/null; }
