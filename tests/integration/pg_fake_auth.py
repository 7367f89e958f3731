#!/usr/bin/env python3
"""A fake PostgreSQL server that asks every client for its password in clear text and
records what it gets: the test of "a password is never sent to a host the request chose".

usage: pg_fake_auth.py HOST PORT LOGFILE   (writes LOGFILE.ready once listening)

Each connection appends one line to LOGFILE: "startup user=<user>" then, when the client
sends a password message, "password=<text>"; it then answers with an error and closes.
SSL and GSS encryption requests are declined ('N'), as a server without them does."""
import socket
import struct
import sys

host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b


def serve(c):
    while True:
        (n,) = struct.unpack("!I", recv_exact(c, 4))
        body = recv_exact(c, n - 4)
        (code,) = struct.unpack("!I", body[:4])
        if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
            c.sendall(b"N")
            continue
        break
    parts = body[4:].split(b"\0")
    params = dict(zip(parts[0::2], parts[1::2]))
    line = "startup user=%s" % params.get(b"user", b"").decode("utf-8", "replace")
    c.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
    try:
        t = recv_exact(c, 1)
        (n,) = struct.unpack("!I", recv_exact(c, 4))
        msg = recv_exact(c, n - 4)
        if t == b"p":
            line += " password=%s" % msg.rstrip(b"\0").decode("utf-8", "replace")
    except (EOFError, OSError):
        line += " (no password: the client hung up)"
    with open(log, "a") as f:
        f.write(line + "\n")
    err = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
    try:
        c.sendall(b"E" + struct.pack("!I", len(err) + 4) + err)
    except OSError:
        pass


s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(8)
open(log + ".ready", "w").close()
while True:
    c, _ = s.accept()
    try:
        serve(c)
    except (EOFError, OSError):
        pass
    finally:
        c.close()
