#!/usr/bin/python3
# Servers on loopback for tests/integration/test_notify.sh. Run with /usr/bin/python3 (the
# Debian python3-aiosmtpd is installed for it). Each binds 127.0.0.1 on a free port chosen
# by the kernel, listens, and only then writes the port to DIR/port (atomically): a test
# that sees the file can connect. Each received message is written to DIR/msg-N.json (and
# the SMTP message's bytes to DIR/msg-N.eml), atomically too.
#
#   notify_servers.py smtp DIR [--auth USER:PASSWORD] [--tls CERT:KEY]
#                                                       an SMTP server (aiosmtpd); --auth:
#                                                         AUTH required (without TLS unless
#                                                         --tls); --tls: STARTTLS offered and
#                                                         required before MAIL; --smtps
#                                                         CERT:KEY: TLS from the first byte;
#                                                         --fail-data N: the first N messages
#                                                         get 451 after the recipients;
#                                                         --port P: on port P (a server that
#                                                         comes up where a daemon already
#                                                         sends), not a free one
#   notify_servers.py http DIR [--fail N] [--status S]  a webhook receiver: the first N
#                                                         POSTs get status S (default 500),
#                                                         then 200 "ok"
#   notify_servers.py refuse DIR                        a port bound but not listening:
#                                                         connections are refused
#   notify_servers.py blackhole DIR                     accepts connections, never answers;
#                                                         DIR/connections counts them
import json
import os
import signal
import socket
import sys
import threading


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Recorder:
    def __init__(self, d):
        self.dir = d
        self.n = 0
        self.lock = threading.Lock()

    def record(self, meta, raw=None):
        with self.lock:
            self.n += 1
            n = self.n
        if raw is not None:
            write_atomic(os.path.join(self.dir, "msg-%d.eml" % n), raw)
        write_atomic(os.path.join(self.dir, "msg-%d.json" % n), json.dumps(meta).encode())


def bound_socket(listen=True, port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    if listen:
        s.listen(16)
    return s


def announce(d, sock):
    write_atomic(os.path.join(d, "port"), str(sock.getsockname()[1]).encode())


def run_smtp(d, auth, tls, smtps, refuse_rcpt=None, port=0, fail_data=0):
    import asyncio
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    rec = Recorder(d)
    attempts = {"auth_fail": 0, "data": 0}

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            # --refuse-rcpt ADDR: that recipient is unknown (550), the others are taken
            if refuse_rcpt is not None and address == refuse_rcpt:
                return "550 5.1.1 no such user here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            # --fail-data N: the first N messages get 451 (a transient failure), counted in
            # DIR/data-failures
            if attempts["data"] < fail_data:
                attempts["data"] += 1
                write_atomic(os.path.join(d, "data-failures"), str(attempts["data"]).encode())
                return "451 4.3.0 try again later"
            login = None
            if isinstance(session.auth_data, LoginPassword):
                login = session.auth_data.login.decode()
            elif session.auth_data is not None:
                login = str(session.auth_data)
            rec.record(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "authenticated": bool(session.authenticated),
                    "tls": session.ssl is not None or smtps is not None,
                    "login": login,
                },
                envelope.original_content,
            )
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            auth is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == auth[0]
            and auth_data.password.decode() == auth[1]
        )
        if not ok:
            attempts["auth_fail"] += 1
            write_atomic(os.path.join(d, "auth-failures"), str(attempts["auth_fail"]).encode())
        # handled=False: aiosmtpd then replies 535 itself (with the default, True, it says nothing)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = bound_socket(port=port)
    kw = {}
    if auth is not None:
        kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=tls is not None)
    if tls is not None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        kw.update(tls_context=ctx, require_starttls=True)
    implicit = None
    if smtps is not None:
        import ssl

        implicit = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        implicit.load_cert_chain(smtps[0], smtps[1])
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(Handler(), hostname="sink.test", loop=loop, **kw), sock=sock, ssl=implicit
        )
    )
    announce(d, sock)
    try:
        loop.run_forever()
    finally:
        server.close()


def run_http(d, fail, status):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    rec = Recorder(d)
    count = {"n": 0}

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            count["n"] += 1
            code = status if count["n"] <= fail else 200
            rec.record(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                    "status": code,
                }
            )
            reply = b"ok" if code == 200 else b"no_service"
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    announce(d, srv.socket)
    srv.serve_forever()


def main():
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    mode, d = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    opt = {}
    while args:
        opt[args[0]] = args[1]
        args = args[2:]
    if mode == "smtp":
        auth = opt["--auth"].split(":", 1) if "--auth" in opt else None
        tls = opt["--tls"].split(":", 1) if "--tls" in opt else None
        smtps = opt["--smtps"].split(":", 1) if "--smtps" in opt else None
        run_smtp(d, auth, tls, smtps, opt.get("--refuse-rcpt"), int(opt.get("--port", "0")),
                 int(opt.get("--fail-data", "0")))
    elif mode == "http":
        run_http(d, int(opt.get("--fail", "0")), int(opt.get("--status", "500")))
    elif mode == "refuse":
        s = bound_socket(listen=False)
        announce(d, s)
        signal.pause()
    elif mode == "blackhole":
        # accept and hold every connection, say nothing; DIR/connections counts them
        s = bound_socket()
        announce(d, s)
        held = []
        while True:
            c, _ = s.accept()
            held.append(c)
            write_atomic(os.path.join(d, "connections"), str(len(held)).encode())
    elif mode == "smtp-mute-eom":
        # an SMTP server that takes the message and never answers its end (DIR/connections
        # counts the connections)
        import threading

        s = bound_socket()
        announce(d, s)
        held = []

        def serve(c):
            f = c.makefile("rb")
            c.sendall(b"220 mute.test ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO") or cmd.startswith(b"HELO"):
                    c.sendall(b"250-mute.test\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go ahead\r\n")
                    while line and line != b".\r\n":
                        line = f.readline()
                    return  # the end of the message: no reply, the connection held
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"250 ok\r\n")

        while True:
            c, _ = s.accept()
            held.append(c)
            write_atomic(os.path.join(d, "connections"), str(len(held)).encode())
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
