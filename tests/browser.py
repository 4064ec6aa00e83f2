"""Debian's Chromium, headless, driven from Python over the DevTools protocol (no browser download).

``.ci/run`` installs the package ``chromium`` when it is missing. Without it a test skips, except in
CI (``CI`` set), where it fails: the browser checks must not pass by not running. The protocol is
spoken over one WebSocket (``websocket-client``, which Jupyter Server already needs): navigate,
evaluate JavaScript (awaiting promises), poll for a condition, take a screenshot.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def chromium() -> str | None:
    """The browser's executable: None without it, a test failure when ``CI`` is set."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed (Debian's package chromium; .ci/run installs it as root)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None,
                  any_status: bool = True) -> None:
    """Poll ``url`` until it answers (any HTTP status, or only 2xx), failing with the server's log if it died
    or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            if any_status:
                return
            time.sleep(0.3)
        except OSError:
            time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else f"no answer in {timeout:.0f} s"
    raise AssertionError(f"{url}: {state}\n{tail}")


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page, at a given window size."""

    def __init__(self, width: int = 1400, height: int = 900):
        import websocket  # websocket-client

        exe = chromium()
        if exe is None:
            pytest.skip("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        pages = []
        while not pages:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise BrowserError("chromium did not open its DevTools port")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
            except OSError:
                time.sleep(0.2)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)
        self.ids = itertools.count(1)
        self.console: list[str] = []  # the page's console errors and uncaught exceptions
        self.requests: list[str] = []  # every URL the page asked for, once Network is enabled (authorize, record_requests)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setFocusEmulationEnabled", enabled=True)  # a headless page has no focus otherwise
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600)

    def send(self, method: str, timeout: float = 120, **params):
        msg_id = next(self.ids)
        self.ws.settimeout(timeout)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(msg["params"]["exceptionDetails"].get("exception", {}).get("description", "")[:500])
            elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"].get("type") == "error":
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in msg["params"]["args"])[:500])
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def authorize(self, token: str) -> None:
        """Send ``Authorization: token TOKEN`` with every request of the page (a Jupyter server's token;
        its pages' own requests included, which a token in the address alone does not cover)."""
        self.send("Network.enable")
        self.send("Network.setExtraHTTPHeaders", headers={"Authorization": f"token {token}"})

    def record_requests(self) -> None:
        """Record every request the page makes from now on (``self.requests``)."""
        self.send("Network.enable")

    def goto(self, url: str, timeout: float = 120) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def eval(self, expression: str, timeout: float = 120):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.send("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:200]}: {details.get('exception', {}).get('description', details.get('text'))}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        """Poll ``expression`` until it is truthy; its value. Fails naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.eval(expression)
            except BrowserError:
                value = None  # the page is still loading
            if value:
                return value
            if time.monotonic() > deadline:
                if os.environ.get("GMLIB_SCREENSHOTS"):  # what the page showed, for the record
                    os.makedirs(os.environ["GMLIB_SCREENSHOTS"], exist_ok=True)
                    self.screenshot(Path(os.environ["GMLIB_SCREENSHOTS"]) / "timeout.png")
                raise BrowserError(f"waited {timeout:.0f} s for {what}; page text: "
                                   f"{(self.eval('document.body && document.body.innerText') or '')[:1500]}")
            time.sleep(0.25)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)
