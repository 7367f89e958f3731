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

MODE py runs a python program for lib.sh's python3 function (`python3 -c CODE ARGS...`,
`python3 - ARGS...` with the program on stdin, `python3 SCRIPT ARGS...`) in a fork of this
server rather than in a python of its own (by process accounting over the suite: 85 ms of
CPU a python started, 42 a fork). Its request: K, "py", the caller's pid, its working
directory, three of its file descriptors (copies of its standard input, output and error: the
caller's own 0-2 change while it writes to req), the number of arguments, the arguments, then
one "NAME=VALUE" field per exported variable (the names bash's `compgen -e` wrote to e.K). The
server takes those files themselves (pidfd_getfd: the same open files, offsets and all), the
caller's umask and ignored signals (/proc/PID/status); the fork gets them, the working
directory and the environment, and runs the
program as python would (__main__, sys.argv, sys.path[0], SystemExit, a traceback and status
1 on an exception; at the end threads waited for, atexit, the program's objects freed); the
server answers with the fork's exit status when it ends (128 + the signal that killed it).
"F" instead of a status: the server could not take the caller's files (an older kernel, no
permission), and lib.sh runs python3 itself. The program has the standard library only (the
server runs without site), and random is seeded again in every fork.
"""
import gc
import json
import os
import select
import signal
import socket
import sys

# MODE py: the answer FIFO of every fork still running, by pid (main reaps them)
_forks = {}


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


_libc = []  # MODE py: libc (ctypes), loaded once, before the first fork


def _py_prepare():
    """What every fork needs, imported once in the server (30 ms a fork otherwise)."""
    if not _libc:
        import atexit  # noqa: F401
        import ctypes
        import io  # noqa: F401
        import traceback  # noqa: F401
        import types  # noqa: F401

        _libc.append(ctypes.CDLL(None, use_errno=True))
        # the server's objects out of the forks' garbage collections: a collection that walks
        # them writes to every page that holds one, and each such page is copied
        gc.collect()
        gc.freeze()


def _pidfd_getfd(pidfd, fd):
    """A copy of another process's file descriptor fd (pidfd_getfd(2), Linux 5.6)."""
    import ctypes

    c = ctypes.c_long
    r = _libc[0].syscall(c(438), c(pidfd), c(fd), c(0))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def _exit_status(code):
    """The exit status python gives SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write("%s\n" % (code,))
    except Exception:
        pass
    return 1


def py_fork(d, slot, fields, keep):
    """MODE py: the caller's files taken, then a fork runs the program; the server goes on,
    and answers with the fork's exit status when it ends (reap_forks). keep: the server's
    own file descriptors, which the fork closes."""
    ans = os.path.join(d, "a." + slot)
    f = [x.decode("utf-8", "surrogateescape") for x in fields]
    got = []
    try:
        _py_prepare()
        caller, fds = int(f[2]), [int(x) for x in f[4].split()]
        pidfd = os.pidfd_open(caller)
        try:
            for i in fds[:3]:
                got.append(_pidfd_getfd(pidfd, i))
        finally:
            os.close(pidfd)
        with open("/proc/%d/status" % caller) as st:
            proc = dict(x.split(":", 1) for x in st if ":" in x)
        umask, ignored = int(proc["Umask"], 8), int(proc["SigIgn"], 16)
        pid = os.fork()
    except Exception:
        for fd in got:
            os.close(fd)
        reply(ans, b"F\n\0\0")
        return
    if pid:
        for fd in got:
            os.close(fd)
        _forks[pid] = ans
        return
    status = 70
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in keep:
            os.close(fd)
        for i, fd in enumerate(got):
            os.dup2(fd, i)
            os.close(fd)
        status = py_run(f, umask, ignored)
    finally:
        os._exit(status)


def py_run(f, umask, ignored):
    """The program of request fields f, in this fork, whose standard files are the caller's:
    its exit status."""
    import io
    import traceback
    import types

    cwd, argc = f[3], int(f[5])
    argv, env = f[6 : 6 + argc], [e for e in f[6 + argc :] if e]
    enc, out_errors, in_errors = sys.stdout.encoding, sys.stdout.errors, sys.stdin.errors

    def text(fd, mode, errors, line):
        raw = io.FileIO(fd, mode, closefd=False)
        buf = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding=enc, errors=errors, newline="\n", line_buffering=line)

    sys.stdin = sys.__stdin__ = text(0, "r", in_errors, False)
    sys.stdout = sys.__stdout__ = text(1, "w", out_errors, os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, "w", "backslashreplace", True)
    try:
        os.chdir(cwd)
    except OSError as ex:
        sys.stderr.write("python3 (lib.sh): cannot enter the working directory %s: %s\n" % (cwd, ex))
        sys.stderr.flush()
        return 2
    os.umask(umask)
    # the caller's ignored signals ignored, the others as a python started by it has them
    # (the server, started in the background, ignores SIGINT and SIGQUIT)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        if ignored >> (sig - 1) & 1:
            signal.signal(sig, signal.SIG_IGN)
        else:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.environ.clear()
    for e in env:
        k, _, v = e.partition("=")
        os.environ[k] = v
    if "random" in sys.modules:
        sys.modules["random"].seed()
    main_mod = types.ModuleType("__main__")
    sys.modules["__main__"] = main_mod
    status = 0
    try:
        if argv[0] in ("-c", "-"):
            src = argv[1] if argv[0] == "-c" else sys.stdin.read()
            name = "<string>" if argv[0] == "-c" else "<stdin>"
            sys.argv = [argv[0]] + argv[2 if argv[0] == "-c" else 1 :]
            sys.path[0] = ""
        else:
            name = argv[0]
            with open(name, "rb") as fh:
                src = fh.read()
            sys.argv = argv
            sys.path[0] = os.path.dirname(os.path.abspath(name))
            main_mod.__file__ = name
        exec(compile(src, name, "exec"), main_mod.__dict__)
    except SystemExit as ex:
        status = _exit_status(ex.code)
    except BaseException as ex:
        # the program's frames only, not this function's
        traceback.print_exception(type(ex), ex, ex.__traceback__.tb_next)
        status = 1
    # the ends of a python's exit: non-daemon threads waited for, atexit functions, and the
    # program's objects freed (a file it wrote without closing is flushed when it is)
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
        main_mod.__dict__.clear()
        del main_mod
        sys.modules.pop("__main__", None)
        gc.collect()
    except BaseException:
        pass
    try:
        sys.stdout.flush()
    except Exception:
        status = 120  # python's status when stdout cannot be flushed at exit
    try:
        sys.stderr.flush()
    except Exception:
        pass
    return status


def reap_forks():
    """Each fork that ended: its answer, its exit status (128 + the signal that killed it), as
    a shell gives a command's."""
    while _forks:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            _forks.clear()
            return
        if pid == 0:
            return
        ans = _forks.pop(pid, None)
        if ans is not None:
            code = os.waitstatus_to_exitcode(st)
            reply(ans, b"%d\n\0\0" % (code if code >= 0 else 128 - code))


def main():
    d, pid = sys.argv[1], int(sys.argv[2])
    req = os.path.join(d, "req")
    os.mkfifo(req, 0o600)
    for k in range(SLOTS):
        os.mkfifo(os.path.join(d, "a.%d" % k), 0o600)
    # read and write: the FIFO never reports end of file between callers
    fd = os.open(req, os.O_RDWR)
    # a fork's end wakes the loop (MODE py answers when its fork ends): SIGCHLD writes to wake
    wake, wake_w = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    with open(os.path.join(d, "ready.new"), "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(os.path.join(d, "ready.new"), os.path.join(d, "ready"))
    buf = b""
    while True:
        r, _, _ = select.select([fd, wake], [], [], 0.5)
        if wake in r:
            try:
                os.read(wake, 4096)
            except BlockingIOError:
                pass
        reap_forks()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        if fd not in r:
            continue
        buf += os.read(fd, 65536)
        while b"\0" in buf:
            msg, buf = buf.split(b"\0", 1)
            try:
                serve(d, msg, (fd, wake, wake_w))
            except Exception:  # never die: callers would wait for an answer
                pass


def serve(d, msg, keep):
    """One message on req: "K" (the request is in c.K) or "K release"."""
    words = msg.decode("ascii", "replace").split(" ")
    slot = words[0]
    if not (slot.isascii() and slot.isdigit()) or int(slot) >= SLOTS:
        return
    claim = os.path.join(d, "c." + slot)
    if words[1:] == ["release"]:
        # e.K first: once c.K is gone the slot's next caller writes a new e.K
        try:
            os.unlink(os.path.join(d, "e." + slot))
        except FileNotFoundError:
            pass
        os.unlink(claim)
        return
    # from here on the caller waits on a.K: it gets an answer whatever happens (255: it runs
    # --once, which says what went wrong; only get, eval, valid and port can get there, as
    # answer() catches flip's errors itself)
    try:
        with open(claim, "rb") as f:
            fields = f.read().split(b"\0")
        if len(fields) >= 6 and fields[0] == slot.encode() and fields[1] == b"py":
            py_fork(d, slot, fields, keep)
            return
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
