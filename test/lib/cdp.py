"""A small Chrome DevTools protocol client over --remote-debugging-pipe (stdlib only:
Debian's python3 has no websocket module): Debian's headless chromium, one page, commands
and their answers, JavaScript dialogs accepted, screenshots. For the browser tests."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, chromium="/usr/bin/chromium", timeout=30.0, extra_args=()):
        """`extra_args`: more chromium flags (e.g. --ignore-certificate-errors)."""
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="mqgate-cdp-")
        # Chromium reads commands on fd 3 and writes answers on fd 4, NUL-terminated JSON.
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():  # in the child: the pipe ends to 3 and 4 (via high numbers: no clash)
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             "--window-size=1280,900", *extra_args, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=fds,
            close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.session = None
        self.dialogs = []  # messages of the dialogs accepted
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise CdpError("no answer from chromium in time")
            ready, _, _ = select.select([self._from_chrome], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise CdpError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def _handle_event(self, msg):
        if msg.get("method") == "Page.javascriptDialogOpening":
            self.dialogs.append(msg["params"]["message"])
            self._send("Page.handleJavaScriptDialog", {"accept": True})

    def _send(self, method, params=None):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def call(self, method, params=None):
        """Sends a command; returns its result (events meanwhile are handled)."""
        mid = self._send(method, params)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read_message(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._handle_event(msg)

    def evaluate(self, expression):
        """The value of a JavaScript expression (awaited if a promise)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                           "returnByValue": True})
        if "exceptionDetails" in r:
            raise CdpError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout=20.0):
        """Polls a JavaScript expression until it is truthy; returns its value. One that
        throws (the page is still loading) counts as not yet."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except CdpError as e:
                last = e
            if time.monotonic() > deadline:
                raise CdpError(f"timed out waiting for: {expression} (last error: {last})")
            time.sleep(0.05)

    def navigate(self, url):
        self.call("Page.navigate", {"url": url})

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)
