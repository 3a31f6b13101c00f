"""Soak benchmark of the service: 50 concurrent clients mix recommendations and item writes (PUT) for a
bounded time while the server is killed with SIGKILL at random moments and restarted; afterwards every
acknowledged write must be found. Reports requests, acknowledged writes, writes found after the
restarts, errors while down / up, p50 / p99 latency, for 1 and for 2 service processes.

    python benchmarks/serve_soak.py --out bench_out/serving/soak            # demo bundle, LightGCN
    python benchmarks/serve_soak.py --seconds 60 --kills 5 --workers 1,2

Only 127.0.0.1 is contacted; every loop is bounded in count and time. New items are placed from their
text with the bundle's own text encoder (all-MiniLM-L6-v2 for the bundled demo, needs `[features]`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prismrec.runs import train_run  # noqa: E402
from prismrec.serve.bundle import export_bundle, load_bundle  # noqa: E402
from prismrec.serve.soak import ServerProcess, free_port, run_soak  # noqa: E402

WORDS = ["desk", "lamp", "pen", "paper", "stapler", "chair", "notebook", "marker", "binder", "tape"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--model", default="lightgcn")
    ap.add_argument("--out", default="bench_out/serving/soak")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--put-share", type=float, default=0.3)
    args = ap.parse_args()
    out = Path(args.out)
    run_dir = out / "run"
    if not (run_dir / "metrics.json").is_file():
        train_run(args.model, args.data, run_dir, overrides=["train.threads=1"], epochs=5, resume=run_dir.exists())
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        bundle = out / f"bundle-{workers}"
        shutil.rmtree(bundle, ignore_errors=True)
        export_bundle(run_dir, bundle)
        users = load_bundle(bundle).user_ids
        server = ServerProcess(bundle, port=free_port(), key="soak-key", workers=workers,
                               log=out / f"server-{workers}.log")
        server.start(timeout=300)
        try:
            res = run_soak(server, users=users, seconds=args.seconds, clients=args.clients, kills=args.kills,
                           put_share=args.put_share,
                           item_body=lambda r: {"title": f"{r.choice(WORDS)} {r.randint(0, 10**6)}",
                                                "text": " ".join(r.choice(WORDS) for _ in range(8))})
        finally:
            server.stop()
        row = {"workers": workers, "seconds": args.seconds, "clients": args.clients, **res.summary()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "soak.json").write_text(json.dumps(rows, indent=1))
    print("| processes | requests | acknowledged PUTs | found after restarts | kills | errors while up | "
          "errors while down | p50 ms | p99 ms | restart s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['requests']} | {r['puts_acknowledged']} | "
              f"{r['acknowledged_found_after_restarts']} | {r['kills']} | {r['errors_while_up']} | "
              f"{r['errors_while_down']} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_restart_s']} |")


if __name__ == "__main__":
    main()
