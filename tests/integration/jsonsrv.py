"""The JSON helpers of lib.sh (json_get, json_eval, assert_json, free_port, flip_byte),
served by one python process per test instead of one python process per call.

A call costs a python start otherwise (40-90 ms of CPU on the 2-core test machine, a
quarter of the CPU of some tests); a call to the server starts no process. When the server is not
running yet, or cannot take a request (a /dev/fd/N of the caller's own, an answer a shell
variable cannot hold), lib.sh runs `jsonsrv.py --once`: the same code, in a python of its
own.

usage: python3 -S jsonsrv.py DIR PID
       python3 -S jsonsrv.py --once MODE FILE ARG   (one answer, printed; lib.sh's fallback)
  DIR  a private directory (0700): the server makes there the FIFO req and the answer FIFOs
       a.0 .. a.63, then writes its pid to DIR/ready
  PID  the test's shell; the server exits when that process is gone

A caller claims an answer FIFO a.K by creating c.K exclusively (the shell's noclobber) and
writing its request into that file: four NUL-terminated fields,
  K     the claimed slot
  MODE  get | eval | valid | port | flip
  FILE  an absolute path (get, eval, valid, flip)
  ARG   the subscript chain (get), the expression (eval), the offset or "" (flip)
then opens a.K (read and write: no wait for the other end) and writes "K" and a NUL to req
(a few bytes: one write, so the messages of concurrent callers never interleave). The
answer, written to a.K: the exit status, a newline, stdout, NUL, stderr, NUL. Exit status
255 means "run jsonsrv.py --once instead": an answer holding a NUL byte, which a shell
variable cannot hold, or text that is not UTF-8, which --once's write refuses. Once it
has read the answer and closed a.K, the caller writes "K" "release" the same way, and the
server removes c.K. No process is started per call: the shell has no unlink of its own.
"""
import json
import os
import select
import socket
import sys


def ephemeral_range():
    """The kernel's range of ports for outgoing connections (ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_port_turn = [os.getpid()]


def free_port():
    """A loopback port nothing is bound to, for a server the test starts later, outside the
    kernel's ephemeral range: a port the kernel can give to any outgoing connection (psql,
    curl, a client of another test) may be taken between this probe and the server's bind,
    and the server fails with "Address already in use" (seen in CI). Only an explicit bind
    takes a port outside that range; ports reserved in CARIS_TEST_PORTS (lib.sh free_port)
    are skipped. The kernel's choice when the range leaves no other port."""
    lo, hi = ephemeral_range()
    cands = list(range(max(1024, lo - 16384), lo)) + list(range(hi + 1, 65536))
    reserved = os.environ.get("CARIS_TEST_PORTS", "")
    for i in range(len(cands)):
        p = cands[(_port_turn[0] + i) % len(cands)]
        if reserved and os.path.exists(os.path.join(reserved, str(p))):
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        _port_turn[0] += i + 1  # the next call starts after it
        return p
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def answer(mode, path, arg):
    """(status, stdout, stderr) of one call of a lib.sh helper."""
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
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except ValueError as ex:
            return 1, "", "%s\n" % ex
        except OSError as ex:
            return 1, "", "%s\n" % ex
        return 0, "", ""
    if mode == "port":
        return 0, "%d\n" % free_port(), ""
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


def encode(status, out, err):
    try:
        data = out.encode("utf-8") + b"\0" + err.encode("utf-8") + b"\0"
    except UnicodeEncodeError:
        return b"255\n\0\0"
    if data.count(b"\0") != 2:
        return b"255\n\0\0"
    return b"%d\n" % status + data


def reply(path, data):
    # the caller opened its answer FIFO before it wrote the request; if it is gone, nobody
    # has the FIFO open and this open fails at once (ENXIO): nothing to answer, and the slot
    # stays claimed
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.set_blocking(fd, True)
        while data:
            data = data[os.write(fd, data):]
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
    with open(os.path.join(d, "ready.new"), "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(os.path.join(d, "ready.new"), os.path.join(d, "ready"))
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
        while b"\0" in buf:
            msg, buf = buf.split(b"\0", 1)
            try:
                serve(d, msg)
            except Exception:  # never die: callers would wait for an answer
                pass


def serve(d, msg):
    """One message on req: "K" (the request is in c.K) or "K release"."""
    words = msg.decode("ascii", "replace").split(" ")
    slot = words[0]
    if not (slot.isascii() and slot.isdigit()) or int(slot) >= SLOTS:
        return
    claim = os.path.join(d, "c." + slot)
    if words[1:] == ["release"]:
        os.unlink(claim)
        return
    # from here on the caller waits on a.K: it gets an answer whatever happens (255: it runs
    # --once, which says what went wrong; only get, eval, valid and port can get there, as
    # answer() catches flip's errors itself)
    try:
        with open(claim, "rb") as f:
            fields = f.read().split(b"\0")
        if len(fields) != 5 or fields[0] != slot.encode():
            data = encode(2, "", "jsonsrv: a malformed request\n")
        else:
            mode, path, arg = (x.decode("utf-8", "surrogateescape") for x in fields[1:4])
            data = encode(*answer(mode, path, arg))
    except Exception:
        data = b"255\n\0\0"
    reply(os.path.join(d, "a." + slot), data)


def once(mode, path, arg):
    """jsonsrv.py --once MODE FILE ARG: one answer, in this process (lib.sh's fallback)."""
    status, out, err = answer(mode, path, arg)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    if sys.argv[1:2] == ["--once"] and len(sys.argv) == 5:
        sys.exit(once(*sys.argv[2:5]))
    main()
