"""The JSON helpers of lib.sh (json_get, json_eval, assert_json, free_port, flip_byte),
served by one python process per test instead of one python process per call.

A call costs a python start otherwise (40-90 ms of CPU on the 2-core test machine, a
quarter of the CPU of some tests); here it costs a mkfifo. The answers are those of the
per-call code in lib.sh, which remains the fallback when this server is not running.

usage: python3 -S jsonsrv.py DIR PID
  DIR  a private directory (0700): the server makes there the FIFO req and the answer FIFOs
       a.0 .. a.63, then writes its pid to DIR/ready
  PID  the test's shell; the server exits when that process is gone

A caller claims an answer FIFO a.K by creating c.K exclusively (the shell's noclobber), opens
a.K (read and write: no wait for the other end), and writes its request to req: four
NUL-terminated fields in one write (well under PIPE_BUF, so the requests of concurrent
callers do not interleave):
  K     the claimed slot
  MODE  get | eval | valid | port | flip
  FILE  an absolute path (get, eval, valid, flip)
  ARG   the subscript chain (get), the expression (eval), the offset or "" (flip)
The answer, written to a.K: the exit status, a newline, stdout, NUL, stderr, NUL. Exit
status 255 means "ask the per-call code" (an answer holding a NUL byte, which a shell
variable cannot hold). Once it has read the answer and closed a.K, the caller writes
K, "release", "", "" the same way and the server removes c.K. No process is started per call:
the shell has no unlink or mkfifo of its own.
"""
import json
import os
import select
import socket
import sys


def answer(mode, path, arg):
    """(status, stdout, stderr) as the per-call code in lib.sh would give them."""
    if mode == "get":
        try:
            with open(path) as f:
                d = json.load(f)
            v = eval("d" + arg, {"d": d})
        except Exception:
            return 1, "", ""
        return 0, (v if isinstance(v, str) else json.dumps(v)) + "\n", ""
    if mode == "eval":
        try:
            with open(path) as f:
                d = json.load(f)
            v = eval(arg, {"d": d, "any": any, "all": all, "len": len})
        except Exception as ex:
            return 1, "", "json_eval error: %r\n" % ex
        return 0, (v if isinstance(v, str) else json.dumps(v)) + "\n", ""
    if mode == "valid":  # what `python3 -m json.tool FILE >/dev/null` tells
        try:
            with open(path) as f:
                json.load(f)
        except ValueError as ex:
            return 1, "", "%s\n" % ex
        except OSError as ex:
            return 1, "", "%s\n" % ex
        return 0, "", ""
    if mode == "port":
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            return 0, "%d\n" % s.getsockname()[1], ""
        finally:
            s.close()
    if mode == "flip":
        try:
            size = os.path.getsize(path)
            off = int(arg) if arg else size // 2
            with open(path, "r+b") as f:
                f.seek(off)
                b = f.read(1)
                f.seek(off)
                f.write(bytes([b[0] ^ 1]))
        except Exception as ex:
            return 1, "", "flip_byte: %r\n" % ex
        return 0, "", ""
    return 2, "", "jsonsrv: unknown mode %r\n" % mode


SLOTS = 64


def reply(path, status, out, err):
    data = out.encode("utf-8", "surrogateescape") + b"\0" + err.encode("utf-8", "surrogateescape") + b"\0"
    if data.count(b"\0") != 2:
        status, data = 255, b"\0\0"
    # the caller opened its answer FIFO before it wrote the request; if it is gone, nobody
    # has the FIFO open and this open fails at once (ENXIO): nothing to answer, and the slot
    # stays claimed
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.set_blocking(fd, True)
        os.write(fd, b"%d\n" % status + data)
    except OSError:
        pass
    finally:
        os.close(fd)


def main():
    d, pid = sys.argv[1], int(sys.argv[2])
    req = os.path.join(d, "req")
    os.mkfifo(req, 0o600)
    for k in range(SLOTS):
        os.mkfifo(os.path.join(d, "a.%d" % k), 0o600)
    # read and write: the FIFO never reports end of file between callers
    fd = os.open(req, os.O_RDWR)
    with open(os.path.join(d, "ready"), "w") as f:
        f.write("%d\n" % os.getpid())
    buf = b""
    while True:
        r, _, _ = select.select([fd], [], [], 0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        if not r:
            continue
        buf += os.read(fd, 65536)
        while buf.count(b"\0") >= 4:
            fields = buf.split(b"\0", 4)
            buf = fields[4]
            slot, mode, path, arg = (x.decode("utf-8", "surrogateescape") for x in fields[:4])
            if not slot.isdigit() or int(slot) >= SLOTS:
                continue
            if mode == "release":
                try:
                    os.unlink(os.path.join(d, "c." + slot))
                except OSError:
                    pass
                continue
            try:
                status, out, err = answer(mode, path, arg)
            except Exception as ex:  # never die: callers would wait for the answer
                status, out, err = 255, "", "jsonsrv: %r\n" % ex
            reply(os.path.join(d, "a." + slot), status, out, err)


if __name__ == "__main__":
    main()
