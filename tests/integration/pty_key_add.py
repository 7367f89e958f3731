#!/usr/bin/env python3
"""Runs CMD... (`key add`) on a pseudo-terminal, types a key at its prompt (or, with
--interrupt, Ctrl-C), and prints what the terminal showed, then ECHO-ON or ECHO-OFF (the
terminal's echo once the program ended) and the exit status. Every wait has a deadline."""
import os
import pty
import select
import sys
import termios
import time

interrupt = sys.argv[1] == "--interrupt"
key = os.environ["PTY_KEY"].encode()
cmd = sys.argv[2:] if interrupt else sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
out = b""


def read_until(pred, secs=30):
    """Reads what the terminal shows until pred() or the program's end; False at EOF."""
    global out
    end = time.monotonic() + secs
    while not pred():
        left = end - time.monotonic()
        if left <= 0:
            sys.exit("timed out; the terminal showed: %r" % out)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:  # EIO: the program ended
                return False
            if not d:
                return False
            out += d
    return True


read_until(lambda: b"new encryption key" in out)
# the prompt is printed before the echo is turned off: wait for that (no sleep)
end = time.monotonic() + 30
while termios.tcgetattr(fd)[3] & termios.ECHO:
    if time.monotonic() > end:
        sys.exit("the echo was never turned off")
    select.select([], [], [], 0.01)
os.write(fd, b"\x03" if interrupt else key + b"\n")
read_until(lambda: False)
echo = termios.tcgetattr(fd)[3] & termios.ECHO
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("\nECHO-ON" if echo else "\nECHO-OFF")
print("exit %d" % os.waitstatus_to_exitcode(st))
