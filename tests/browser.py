"""Headless Chromium for the page tests, driven over the DevTools protocol on a pipe.

``chromium --remote-debugging-pipe`` reads protocol commands from file descriptor 3 and writes replies
and events to descriptor 4, each message a JSON text ended by a NUL byte. That needs no port, no
websocket library and no timing guesses: the test waits for the page's load event (and, when asked,
for a condition evaluated in the page) and then asks the page itself for what it shows.

:func:`load_page` collects every console problem of the page: ``console.error`` / ``console.assert``
calls (``Runtime.consoleAPICalled``), uncaught exceptions (``Runtime.exceptionThrown``) and the
browser's own error entries (``Log.entryAdded`` at level ``error``: a resource that failed to load, a
blocked request, a CSP violation). The caller asserts that the list is empty.

Use :func:`chromium` to skip when no browser is installed (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NO_CHROMIUM = "no Chromium on this machine (apt-get install chromium)"


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class Page:
    """What a loaded page showed: its DOM, the values of ``evaluate`` expressions, the console problems
    and a PNG screenshot."""

    url: str
    dom: str
    values: dict[str, Any]
    console_errors: list[str]
    screenshot: bytes
    console: list[str] = field(default_factory=list)

    def screenshot_stats(self) -> dict[str, float]:
        """``colours`` (distinct colours) and ``ink`` (share of pixels that are not near-white) of the
        screenshot: a blank or failed page has very few of both."""
        import numpy as np
        from PIL import Image

        img = np.asarray(Image.open(io.BytesIO(self.screenshot)).convert("RGB"))
        flat = img.reshape(-1, 3)
        colours = len(np.unique(flat[:: max(1, len(flat) // 400_000)], axis=0))
        ink = float((img.min(axis=2) < 235).mean())
        return {"colours": colours, "ink": ink, "width": img.shape[1], "height": img.shape[0]}


def _above_9(fd: int) -> int:
    """The same open file on a descriptor >= 10 (the original is closed)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _Pipe:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (messages out)."""

    def __init__(self, exe: str, profile: Path, width: int, height: int):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        to_chrome_r, from_chrome_w = _above_9(to_chrome_r), _above_9(from_chrome_w)  # never 3 or 4 themselves
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--mute-audio", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4 (where Chromium expects them) and closes the originals
        script = (f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-')
        self.proc = subprocess.Popen(["bash", "-c", script, *args], pass_fds=(to_chrome_r, from_chrome_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue = queue.Queue()
        self._stderr: list[bytes] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()
        self.events: list[dict[str, Any]] = []

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_chrome, "rb", buffering=0) as fh:
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    self._messages.put(None)
                    return
                buf += chunk
                *done, buf = buf.split(b"\0")
                for raw in done:
                    self._messages.put(json.loads(raw))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        """Send a command and wait for its reply (events that arrive meanwhile are kept in ``events``)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._get(timeout, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 60) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and ev.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            ev = self._get(timeout, f"the event {method}")
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
            self.events.append(ev)

    def _get(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            msg = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"Chromium sent no {what} within {timeout:.0f} s; stderr:\n{self.stderr()}") from None
        if msg is None:
            raise AssertionError(f"Chromium closed the DevTools pipe while waiting for {what}; stderr:\n{self.stderr()}")
        return msg

    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-3000:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - killing it below is enough
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self._to_chrome)
        except OSError:
            pass


def _console_problems(events: list[dict[str, Any]], session: str) -> tuple[list[str], list[str]]:
    errors, console = [], []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        p = ev.get("params", {})
        if ev.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            console.append(f"console.{p.get('type')}: {text}")
            if p.get("type") in ("error", "assert"):
                errors.append(f"console.{p.get('type')}: {text}")
        elif ev.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif ev.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
    return errors, console


def load_page(url: str, profile: Path, *, evaluate: dict[str, str] | None = None, wait_for: str | None = None,
              width: int = 1280, height: int = 900, full_page: bool = True, timeout: float = 90) -> Page:
    """Open ``url`` in headless Chromium, wait for its load event (and until the JavaScript expression
    ``wait_for`` is true, when given), then read the DOM, evaluate each expression of ``evaluate``
    (name -> expression, values returned by value), take a screenshot (the whole page when
    ``full_page``) and collect the console problems."""
    exe = chromium()
    assert exe is not None, NO_CHROMIUM
    pipe = _Pipe(exe, profile, width, height)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        nav = pipe.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        assert not nav.get("errorText"), f"navigation to {url} failed: {nav.get('errorText')}"
        pipe.wait_event("Page.loadEventFired", session, timeout=timeout)

        def js(expr: str) -> Any:
            res = pipe.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                            session=session, timeout=timeout)
            if "exceptionDetails" in res:
                raise AssertionError(f"{expr!r} failed in the page: {res['exceptionDetails']}")
            return res.get("result", {}).get("value")

        if wait_for:
            deadline = time.monotonic() + timeout
            while not js(wait_for):
                assert time.monotonic() < deadline, f"the page never satisfied {wait_for!r}"
                time.sleep(0.1)
        # every image decoded (or failed) before anything is read
        js("Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))")
        values = {name: js(expr) for name, expr in (evaluate or {}).items()}
        dom = js("document.documentElement.outerHTML")
        shot: dict[str, Any] = {"format": "png"}
        if full_page:
            size = js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            shot.update(captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": max(size[0], width), "height": min(size[1], 16000), "scale": 1})
        png = base64.b64decode(pipe.send("Page.captureScreenshot", shot, session=session, timeout=timeout)["data"])
        js("0")  # a last round trip: console events of the page's final work have arrived
        errors, console = _console_problems(pipe.events, session)
        return Page(url, dom, values, errors, png, console)
    finally:
        pipe.close()
