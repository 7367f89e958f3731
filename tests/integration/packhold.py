#!/usr/bin/env python3
"""Holds a reader of the repository's packs mid-way, without timing.

packhold.py PACK...: takes a write lease (fcntl F_SETLEASE) on every PACK and prints "held".
A process that then opens one of them blocks in open(2) until the lease is released, and
the kernel tells us (SIGIO): we print "opened". We release every lease (and exit) when a line
arrives on stdin. The kernel breaks a lease on its own after /proc/sys/fs/lease-break-time
seconds (45 by default): we print "broken-by-timeout" if that happened before we released,
so that a test can tell it lost its hold.
"""
import fcntl
import os
import select
import signal
import sys

F_SETLEASE = 1024
F_GETLEASE = 1025

opened = []
signal.signal(signal.SIGIO, lambda s, f: opened.append(1))

fds = []
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    fcntl.fcntl(fd, F_SETLEASE, fcntl.F_WRLCK)
    fds.append(fd)
print("held", flush=True)
while not opened:
    signal.pause()
print("opened", flush=True)
# Wait for the release request (the test signals the reader first).
while True:
    r, _, _ = select.select([sys.stdin], [], [], 1.0)
    if r:
        sys.stdin.readline()
        break
# A lease still being broken reads F_RDLCK (0); one the kernel broke by timeout reads F_UNLCK.
lost = any(fcntl.fcntl(fd, F_GETLEASE) == fcntl.F_UNLCK for fd in fds)
for fd in fds:
    fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    os.close(fd)
print("broken-by-timeout" if lost else "released", flush=True)
