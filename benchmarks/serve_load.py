"""Load test of ``prismrec serve``: a 100,000-item synthetic bundle, the real server (uvicorn,
one process) on loopback, 50 concurrent clients posting ``/v1/recommend``; latency p50/p99, throughput,
errors; missing and wrong API keys; top-k recall of the ANN index against exact search.

    .venv/bin/python benchmarks/serve_load.py --out bench_out/serving/load [--items 100000]
        [--requests 5000] [--concurrency 50]

The load generator runs on the same machine as the server (this machine has 2 cores), so the figures
are a lower bound of what the server alone does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


async def load(url: str, key: str, users: list[str], n: int, conc: int, k: int) -> dict:
    import httpx

    lat, codes = [], {}
    queue = iter(range(n))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(users), n)

    async def worker(client):
        for i in queue:
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/recommend", json={"user": users[picks[i]], "k": k},
                                      headers={"X-API-Key": key})
                code = str(r.status_code)
            except httpx.HTTPError as exc:  # counted as an error, never hidden
                code = type(exc).__name__
            lat.append(time.perf_counter() - t)
            codes[code] = codes.get(code, 0) + 1

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(conc)))
        wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000
    return {"requests": n, "concurrency": conc, "k": k, "wall_s": round(wall, 2), "throughput_rps": round(n / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2),
            "status_codes": dict(sorted(codes.items()))}


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out/serving/load")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--ann-threshold", type=int, default=50_000)
    ap.add_argument("--isotropic", action="store_true", help="unclustered random vectors (ANN worst case)")
    args = ap.parse_args()
    import httpx

    from prismrec.serve.bundle import load_bundle, synthetic_bundle

    bundle = args.out / f"bundle_{args.items}{'_iso' if args.isotropic else ''}"
    if not (bundle / "bundle.json").is_file():
        synthetic_bundle(bundle, args.items, args.users, args.dim, clusters=not args.isotropic)
    key = "load-test-key"
    env = {**os.environ, "PRISMREC_API_KEY": key, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "prismrec", "-q", "serve", str(bundle), "--port", str(args.port),
                               "--state", str(args.out / "state"), "--ann-threshold", str(args.ann_threshold)],
                              env=env, stdout=open(args.out / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("server did not start; see server.log")
        startup = time.perf_counter() - t0
        b = load_bundle(bundle)
        users = b.user_ids
        auth = {"missing_key": httpx.post(f"{url}/v1/recommend", json={"user": users[0], "k": 10}).status_code,
                "wrong_key": httpx.post(f"{url}/v1/recommend", json={"user": users[0], "k": 10},
                                        headers={"X-API-Key": "nope"}).status_code}
        # ANN recall@10 against exact search (seen items filtered in both)
        ue, ie = b.arrays["user_emb"], b.arrays["item_emb"]
        seen = b.seen()
        rec = []
        for u in range(0, 200):
            got = httpx.post(f"{url}/v1/recommend", json={"user": users[u], "k": 10}, headers={"X-API-Key": key}).json()
            s = ue[u] @ ie.T
            s[seen[u].indices] = -np.inf
            exact = {b.item_ids[i] for i in np.argpartition(-s, 10)[:10]}
            rec.append(len(exact & {x["item"] for x in got["items"]}) / 10)
        asyncio.run(load(url, key, users, 500, args.concurrency, 10))  # warm-up
        cpu0, own0 = _cpu_seconds(server.pid), _own_cpu()
        res = asyncio.run(load(url, key, users, args.requests, args.concurrency, 10))
        # CPU time per request, independent of what else runs on the machine
        res["server_cpu_ms_per_request"] = round(1000 * (_cpu_seconds(server.pid) - cpu0) / args.requests, 2)
        res["client_cpu_ms_per_request"] = round(1000 * (_own_cpu() - own0) / args.requests, 2)
        with open("/proc/loadavg") as fh:
            res["loadavg_after"] = fh.read().split()[:3]
        report = {"catalogue": "isotropic" if args.isotropic else "clustered", "items": args.items,
                  "users": args.users, "dim": args.dim, "index": health["index"],
                  "startup_s": round(startup, 1), "auth": auth, "ann_recall@10_vs_exact": round(float(np.mean(rec)), 4),
                  "load": res, "cpu": os.cpu_count()}
        kind = "exact" if health["index"].startswith("flat") else "ivf"
        name = f"load_{report['catalogue']}_{kind}_c{args.concurrency}.json"
        (args.out / name).write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
