"""Headless Chromium driven through its DevTools protocol over ``--remote-debugging-pipe``
(a small stdlib client: JSON messages separated by NUL on fds 3/4), for the report tests:
load a page from the file system, record every request the page makes (Network
events of its own target, not the browser's background traffic), run JavaScript,
read the rendered DOM, take a screenshot."""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    if os.environ.get("MATNET_CHROMIUM"):
        return os.environ["MATNET_CHROMIUM"]
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class Chromium:
    """``with Chromium(binary, profileDir) as b: b.open(url); b.eval(js); b.dom(); b.screenshot()``;
    ``b.requests``: the URLs the page requested."""

    def __init__(self, binary: str, profile, size=(1100, 900), timeout: float = 60):
        self.timeout, self.size = timeout, size
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds():  # Chromium reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)
            os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id, self._msgs, self.events, self.requests = 0, queue.Queue(), [], []
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(m, session=True)
        self.call("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._msgs.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._msgs.put(json.loads(msg))

    def _event(self, m):
        self.events.append(m)
        if m.get("method") == "Network.requestWillBeSent" and m.get("sessionId") == getattr(self, "session", None):
            self.requests.append(m["params"]["request"]["url"])

    def call(self, method, params=None, session=False):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + self.timeout
        while True:
            m = self._msgs.get(timeout=max(0.1, end - time.monotonic()))
            if m is None:
                raise RuntimeError("chromium closed the DevTools pipe")
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._event(m)

    def wait_event(self, name):
        for m in self.events:
            if m.get("method") == name:
                self.events.remove(m)
                return m
        end = time.monotonic() + self.timeout
        while True:
            m = self._msgs.get(timeout=max(0.1, end - time.monotonic()))
            if m is None:
                raise RuntimeError("chromium closed the DevTools pipe")
            if m.get("method") == name:
                self._event(m)
                return m
            self._event(m)

    def open(self, url):
        """Load ``url`` afresh (through about:blank, so a change of fragment only reloads too)."""
        for u in ("about:blank", url):
            self.events.clear()
            self.call("Page.navigate", {"url": u}, session=True)
            self.wait_event("Page.loadEventFired")

    def eval(self, js):
        r = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True},
                      session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{js}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def dom(self) -> str:
        return self.eval("document.documentElement.outerHTML")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
