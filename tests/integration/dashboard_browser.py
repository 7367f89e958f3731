#!/usr/bin/env python3
"""Drives the dashboard in a real browser for test_dashboard.sh: Debian's chromium, headless,
through the DevTools protocol over a WebSocket (a small client written here: standard library
only). Usage: dashboard_browser.py CHROMIUM BASE_URL TOKEN OUT_DIR [alerts]

Signs in, reads the list and the chart, starts a full backup with the button, waits for the
job to end, reads them again, checks labels and the phone width, saves screenshots in OUT_DIR,
and prints a JSON summary (the test asserts on it). Every console error, exception and failed
load is collected in "consoleErrors". With "alerts": signs in and reads the banners only.
With "revoked": puts TOKEN (revoked) in the tab's sessionStorage, reloads, waits for the
sign-in form's message, then calls api() with no token ("noToken": its error's status).
With "visit": opens BASE_URL itself (a page of another site; TOKEN unused) and waits until its
script sets window.done, given as "done" (test_api_cross_site.sh).

Each run starts a browser of its own, unless DASHBOARD_BROWSER_PORT names the DevTools port
of one already running: then the session is a browser context of its own in it (nothing shared
with another session: no storage, cookie or cache), closed at the end. `dashboard_browser.py
CHROMIUM --launch PROFILE_DIR` becomes (exec) such a browser; it writes its port in
PROFILE_DIR/DevToolsActivePort. A chromium start is about 2 s of CPU."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


class WebSocket:
    def __init__(self, url):
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(1)
            if not chunk:
                raise IOError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise IOError("websocket handshake refused: %r" % head[:80])
        self.buf = b""

    def send(self, text):
        data = text.encode()
        hdr = bytes([0x81])
        n = len(data)
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise IOError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 8:
                raise IOError("websocket closed by the browser")
            if op in (9, 10):
                continue
            msg += payload
            if b0 & 0x80:
                return msg.decode()


class Page:
    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.n = 0
        self.events = []

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self.events.append(m)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, secs):
        deadline = time.monotonic() + secs
        while True:
            v = self.eval(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                return v
            time.sleep(0.1)

    def shot(self, path):
        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def errors(self):
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                  for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append("log: %s %s" % (e.get("text"), e.get("url", "")))
        return out


def chromium_args(chromium, prof):
    return [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            "--user-data-dir=" + prof, "--window-size=1280,900", "about:blank"]


def chromium_env(tmp):
    """Chromium's environment, TMPDIR set to tmp. Chromium makes the directory of its singleton
    socket (org.chromium.Chromium.XXXXXX) in TMPDIR and leaves it there when it is killed: one
    in /tmp per run of the suite, when TMPDIR was the test's. Only when the socket's path fits
    in a socket address (108 bytes): else TMPDIR as it is."""
    env = dict(os.environ)
    tmp = os.path.abspath(tmp)
    if len(tmp + "/org.chromium.Chromium.XXXXXX/SingletonSocket") < 108:
        env["TMPDIR"] = tmp
    return env


def open_page(chromium, out):
    """The page to drive and what closes it: a tab in a browser context of its own in the
    browser DASHBOARD_BROWSER_PORT names, else the tab of a browser started here."""
    shared = os.environ.get("DASHBOARD_BROWSER_PORT")
    if shared:
        port = int(shared)
        version = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/version" % port))
        browser = Page(version["webSocketDebuggerUrl"])
        ctx = browser.call("Target.createBrowserContext")["browserContextId"]
        tid = browser.call("Target.createTarget", url="about:blank", browserContextId=ctx)["targetId"]

        def close():
            browser.call("Target.disposeBrowserContext", browserContextId=ctx)

        return Page("ws://127.0.0.1:%d/devtools/page/%s" % (port, tid)), close
    prof = tempfile.mkdtemp(prefix="chromium-", dir=out)
    # its temporary files in a short directory of its own (the profile's path may be too long
    # for the socket), removed once it has stopped
    tmp = tempfile.mkdtemp(prefix="caris-chromium-", dir="/tmp")
    proc = subprocess.Popen(chromium_args(chromium, prof), stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(out, "chromium.log"), "w"),
                            env=chromium_env(tmp))

    def stop():
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    try:
        port_file = os.path.join(prof, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not start (see chromium.log)")
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port))
        return Page([t for t in targets if t["type"] == "page"][0]["webSocketDebuggerUrl"]), stop
    except BaseException:
        stop()
        raise


def main():
    chromium = sys.argv[1]
    if sys.argv[2:3] == ["--launch"]:
        os.makedirs(sys.argv[3], exist_ok=True)
        os.execve(chromium, chromium_args(chromium, sys.argv[3]), chromium_env(sys.argv[3]))
    base, token, out = sys.argv[2:5]
    mode = sys.argv[5] if len(sys.argv) > 5 else "session"
    summary = {"consoleErrors": [], "screenshots": []}
    page, close = open_page(chromium, out)
    try:
        for d in ("Page", "Runtime", "Log"):
            page.call(d + ".enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)
        if mode == "visit":
            page.call("Page.navigate", url=base)
            summary["done"] = page.wait("window.done || ''", 60)
            return
        page.call("Page.navigate", url=base + "/admin/backup")
        summary["loaded"] = bool(page.wait(
            "document.readyState === 'complete' && !!document.getElementById('token')", 30))
        if mode == "revoked":
            page.eval("sessionStorage.setItem('caris-backup-token', %s); true" % json.dumps(token))
            page.call("Page.reload")
            summary["signinError"] = page.wait(
                "(document.getElementById('signin-error') || {}).textContent || ''", 30)
            summary["noToken"] = page.eval(
                "sessionStorage.removeItem('caris-backup-token');"
                "api('GET', '/api/admin/backup/status').then(() => 200, (e) => e.status)")
            summary["consoleErrors"] = page.errors()
            return
        # every control has an accessible name
        summary["unlabeled"] = page.eval("""
            [...document.querySelectorAll('input, button, select, textarea')].filter(e => {
              const byFor = e.id && document.querySelector('label[for="' + e.id + '"]');
              return !(byFor || e.getAttribute('aria-label') || e.textContent.trim());
            }).map(e => e.outerHTML)""")
        page.eval("document.getElementById('token').value = %s;"
                  "document.getElementById('signin-form').requestSubmit(); true" % json.dumps(token))
        summary["signedIn"] = bool(page.wait(
            "!document.getElementById('app').hidden && "
            "document.querySelectorAll('#backups tbody tr').length > 0", 30))
        summary["tokenInSessionStorage"] = page.eval(
            "sessionStorage.getItem('caris-backup-token') === %s" % json.dumps(token))
        summary["cookies"] = page.eval("document.cookie")
        summary["rowsBefore"] = page.eval("document.querySelectorAll('#backups tbody tr').length")
        summary["pointsBefore"] = page.eval("document.querySelectorAll('#chart-duration circle').length")
        summary["barsBefore"] = page.eval("document.querySelectorAll('#chart-size rect').length")
        # the status (next runs, alerts) comes in a request of its own, after the list's:
        # wait for it (a loaded machine answers it later than the list)
        summary["nextRuns"] = page.wait("document.getElementById('next').textContent", 30)
        summary["alerts"] = page.wait("document.getElementById('alerts').textContent", 30)
        if mode == "throttled":
            # five failed authentications from this address (another client's, as behind a
            # reverse proxy), then the address must wait: the tab stays signed in, says so,
            # and resumes by itself after the wait
            codes = []
            for i in range(6):
                req = urllib.request.Request(base + "/api/admin/backup/status",
                                             headers={"Authorization": "Bearer wrong-%d" % i})
                try:
                    codes.append(urllib.request.urlopen(req).status)
                except urllib.error.HTTPError as e:
                    codes.append(e.code)
            summary["codes"] = codes
            summary["waitShown"] = page.wait(
                "(t => /^Waiting: too many failed/.test(t) ? t : '')"
                "(document.getElementById('action-msg').textContent)", 30)
            signed_in = ("!document.getElementById('app').hidden && "
                         "sessionStorage.getItem('caris-backup-token') === %s" % json.dumps(token))
            summary["signedInDuring"] = page.eval(signed_in)
            summary["resumed"] = bool(page.wait(
                "!document.getElementById('action-msg').dataset.waiting", 60))
            summary["signedInAfter"] = page.eval(signed_in)
            summary["msgAfter"] = page.eval("document.getElementById('action-msg').textContent")
            summary["consoleErrors"] = page.errors()
            return
        if mode == "alerts":  # sign in and read the banners (and the runs' history) only
            summary["history"] = page.eval("document.getElementById('history').textContent")
            summary["historyClasses"] = page.eval(
                "[...document.querySelectorAll('#history li')].map(l => l.className).join(' ')")
            summary["screenshots"].append(page.shot(os.path.join(out, "4-alerts.png")))
            summary["consoleErrors"] = page.errors()
            return
        summary["screenshots"].append(page.shot(os.path.join(out, "1-signed-in.png")))
        page.eval("document.querySelector('[data-action=full]').click(); true")
        summary["sawRunning"] = bool(page.wait(
            "/queued|running/.test(document.getElementById('action-msg').textContent) || "
            "!!document.getElementById('action-msg').dataset.done", 30))
        summary["jobDone"] = page.wait("document.getElementById('action-msg').dataset.done || ''", 180)
        summary["jobMessage"] = page.eval("document.getElementById('action-msg').textContent")
        summary["rowsAfter"] = page.wait(
            "(n => n > %d ? n : 0)(document.querySelectorAll('#backups tbody tr').length)"
            % summary["rowsBefore"], 30)
        summary["auditRows"] = page.wait(
            "document.querySelectorAll('#audit tbody tr').length", 10)
        # the audit table is fetched after the list (refreshList): wait for the run's line, which
        # the daemon writes before it reports the job done
        summary["auditText"] = page.wait(
            "(t => /backup run/.test(t) ? t : '')(document.getElementById('audit').textContent)", 30
        ) or page.eval("document.getElementById('audit').textContent")
        summary["notifications"] = page.eval("document.getElementById('notifications').textContent")
        summary["alertsAfter"] = page.wait(
            "(t => t === '' ? 'none' : '')(document.getElementById('alerts').textContent)", 10)
        summary["pointsAfter"] = page.eval("document.querySelectorAll('#chart-duration circle').length")
        summary["screenshots"].append(page.shot(os.path.join(out, "2-after-backup.png")))
        # a phone: nothing wider than the screen but the table's own scroll box
        page.call("Emulation.setDeviceMetricsOverride", width=375, height=800,
                  deviceScaleFactor=2, mobile=True)
        page.wait("window.innerWidth === 375", 10)
        summary["phoneOverflow"] = page.eval("document.documentElement.scrollWidth > 375")
        summary["screenshots"].append(page.shot(os.path.join(out, "3-phone.png")))
        summary["consoleErrors"] = page.errors()
    finally:
        close()
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
