#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the S3 tests: listens on 127.0.0.1:PORT and forwards
each request to the S3 server at UPSTREAM, except that it spoils some of them on purpose.

usage: faultproxy.py --port PORT --upstream HOST:PORT --stats FILE
                     [--every N] [--faults 500,503,drop,cut,truncate,delay]
                     [--always KIND --match SUBSTRING [--method METHOD] [--times N]]
                     [--if-none-match] [--verify-sigv4 SECRET]
                     [--hold N --match S [--method M]] [--fail-object K --match S [--method M]]
                     [--checksums [--echo-checksums N]]

--every N: every Nth request (counted over all connections) gets the next fault of the
  --faults cycle:
    500       answer 500 InternalError, not forwarded
    503       answer 503 SlowDown, not forwarded
    retryafter  answer 503 SlowDown with "Retry-After: 2", not forwarded; "retry_after_gap_min"
              is the shortest time (s) the client then waited before sending the request again
    drop      read the request, close the connection without an answer, not forwarded
    cut       forward, then close after the status line and headers (body promised, none sent)
    truncate  forward, then send half of the body under the full Content-Length and close
    delay     forward after 300 ms
    region    answer 400 AuthorizationHeaderMalformed naming region eu-west-1 (as S3 does
              for a request signed for another region), not forwarded
    skew      answer 403 RequestTimeTooSkewed (as S3 does for a request signed with a clock
              more than 15 minutes off), not forwarded
    empty     answer 200 OK with an empty body, not forwarded (a proxy that swallows it)
    html      answer 200 OK with an HTML page, not forwarded (a captive portal)
    page404   answer 404 Not Found with an HTML page, not forwarded (a web server that is no
              S3 server: a wrong host or port in the location)
    reqtimeout  answer 400 RequestTimeout, not forwarded (as S3 does for an upload that stalled:
              a transient error under a 4xx status)
    aborted   answer 409 OperationAborted, not forwarded (a conflicting operation in progress:
              transient too)
    invalid   answer 400 InvalidArgument, not forwarded (a request S3 refuses for good)
    notoken   forward without the query's continuation-token (a server that ignores it and
              answers the first page of a listing again)
    denied    answer 403 AccessDenied, not forwarded (credentials that may read but not write)
    expired   answer 400 ExpiredToken, not forwarded (as S3 does for a session token that expired)
  A request whose previous attempt (same method and path) was spoiled is always forwarded
  untouched, so no request fails twice in a row: a client that retries always gets through
  (the bound the tests rely on, independent of thread timing).
--always KIND --match S [--method M] [--times N]: every request whose path contains S (and
  whose method is M, when given) gets fault KIND (a server that keeps failing); with --times,
  only the first N such requests. "always_objects" counts the distinct objects (paths) so
  spoiled: as many faults as objects means that none was asked for twice (no retry).
--if-none-match: a PUT with "If-None-Match: *" of an object that exists is answered 412
  PreconditionFailed and not forwarded, as AWS S3 does (s3rver ignores the header).
--verify-sigv4 SECRET: checks the AWS Signature V4 of every request (rebuilt here from what
  arrived: method, path, query, the signed headers) with the secret key, and that
  x-amz-content-sha256 is the SHA-256 of the body; a request that fails is answered 403
  SignatureDoesNotMatch and counted as "sig_bad" ("sig_ok" otherwise). An implementation
  independent of the C one, run on every request shape the program sends.
--hold N: the first N requests matching --match / --method are held (not forwarded yet)
  until N of them are held at once, then all go on: proof that a client has N such requests
  in flight together ("max_held" counts the most held at once). With --fail-object, a held
  request goes on instead once the failing object has been refused 3 times: proof that the
  client sends other requests while one keeps failing. Either way a hold ends after 20 s
  ("hold_timeouts"), so a client that sends one request at a time is slowed, never stuck.
--fail-object K: the K-th distinct object (path) of the requests matching --match / --method
  is answered 503 SlowDown every time ("failed_object" is its path, "object_fails" the count).
--checksums: checks PUTs as AWS S3 does: an x-amz-checksum-sha256 or Content-MD5 that is not
  the body's is answered 400 BadDigest, not forwarded ("bad_digest"); a stored PUT's answer
  carries the x-amz-checksum-sha256 it checked ("checksum_echoed"), which s3rver's does not.
  PUTs with and without Content-MD5 are counted ("put_md5", "put_no_md5"). With
  --echo-checksums N, only the first N answers carry it (a server that stops confirming).
The counts of what it did go to --stats as JSON after every request.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import re
import urllib.parse
import json
import socket
import socketserver
import threading
import time

ERR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
       '<Message>injected by faultproxy</Message></Error>')

# fault kinds answered with an error document: kind -> (status, reason, S3 code)
ERROR_KINDS = {
    "500": (500, "Internal Server Error", "InternalError"),
    "503": (503, "Slow Down", "SlowDown"),
    "reqtimeout": (400, "Bad Request", "RequestTimeout"),
    "aborted": (409, "Conflict", "OperationAborted"),
    "invalid": (400, "Bad Request", "InvalidArgument"),
    "denied": (403, "Forbidden", "AccessDenied"),
    "expired": (400, "Bad Request", "ExpiredToken"),
}


def sigv4_problem(secret, method, path, headers, body):
    """None when the request's SigV4 signature and payload hash are right, else why not."""
    h = {}
    for name, value in headers:
        h.setdefault(name.lower(), []).append(value)
    auth = (h.get("authorization") or [""])[0]
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                     r"\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})", auth)
    if not m:
        return "malformed Authorization header"
    _, day, region, service, signed, signature = m.groups()
    payload = (h.get("x-amz-content-sha256") or [""])[0]
    if payload != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the SHA-256 of the body"
    amz_date = (h.get("x-amz-date") or [""])[0]
    if not amz_date.startswith(day):
        return "x-amz-date is not the credential's day"
    raw_path, _, raw_query = path.partition("?")
    def enc(s):
        return urllib.parse.quote(s, safe="-_.~")
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        k, _, v = part.partition("=")
        pairs.append((enc(urllib.parse.unquote(k)), enc(urllib.parse.unquote(v))))
    query = "&".join("%s=%s" % kv for kv in sorted(pairs))
    names = signed.split(";")
    if names != sorted(names) or "host" not in names:
        return "SignedHeaders not sorted or without host"
    canon = ""
    for n in names:
        if n not in h:
            return "signed header %s not sent" % n
        canon += "%s:%s\n" % (n, ",".join(" ".join(v.split()) for v in h[n]))
    creq = "\n".join([method, raw_path, query, canon, signed, payload])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, "%s/%s/%s/aws4_request" % (day, region, service),
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    want = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, signature) else "signature mismatch"


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.n = 0
        self.cycle = 0
        self.spoiled_last = set()
        self.retry_after_at = {}  # (method, path) -> when its retryafter answer was sent
        self.stats = {"requests": 0, "forwarded": 0}
        self.cond = threading.Condition(self.lock)
        self.holds_left = args.hold
        self.held = 0
        self.objects = []  # distinct paths matching --match / --method, in order
        self.always_paths = set()  # distinct paths given the --always fault

    def matches(self, method, path):
        return self.args.match in path and (not self.args.method or self.args.method == method)

    def fail_object(self, method, path):
        """True when this request is of the object --fail-object refuses."""
        if not self.args.fail_object or not self.matches(method, path):
            return False
        with self.lock:
            p = path.split("?")[0]
            if p not in self.objects:
                self.objects.append(p)
            if self.objects.index(p) + 1 != self.args.fail_object:
                return False
            self.stats["failed_object"] = p
            self.stats["object_fails"] = self.stats.get("object_fails", 0) + 1
            self.cond.notify_all()
            return True

    def hold(self, method, path):
        """Holds the first --hold matching requests (see the usage above)."""
        if not self.args.hold or not self.matches(method, path):
            return
        with self.lock:
            if self.holds_left == 0:
                return
            self.holds_left -= 1
            self.held += 1
            self.stats["max_held"] = max(self.stats.get("max_held", 0), self.held)
            self.cond.notify_all()
            def released():
                if self.args.fail_object:
                    return self.stats.get("object_fails", 0) >= 3
                return self.stats["max_held"] >= self.args.hold
            if not self.cond.wait_for(released, timeout=20):
                self.stats["hold_timeouts"] = self.stats.get("hold_timeouts", 0) + 1
            self.held -= 1

    def decide(self, method, path, arrived):
        with self.lock:
            self.n += 1
            self.stats["requests"] += 1
            if "continuation-token=" in path:
                self.stats["continued_lists"] = self.stats.get("continued_lists", 0) + 1
            key = (method, path.split("?")[0])
            if (self.args.always and self.args.match in path and
                    (not self.args.method or self.args.method == method) and
                    (not self.args.times or self.stats.get(self.args.always, 0) < self.args.times)):
                kind = self.args.always
                self.always_paths.add(key[1])
                self.stats["always_objects"] = len(self.always_paths)
            elif key in self.spoiled_last:
                self.spoiled_last.discard(key)
                kind = None
                t = self.retry_after_at.pop(key, None)
                if t is not None:
                    gap = round(arrived - t, 3)
                    old = self.stats.get("retry_after_gap_min")
                    self.stats["retry_after_gap_min"] = gap if old is None else min(old, gap)
            elif self.args.every and self.n % self.args.every == 0:
                kinds = self.args.faults.split(",")
                kind = kinds[self.cycle % len(kinds)]
                self.cycle += 1
            else:
                kind = None
            if kind and kind != "delay":
                self.spoiled_last.add(key)
            if kind == "retryafter":
                self.retry_after_at[key] = time.monotonic()  # about when the answer goes out
            if kind:
                self.stats[kind] = self.stats.get(kind, 0) + 1
            return kind

    def save(self):
        with self.lock:
            text = json.dumps(self.stats)
        with open(self.args.stats + ".tmp", "w") as f:
            f.write(text)
        import os
        os.replace(self.args.stats + ".tmp", self.args.stats)


def read_request(rf):
    line = rf.readline(65537)
    if not line:
        return None
    arrived = time.monotonic()  # before the body (a client may wait for 100 Continue first)
    method, path, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = []
    while True:
        h = rf.readline(65537).decode("latin-1")
        if h in ("\r\n", "\n", ""):
            break
        name, value = h.rstrip("\r\n").split(":", 1)
        headers.append((name, value.strip()))
    length = 0
    for name, value in headers:
        if name.lower() == "content-length":
            length = int(value)
    body = rf.read(length) if length else b""
    return method, path, headers, body, arrived


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        st = self.server.state
        up_host, up_port = st.args.upstream.rsplit(":", 1)
        while True:
            try:
                req = read_request(self.rfile)
            except (ValueError, OSError):
                return
            if req is None:
                return
            method, path, headers, body, arrived = req
            if st.args.verify_sigv4:
                why = sigv4_problem(st.args.verify_sigv4, method, path, headers, body)
                with st.lock:
                    k = "sig_bad" if why else "sig_ok"
                    st.stats[k] = st.stats.get(k, 0) + 1
                    if why:
                        st.stats.setdefault("sig_bad_why", []).append("%s %s: %s" % (method, path, why))
                if why:
                    self.send_error_doc(403, "Forbidden", "SignatureDoesNotMatch")
                    st.save()
                    continue
            if st.fail_object(method, path):
                self.send_error_doc(503, "Slow Down", "SlowDown")
                st.save()
                continue
            st.hold(method, path)
            kind = st.decide(method, path, arrived)
            try:
                keep = self.serve(kind, method, path, headers, body, up_host, int(up_port))
            finally:
                st.save()
            if not keep:
                return

    def send_error_doc(self, status, reason, code):
        doc = ERR.format(code=code).encode()
        self.wfile.write(("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
                          "Content-Length: %d\r\n\r\n" % (status, reason, len(doc))).encode() + doc)
        self.wfile.flush()

    def serve(self, kind, method, path, headers, body, up_host, up_port):
        st = self.server.state
        if kind in ERROR_KINDS:
            self.send_error_doc(*ERROR_KINDS[kind])
            return True
        if kind == "retryafter":
            doc = ERR.format(code="SlowDown").encode()
            self.wfile.write(("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                              "Retry-After: 2\r\nContent-Length: %d\r\n\r\n" % len(doc)).encode() + doc)
            self.wfile.flush()
            return True
        if kind == "region":
            doc = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed'
                   '</Code><Message>the region is wrong</Message><Region>eu-west-1</Region></Error>').encode()
            self.wfile.write(("HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\n"
                              "Content-Length: %d\r\n\r\n" % len(doc)).encode() + doc)
            self.wfile.flush()
            return True
        if kind == "skew":
            doc = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>RequestTimeTooSkewed</Code>'
                   '<Message>The difference between the request time and the current time is too '
                   'large.</Message><RequestTime>20270101T000000Z</RequestTime>'
                   '<ServerTime>2026-12-03T10:00:00Z</ServerTime><MaxAllowedSkewMilliseconds>900000'
                   '</MaxAllowedSkewMilliseconds></Error>').encode()
            self.wfile.write(("HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                              "Content-Length: %d\r\n\r\n" % len(doc)).encode() + doc)
            self.wfile.flush()
            return True
        if kind in ("empty", "html", "page404"):
            doc = b"" if kind == "empty" else b"<html><body>Please sign in</body></html>\n"
            ctype = "application/xml" if kind == "empty" else "text/html"
            status = "404 Not Found" if kind == "page404" else "200 OK"
            self.wfile.write(("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                              % (status, ctype, len(doc))).encode() + doc)
            self.wfile.flush()
            return True
        if kind == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if kind == "delay":
            time.sleep(0.3)
        if kind == "notoken":
            path = re.sub(r"&?continuation-token=[^&]*", "", path).replace("?&", "?")
        echo = None
        if st.args.checksums and method == "PUT":
            h = {n.lower(): v.strip() for n, v in headers}
            sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            with st.lock:
                k = "put_md5" if "content-md5" in h else "put_no_md5"
                st.stats[k] = st.stats.get(k, 0) + 1
                bad = (h.get("x-amz-checksum-sha256", sha) != sha or
                       h.get("content-md5", md5) != md5)
                if bad:
                    st.stats["bad_digest"] = st.stats.get("bad_digest", 0) + 1
            if bad:
                self.send_error_doc(400, "Bad Request", "BadDigest")
                return True
            if "x-amz-checksum-sha256" in h:
                with st.lock:
                    n = st.stats.get("checksum_echoed", 0)
                    if not st.args.echo_checksums or n < st.args.echo_checksums:
                        st.stats["checksum_echoed"] = n + 1
                        echo = sha
        if (st.args.if_none_match and method == "PUT" and
                any(n.lower() == "if-none-match" and v.strip() == "*" for n, v in headers)):
            probe = http.client.HTTPConnection(up_host, up_port, timeout=60)
            probe.putrequest("HEAD", path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in ("connection", "content-length", "if-none-match"):
                    probe.putheader(name, value)
            probe.endheaders()
            exists = probe.getresponse().status == 200
            probe.close()
            if exists:
                with st.lock:
                    st.stats["412"] = st.stats.get("412", 0) + 1
                self.send_error_doc(412, "Precondition Failed", "PreconditionFailed")
                return True
        conn = http.client.HTTPConnection(up_host, up_port, timeout=60)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in ("connection", "content-length"):
                conn.putheader(name, value)
        if method in ("PUT", "POST") or body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if body else None)
        resp = conn.getresponse()
        data = resp.read()
        out_headers = [(n, v) for n, v in resp.getheaders()
                       if n.lower() not in ("transfer-encoding", "connection", "content-length")]
        if echo and 200 <= resp.status < 300:
            out_headers.append(("x-amz-checksum-sha256", echo))
        if kind in ("kms", "badetag") and method == "PUT" and 200 <= resp.status < 300:
            # kms: as a server that encrypts with its own keys (SSE-KMS) answers: an ETag of 32
            # hex digits that is not the MD5 of the bytes, and the header that says so;
            # badetag: an ETag that is not the MD5, and nothing that explains it
            out_headers = [(n, v) for n, v in out_headers if n.lower() != "etag"]
            out_headers.append(("ETag", '"%s"' % hashlib.md5(b"not the md5" + body).hexdigest()))
            if kind == "kms":
                out_headers.append(("x-amz-server-side-encryption", "aws:kms"))
        conn.close()
        with st.lock:
            st.stats["forwarded"] += 1
        length = resp.getheader("Content-Length") if method == "HEAD" else str(len(data))
        head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason)
        for n, v in out_headers:
            head += "%s: %s\r\n" % (n, v)
        if length is not None:
            head += "Content-Length: %s\r\n" % length
        head += "\r\n"
        if kind == "cut" and method != "HEAD" and data:
            self.wfile.write(head.encode("latin-1"))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if kind in ("cut", "truncate") and (method == "HEAD" or not data):
            # nothing to cut short: lose the whole answer (the request did reach the server)
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if kind == "truncate":
            self.wfile.write(head.encode("latin-1") + data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        self.wfile.write(head.encode("latin-1") + (b"" if method == "HEAD" else data))
        self.wfile.flush()
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--every", type=int, default=0)
    ap.add_argument("--faults", default="500,503,drop,cut,truncate,delay")
    ap.add_argument("--always", default="")
    ap.add_argument("--match", default="")
    ap.add_argument("--method", default="")
    ap.add_argument("--times", type=int, default=0)
    ap.add_argument("--if-none-match", action="store_true")
    ap.add_argument("--verify-sigv4", default="")
    ap.add_argument("--hold", type=int, default=0)
    ap.add_argument("--fail-object", type=int, default=0)
    ap.add_argument("--checksums", action="store_true")
    ap.add_argument("--echo-checksums", type=int, default=0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.state = State(args)
    srv.state.save()
    srv.serve_forever()


if __name__ == "__main__":
    main()
