#!/usr/bin/env python3
"""A client of the daemon's HTTP API for test_api.sh (standard library only).

  api_client.py req BASE METHOD PATH [TOKEN|-] [BODY|-]   one request: prints the status on
                                                          the first line, the body after it
  api_client.py wait BASE TOKEN JOB_ID SECONDS            polls the job until it is done;
                                                          prints its JSON (exit 1 at the deadline)
  api_client.py versions BASE [CAFILE]                   request lines with bad HTTP versions
                                                          (over TLS with CAFILE): "STATUS name"
                                                          per case, "CRASH name" when no answer
  api_client.py knock BASE SRC N                         N requests without a credential from
                                                          SRC: their statuses on one line
  api_client.py hold BASE SRC N                          N half request lines from SRC held
                                                          open, then one more (see hold())
  api_client.py handed BASE TOKEN N                      N requests held by libmicrohttpd (their
                                                          bodies never come), then one more from
                                                          the same address (see handed())
  api_client.py bad BASE ADMIN VIEWER CRON_SECRET        the bad inputs: prints one line per
                                                          case "STATUS name", and "CRASH name"
                                                          when the server closed without an
                                                          answer
  api_client.py fuzz BASE ADMIN VIEWER CRON_SECRET SEED N
                                                          N requests mutated from valid ones,
                                                          the same for the same SEED: prints
                                                          the statuses' counts, and a "FAIL"
                                                          line for each 5xx, each 4xx without
                                                          a JSON error, and a server gone
"""
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse


def split(base):
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port


def request(base, method, path, token=None, body=None, headers=None, src=None):
    """src: the client's address (another loopback address: the server's count of failed
    authentications is per address)."""
    host, port = split(base)
    src = src or os.environ.get("API_SRC")
    c = http.client.HTTPConnection(host, port, timeout=30,
                                   source_address=(src, 0) if src else None)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    if body is not None and "Content-Type" not in h:
        h["Content-Type"] = "application/json"
    h = {k: v for k, v in h.items() if v is not None}  # None: leave the header out
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def raw(base, data, read_timeout=20, cafile=None, parts=None, src=None):
    """Sends bytes as they are (in separate sends of parts, when given); returns the status
    of the answer (0: none)."""
    host, port = split(base)
    s = socket.create_connection((host, port), timeout=read_timeout,
                                 source_address=(src, 0) if src else None)
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
        s = ctx.wrap_socket(s, server_hostname=host)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for p in parts or [data]:
            s.sendall(p)
        try:
            if not cafile:  # (a TLS socket cannot half-close)
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, BrokenPipeError, socket.timeout, ssl.SSLError):
        buf = b""
    finally:
        s.close()
    if not buf.startswith(b"HTTP/1."):
        return 0
    return int(buf.split(b" ")[1])


def bad_cases(admin, viewer, cron):
    """(name, method, path, token, body, headers) of the bad inputs."""
    J = {"Content-Type": "application/json"}
    cases = []
    posts = ["/api/admin/backup/create", "/api/admin/backup/verify", "/api/admin/backup/restore"]
    bodies = [
        "", "{", "}", "[]", "null", "1", '"x"', "{'a': 1}", '{"type": }', '{"type": "full",}',
        "\x00\x01\x02", '{"type": "full"} trailing', "\xff\xfe",
        '{"type": 1}', '{"type": null}', '{"type": []}', '{"type": {}}', '{"type": "FULL"}',
        '{"type": "differential"}', '{"type": "full", "includeFiles": "yes"}',
        '{"type": "full", "includeFiles": 1}', '{"type": "full", "extra": true}',
        '{"type": "full", "type": "incremental"}', '{"type": "' + "f" * 5000 + '"}',
        '{"backupId": 1}', '{"backupId": null}', '{"backupId": ""}', '{"backupId": "../../etc/passwd"}',
        '{"backupId": "/etc/passwd"}', '{"backupId": "a/b"}', '{"backupId": "..", "type": "files"}',
        '{"backupId": "x\\u0000y"}', '{"backupId": "x\\ny"}', '{"backupId": "' + "a" * 300 + '"}',
        '{"backupId": "caris_full_1999-01-01T00-00-00"}', '{"backupId": "latest", "type": "tape"}',
        '{"backupId": "latest", "type": 7}', '{"backupId": ["latest"]}',
        '{"backupId": "latest", "dryRun": "false"}', '{"backupId": "latest", "dryRun": false}',
        '{"backupId": "latest:database", "dryRun": false, "confirm": "wrong"}',
        '{"backupId": "latest:database", "target": "/tmp/x"}',
        '{"backupId": "latest:files", "targetUrl": "postgresql://x"}',
        '{"backupId": "latest:files", "dryRun": false, "confirm": "x"}',
        '{"backupId": "latest", "verify": "yes"}', '{"backupId": "latest", "confirm": 5}',
        '{"a": {"b": {"c": {"d": [[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]}}}}',
        '[' * 3000 + ']' * 3000,
    ]
    for p in posts:
        for i, b in enumerate(bodies):
            cases.append(("%s body %d" % (p, i), "POST", p, admin, b, J))
    for p in posts:
        cases.append((p + " no content type", "POST", p, admin, '{"type": "full"}',
                      {"Content-Type": None}))
        cases.append((p + " text/plain", "POST", p, admin, '{"type": "full"}',
                      {"Content-Type": "text/plain"}))
        cases.append((p + " json-ish type", "POST", p, admin, '{"type": "full"}',
                      {"Content-Type": "application/jsonx"}))
        # (accepted by a prefix check, found by a review; the body is read as UTF-8)
        for ct in ["application/json garbage", "application/json; charset=utf-16",
                   "application/json;charset=latin1", "application/json; boundary=x"]:
            cases.append((p + " type " + ct, "POST", p, admin, '{"type": "full"}',
                          {"Content-Type": ct}))
        cases.append((p + " query", "POST", p + "?type=full", admin, '{"type": "full"}', J))
        cases.append((p + " huge body", "POST", p, admin, "{" + " " * (1 << 20) + "}", J))
        for m in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]:
            cases.append((p + " " + m, m, p, admin, None, {}))
    gets = ["/api/admin/backup/list", "/api/admin/backup/status", "/api/cron/backup"]
    for p in gets:
        for m in ["POST", "PUT", "DELETE"]:
            cases.append((p + " " + m, m, p, admin, "{}", J))
    for q in ["includeFiles=yes", "includeStats=1", "includeFiles=", "bogus=true",
              "includeFiles=true&includeFiles=false", "includeFiles=%00", "includeStats=%ff",
              "includeFiles=true&includeFiles=true", "includeStats", "includeFiles&includeStats=true"]:
        cases.append(("list ?" + q, "GET", "/api/admin/backup/list?" + q, viewer, None, {}))
    cases.append(("list with a body", "GET", "/api/admin/backup/list", viewer, '{"a":1}', J))
    for q in ["foo=bar", "verbose=1", "x"]:
        cases.append(("status ?" + q, "GET", "/api/admin/backup/status?" + q, viewer, None, {}))
        cases.append(("jobs/job-1-1 ?" + q, "GET", "/api/admin/backup/jobs/job-1-1?" + q, viewer,
                      None, {}))
    for jid in ["job-1", "job-0-0", "job-999999999-1", "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd",
                "job-1-1/../../x", "%00", "job-" + "9" * 100, "JOB-1-1", "job--", "job-1-1%0a"]:
        cases.append(("jobs/" + jid, "GET", "/api/admin/backup/jobs/" + jid, viewer, None, {}))
    for p in ["/", "/api", "/api/admin/backup", "/api/admin/backup/", "/api/admin/backup/jobs/",
              "/api/admin/backup/list/", "/API/ADMIN/BACKUP/LIST", "/api/admin/backup/../backup/list",
              "/%2e%2e/%2e%2e/etc/passwd", "/healthz/x", "/api/cron/backup/x"]:
        cases.append(("path " + p, "GET", p, admin, None, {}))
    for ty in ["FULL", "x", "", "full&type=incremental", "%00"]:
        cases.insert(0, ("cron type=" + ty, "GET", "/api/cron/backup?type=" + ty, cron, None, {}))
    return cases


def run_bad(base, admin, viewer, cron):
    n = 0
    run_raw(base, admin)
    cases = bad_cases(admin, viewer, cron)
    # bad credentials last, from another loopback address: the server makes an address that
    # keeps failing wait (429), which is part of what they test
    for t in ["", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "bearer " + "x" * 600,
              "Bearer \t", "Token " + admin, "Bearer " + admin + "x", "Bearer " + admin[:-1],
              "Bearer " + admin.upper()]:
        cases.append(("auth '%s'" % t[:20], "GET", "/api/admin/backup/status", None, None,
                      {"Authorization": t}, "127.0.0.2"))
    for case in cases:
        name, method, path, token, body, headers = case[:6]
        src = case[6] if len(case) > 6 else None
        n += 1
        try:
            status, _, _ = request(base, method, path, token, body, headers, src)
        except (http.client.HTTPException, ConnectionError, socket.timeout) as e:
            # the server may close a connection whose body it refused (413) before the client
            # finished sending: a refusal, not a crash, when the server still answers
            st = raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            print("%s %s (%s)" % ("CLOSED" if st == 200 else "CRASH", name, type(e).__name__))
            continue
        print("%d %s" % (status, name))
    print("TOTAL %d" % n, file=sys.stderr)


def run_raw(base, admin):
    """Broken framing and headers, sent as bytes."""
    raws = {
        "garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",
        "no host": b"GET /healthz HTTP/1.1\r\n\r\n",
        "http/0.9": b"GET /healthz\r\n\r\n",
        "bad version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n",
        "huge header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100000 + b"\r\n\r\n",
        "many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n",
        "huge url": b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "negative length": b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "huge length": b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "two lengths": b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}",
        "bad chunk": b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "duplicate auth": b"GET /api/admin/backup/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + admin.encode() + b"\r\nAuthorization: Bearer " + admin.encode() + b"\r\n\r\n",
        "duplicate content type": b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + admin.encode() + b"\r\nContent-Type: application/json\r\nContent-Type: application/json\r\n"
        b"Content-Length: 16\r\n\r\n{\"type\": \"full\"}",
        "unknown method": b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "nul in path": b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
        # libmicrohttpd read the target up to the NUL: served (and audited) as the path before it
        "nul before the version": b"GET /api/admin/backup/status\x00junk HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + admin.encode() + b"\r\n\r\n",
        # read as a C string, the token would end at the NUL and be taken
        "nul in auth": b"GET /api/admin/backup/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + admin.encode() + b"\x00junk\r\n\r\n",
    }
    for name, data in raws.items():
        st = raw(base, data)
        if st == 0:
            hz = raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            print("%s raw %s" % ("CLOSED" if hz == 200 else "CRASH", name))
        else:
            print("%d raw %s" % (st, name))


VERSIONS = [
    "HTTP/2.0", "HTTP/2", "HTTP/3.0", "HTTP/3.1", "HTTP/0.9", "HTTP/1.2", "HTTP/1.9", "HTTP/9.9",
    "HTTP/1.1 ", "HTTP/1.1  ", "HTTP/11.1", "HTTP/1.10", "HTTP/1", "HTTP/1.", "HTTP/1.x",
    "http/1.1", "HTTPS/1.1", "HTTP/\x001.1", "HTTP/1.1\x00", "\xff\xfe", "-", "",
]


def run_versions(base, cafile=None):
    """Request lines with unusual versions: none may be answered with a 5xx."""
    def show(st, what):
        if not st:  # no answer: closed on purpose when the server still answers
            hz = raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", cafile=cafile)
            st = "CLOSED" if hz == 200 else "CRASH"
        print("%s %s" % (st, what))
    for v in VERSIONS:
        line = b"GET /healthz " + v.encode("latin-1") + b"\r\nHost: x\r\n\r\n"
        show(raw(base, line, cafile=cafile), "version %r" % v)
    cases = {
        "no version": b"GET /healthz\r\nHost: x\r\n\r\n",
        "only a method": b"GET\r\nHost: x\r\n\r\n",
        "no method": b" /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "empty lines then HTTP/2.0": b"\r\n\n\r\nGET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        "empty lines then HTTP/1.1": b"\r\n\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "bare LF": b"GET /healthz HTTP/3.0\nHost: x\n\n",
        "CR only": b"GET /healthz HTTP/1.1\rHost: x\r\r",
        "long line": b"GET /" + b"a" * 5000 + b" HTTP/2.0\r\nHost: x\r\n\r\n",
        "space in target": b"GET /health z HTTP/2.0\r\nHost: x\r\n\r\n",
        "PRI (HTTP/2 preface)": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    }
    for name, data in cases.items():
        show(raw(base, data, cafile=cafile), "line " + name)
    # the request line in pieces (separate sends, no delay asked of anyone)
    line = b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n"
    show(raw(base, line, cafile=cafile, parts=[line[:5], line[5:15], line[15:]]),
         "line dribbled HTTP/2.0")
    line = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    show(raw(base, line, cafile=cafile, parts=[line[:5], line[5:15], line[15:]]),
         "line dribbled HTTP/1.1")


def pipelined(base, cafile=None):
    """A good request, then one with HTTP/2.0 on the same connection: the whole answer."""
    host, port = split(base)
    s = socket.create_connection((host, port), timeout=20)
    if cafile:
        s = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname=host)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
    buf = b""
    try:
        while True:
            c = s.recv(4096)
            if not c:
                break
            buf += c
    except (ConnectionResetError, socket.timeout, ssl.SSLError):
        pass
    s.close()
    return [int(l.split(b" ")[1]) for l in buf.split(b"\r\n") if l.startswith(b"HTTP/1.")]


def hold(base, src, n):
    """n connections from src that send half a request line and wait; then one more from src,
    and one from elsewhere. Prints "extra STATUS" (0: closed without an answer) and "other
    STATUS"; then the first of the n finishes its request: "first STATUS"."""
    host, port = split(base)
    held = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=20, source_address=(src, 0))
        s.sendall(b"GET /heal")
        held.append(s)
    print("extra %d" % raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", src=src))
    print("other %d" % raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
    s = held[0]
    s.sendall(b"thz HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = s.recv(4096)
    print("first %s" % (int(buf.split(b" ")[1]) if buf.startswith(b"HTTP/1.") else 0))
    for s in held:
        s.close()


def idle(base, n, naddr):
    """n TCP connections (from 127.0.0.10 .. 127.0.0.(9 + naddr)) that send nothing; prints
    "ready" once all are accepted by the kernel, then holds them until stdin closes."""
    host, port = split(base)
    held = [socket.create_connection((host, port), timeout=20,
                                     source_address=("127.0.0.%d" % (10 + i % naddr), 0))
            for i in range(n)]
    print("ready", flush=True)
    sys.stdin.read()
    for s in held:
        s.close()


def burst(base, n, naddr, complete):
    """n connections at once from naddr addresses (127.0.5.1...), each sending a /healthz
    request (complete: with the empty line that ends its headers; else without) before any is
    read; then each answer is read (20 s at most each). Prints how many were answered 200."""
    host, port = split(base)
    socks = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=20,
                                     source_address=("127.0.5.%d" % (i % naddr + 1), 0))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + (b"\r\n" if complete else b""))
        socks.append(s)
    ok = 0
    for s in socks:
        if complete:
            try:
                ok += s.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
        s.close()
    print(ok)


def dribble(base, every, secs):
    """Headers sent a line every `every` seconds, never finished, for at most secs: prints
    "answered STATUS SECONDS" when the server answers (or "closed SECONDS"), else "open"."""
    host, port = split(base)
    s = socket.create_connection((host, port), timeout=every)
    start = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    k = 0
    while time.monotonic() - start < secs:
        try:
            buf = s.recv(4096)
        except socket.timeout:
            try:
                s.sendall(b"X-Dribble-%d: y\r\n" % k)
            except OSError:
                print("closed %d" % (time.monotonic() - start))
                return
            k += 1
            continue
        except OSError:
            buf = b""
        t = time.monotonic() - start
        if buf.startswith(b"HTTP/1."):
            print("answered %s %d" % (buf.split(b" ")[1].decode(), t))
        else:
            print("closed %d" % t)
        return
    print("open")


def endless(base, admin):
    """A chunked body that never ends, up to 64 MiB: "closed MiB" when the server closed the
    connection after that many MiB were sent, "open" when it took them all."""
    host, port = split(base)
    s = socket.create_connection((host, port), timeout=20)
    s.sendall(b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + admin.encode() + b"\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    sent = 0
    try:
        while sent < 64 << 20:
            s.sendall(chunk)
            sent += 0x10000
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        print("closed %d" % (sent >> 20))
        return
    finally:
        s.close()
    print("open")


# ---- fuzz: seeded, structure-aware mutations of valid requests ----------------------------

FUZZ_ROUTES = [  # (method, path, a valid body or None)
    ("POST", "/api/admin/backup/create", {"type": "full", "includeFiles": True}),
    ("POST", "/api/admin/backup/create", {"type": "incremental"}),
    ("POST", "/api/admin/backup/verify", {"backupId": "latest", "type": "files"}),
    ("POST", "/api/admin/backup/restore", {"backupId": "latest:files", "dryRun": True,
                                           "target": "/nonexistent/fuzz-target"}),
    ("GET", "/api/admin/backup/list", None),
    ("GET", "/api/admin/backup/status", None),
    ("GET", "/api/admin/backup/audit", None),
    ("GET", "/api/admin/backup/jobs/job-1-1", None),
    ("GET", "/api/cron/backup", None),
]
# field names a mutation may add: the endpoints' own and others, never "confirm" (no mutation
# may make a restore that is not a dry run)
FUZZ_NAMES = ["type", "includeFiles", "backupId", "dryRun", "verify", "target", "targetUrl",
              "clean", "create", "extra", "", "\u0000", "typ\u00e9", "__proto__", "x" * 300]


def fuzz_value(rng, depth=0):
    k = rng.randrange(14 if depth < 4 else 9)
    return [None, True, False, 0, -1, 2 ** 63, 1e308, -0.0, "", "full", "incremental",
            "latest", "files", "database"][k] if k < 9 or depth >= 4 else \
        [lambda: rng.choice(["latest:files", "latest:database", "../x", "/etc/passwd",
                             "caris_full_2024-01-15T03-00-00", "file_full_9999-99-99T99-99-99",
                             "a\u0000b", "\ud800", "\u2028", "%00", "x" * rng.choice([255, 256, 4097])]),
         lambda: [fuzz_value(rng, depth + 1) for _ in range(rng.randrange(4))],
         lambda: {rng.choice(FUZZ_NAMES): fuzz_value(rng, depth + 1) for _ in range(rng.randrange(3))},
         lambda: rng.choice([1.5, 10 ** 30, -(2 ** 64), 3]),
         lambda: "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 40)))][k - 9]()


def fuzz_body(rng, valid):
    doc = dict(valid or {})
    for _ in range(rng.randrange(1, 4)):
        m = rng.randrange(6)
        if m == 0 and doc:
            del doc[rng.choice(sorted(doc))]
        elif m == 1 and doc:
            doc[rng.choice(sorted(doc))] = fuzz_value(rng)
        elif m == 2:
            doc[rng.choice(FUZZ_NAMES)] = fuzz_value(rng)
        elif m == 3:
            doc = fuzz_value(rng)  # not an object at all, sometimes
            break
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    m = rng.randrange(8)
    if m == 0 and text:  # bytes flipped, cut or repeated
        b = bytearray(text)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        text = bytes(b)
    elif m == 1:
        text = text[:rng.randrange(len(text) + 1)]
    elif m == 2:
        text = text * rng.randrange(2, 4)
    elif m == 3:
        text = b" \t\r\n" * rng.randrange(3) + text + b"\x00" * rng.randrange(2)
    return text


def fuzz_path(rng, path):
    m = rng.randrange(10)
    if m == 0:
        path += "?" + "&".join(rng.choice(["dryRun=1", "a=b", "%zz", "=", "x=%00", "type=full",
                                           "since=" + "9" * 40, "&&", "k" * 300 + "=v"])
                               for _ in range(rng.randrange(1, 4)))
    elif m == 1:
        path += rng.choice(["/", "//", "/..", "/%2e%2e", "/x", "%00", "/" + "j" * 500])
    elif m == 2 and path.endswith("job-1-1"):
        path = path[:-len("job-1-1")] + rng.choice(["", "..", "job-", "job-%ff", "job-" + "9" * 60,
                                                      "job-1-1/x", "%2f", "job-1-1?x"])
    elif m == 3:
        path = path.upper() if rng.random() < 0.5 else path.replace("backup", "b%C3%A4ckup")
    return path


def handed(base, token, n):
    """N connections whose headers libmicrohttpd has taken (each sent Expect: 100-continue and
    got its 100 Continue) and whose bodies never come, then one request more from the same
    address: prints its status line and body (RESET: closed without an answer)."""
    host, port = split(base)
    held = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(b"POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + token.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            c = s.recv(1024)
            if not c:
                break
            got += c
        if not got.startswith(b"HTTP/1.1 100"):
            print("NOT-HELD %r" % got[:80])
            return
        held.append(s)
    s = socket.create_connection((host, port), timeout=40)
    s.sendall(b"GET /api/admin/backup/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + token.encode() + b"\r\n\r\n")
    data = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except ConnectionResetError:
        data = b""
    s.close()
    for h in held:
        h.close()
    if not data:
        print("RESET")
        return
    head, _, body = data.partition(b"\r\n\r\n")
    print(head.split(b"\r\n")[0].decode(), body.decode(errors="replace")[:100])


def run_fuzz(base, admin, viewer, cron, seed, n):
    """n requests made from seed; prints "STATUS-COUNTS ..." and one "FAIL ..." line for each
    answer that is a 5xx or a 4xx whose body is not a JSON object with "error", and for each
    request without an answer."""
    import random
    rng = random.Random(seed)
    counts = {}
    for i in range(n):
        method, path, valid = rng.choice(FUZZ_ROUTES)
        token = rng.choice([admin] * 8 + [viewer])
        headers = {}
        if path.startswith("/api/cron/"):
            token = None
            headers["Authorization"] = "Bearer " + cron
        if rng.random() < 0.1:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        body = fuzz_body(rng, valid) if method == "POST" or rng.random() < 0.05 else None
        if body is not None and rng.random() < 0.15:
            headers["Content-Type"] = rng.choice(["text/plain", "application/json; charset=latin1",
                                                  "application/JSON", "", "multipart/form-data"])
        path = fuzz_path(rng, path)
        name = "#%d %s %s" % (i, method, path[:80])
        try:
            status, data, _ = request(base, method, path, token, body, headers)
        except (http.client.HTTPException, ConnectionError, socket.timeout) as e:
            # the requests are well formed and small: every one gets an answer
            st = raw(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            print("FAIL %s: no answer (%s)%s" % (name, type(e).__name__,
                                                  "" if st == 200 else ", and the server is gone"))
            if st != 200:
                return
            continue
        counts[status] = counts.get(status, 0) + 1
        if status >= 500:
            print("FAIL %s: %d %r" % (name, status, data[:200]))
        elif status >= 400 and method != "HEAD":
            try:
                ok = isinstance(json.loads(data), dict) and "error" in json.loads(data)
            except ValueError:
                ok = False
            if not ok:
                print("FAIL %s: %d without a JSON error: %r" % (name, status, data[:200]))
    print("STATUS-COUNTS " + " ".join("%s:%d" % (k, counts[k]) for k in sorted(counts, key=str)))


def main():
    cmd = sys.argv[1]
    if cmd == "req":
        base, method, path = sys.argv[2:5]
        token = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
        body = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
        status, data, _ = request(base, method, path, token, body)
        print(status)
        sys.stdout.write(data.decode("utf-8", "replace"))
    elif cmd == "idle":
        idle(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "auth":  # BASE PATH VALUE: the status of a GET with that Authorization value
        status, _, _ = request(sys.argv[2], "GET", sys.argv[3], headers={"Authorization": sys.argv[4]})
        print(status)
    elif cmd == "wait":
        base, token, job, secs = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
        deadline = time.monotonic() + secs
        while True:
            status, data, _ = request(base, "GET", "/api/admin/backup/jobs/" + job, token)
            j = json.loads(data)
            if status == 200 and j.get("state") == "done":
                print(json.dumps(j))
                return 0
            if status != 200 or time.monotonic() > deadline:
                print(json.dumps(j))
                return 1
            time.sleep(0.05)
    elif cmd == "versions":
        cafile = sys.argv[3] if len(sys.argv) > 3 else None
        run_versions(sys.argv[2], cafile)
        print("pipelined %s" % " ".join(map(str, pipelined(sys.argv[2], cafile))))
    elif cmd == "knock":  # N requests without a credential from SRC: their statuses
        base, src, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(" ".join(str(request(base, "GET", "/api/admin/backup/status", src=src)[0])
                       for _ in range(n)))
    elif cmd == "knock2":  # N requests with two Authorization headers from SRC: their statuses
        base, src, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        data = (b"GET /api/admin/backup/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\n"
                b"Authorization: Bearer b\r\nConnection: close\r\n\r\n")
        print(" ".join(str(raw(base, data, src=src)) for _ in range(n)))
    elif cmd == "endless":
        endless(sys.argv[2], sys.argv[3])
    elif cmd == "burst":
        burst(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1")
    elif cmd == "dribble":
        dribble(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "hold":
        hold(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "handed":
        handed(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "bad":
        run_bad(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif cmd == "fuzz":
        run_fuzz(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]),
                 int(sys.argv[7]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
