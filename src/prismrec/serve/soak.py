"""A soak test of the service: concurrent clients mixing recommendations and item writes while the server
is killed with SIGKILL and restarted, then a check that every acknowledged write is still there.

Used by ``tests/test_serve_store.py`` (small and short) and ``benchmarks/serve_soak.py`` (the figures in
docs/serving.md). Traffic goes only to the local server it starts (127.0.0.1); every loop is bounded in
count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``prismrec serve`` in its own process group on 127.0.0.1, killable with SIGKILL (all workers)."""

    def __init__(self, bundle: Path, *, port: int, key: str, workers: int = 1, extra: tuple[str, ...] = (),
                 log: Path | None = None):
        self.cmd = [sys.executable, "-m", "prismrec.cli.main", "-q", "serve", str(bundle), "--port", str(port),
                    "--workers", str(workers), *extra]
        self.port, self.key, self.log = port, key, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until ``/health`` answers; returns the seconds it took."""
        env = {**os.environ, "PRISMREC_API_KEY": self.key}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=out, stderr=out, start_new_session=True)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                status, _, _ = request(self.port, "GET", "/health", timeout=2.0)
                if status == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not answer /health within {timeout:.0f}s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def request(port: int, method: str, path: str, body: Any = None, key: str | None = None,
            timeout: float = 10.0) -> tuple[int, Any, float]:
    """One HTTP request on a fresh connection: (status, decoded JSON or None, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    t0 = time.perf_counter()
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        took = time.perf_counter() - t0
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return resp.status, data, took
    finally:
        conn.close()


@dataclass
class SoakResult:
    requests: int = 0
    puts_acknowledged: int = 0
    acknowledged_found: int = 0
    errors_while_down: int = 0
    errors_while_up: list[str] = field(default_factory=list)
    kills: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "puts_acknowledged": self.puts_acknowledged,
                "acknowledged_found_after_restarts": self.acknowledged_found, "kills": self.kills,
                "errors_while_down": self.errors_while_down, "errors_while_up": len(self.errors_while_up),
                "p50_ms": round(self.percentile(50), 2), "p99_ms": round(self.percentile(99), 2),
                "mean_restart_s": round(sum(self.restart_seconds) / max(len(self.restart_seconds), 1), 2)}


def run_soak(server: ServerProcess, *, users: list[str], seconds: float = 20.0, clients: int = 50,
             kills: int = 3, put_share: float = 0.3, item_body=None, seed: int = 0,
             max_requests: int = 200_000) -> SoakResult:
    """``clients`` threads send requests for ``seconds`` (at most ``max_requests`` in all); ``kills`` times,
    at random moments, the server is killed with SIGKILL and restarted. Afterwards every acknowledged PUT
    must be found (``GET /v1/items/{id}``). A 5xx or a connection error counts against the service only
    while the server is up (between a finished restart and the next kill)."""
    res = SoakResult()
    rng = random.Random(seed)
    up = threading.Event()
    up.set()
    lock = threading.Lock()
    acked: set[str] = set()
    deadline = time.monotonic() + seconds
    item_body = item_body or (lambda r: {"text": f"soak item {r.random():.6f}", "price": round(r.uniform(1, 500), 2)})

    def client(cid: int) -> None:
        r = random.Random(seed * 1000 + cid)
        n = 0
        while time.monotonic() < deadline:
            with lock:
                if res.requests >= max_requests:
                    return
                res.requests += 1
            n += 1
            was_up = up.is_set()
            try:
                if r.random() < put_share:
                    item = f"soak-{cid}-{n}"
                    status, _, took = request(server.port, "PUT", f"/v1/items/{item}", item_body(r), server.key)
                    if status in (200, 201):
                        with lock:
                            acked.add(item)
                else:
                    body = {"user": r.choice(users), "k": 10}
                    status, _, took = request(server.port, "POST", "/v1/recommend", body, server.key)
                if status >= 500:
                    raise OSError(f"HTTP {status}")
                if was_up and up.is_set():
                    with lock:
                        res.latencies_ms.append(took * 1000)
            except OSError as exc:
                with lock:
                    if was_up and up.is_set():
                        res.errors_while_up.append(str(exc))
                    else:
                        res.errors_while_down += 1
                time.sleep(0.25)  # a client backs off while the server is away

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    moments = sorted(rng.uniform(0.15, 0.85) * seconds for _ in range(kills))
    t0 = time.monotonic()
    for m in moments:
        time.sleep(max(0.0, t0 + m - time.monotonic()))
        up.clear()
        server.kill()
        res.kills += 1
        res.restart_seconds.append(server.start())
        time.sleep(0.2)  # connections refused just before /health answered are counted as down
        up.set()
    for t in threads:
        t.join(timeout=seconds + 60)
    res.puts_acknowledged = len(acked)
    server.kill()
    server.start()
    found = 0
    for item in sorted(acked):
        status, _, _ = request(server.port, "GET", f"/v1/items/{item}", key=server.key)
        found += status == 200
    res.acknowledged_found = found
    return res
