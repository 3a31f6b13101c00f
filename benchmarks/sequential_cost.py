"""Cost of every sequential model, one version of the code against another: CPU seconds per training step and
per (extrapolated) epoch, one validation pass, peak RSS, on `scientific` and MovieLens-1M.

Each cell is one ``benchmarks/step_cost.py --epoch --eval`` process (one thread, the same batches and seeds
in both versions; equal losses show the same computation), run with ``PYTHONPATH`` set to each checkout's
``src``. CPU seconds are the figure to compare on a shared machine (wall seconds grow with the other jobs).
Resumable: every finished cell is a line of ``--out`` (JSON) and is not run again.

Usage (from the repository root)::

    git worktree add --detach ../before 19b524c      # the code before issue 16's cost work
    PRISMREC_DATA=../shared/data python benchmarks/sequential_cost.py --before ../before \\
        --out bench_out/seq_cost/sequential_cost.jsonl    # then prints the markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gru4rec", "sasrec", "sasrecf", "demure", "mdsrec")
SAMPLED = ("loss_type=sampled", "num_sampled=1024")
WINDOWS = ("positions=from_start", "training_samples=windows")


def cells(datasets: list[str], ml1m: str) -> list[dict]:
    """(dataset, model, settings, steps) of the table; Demure measured past its warm-up (the contrastive
    term on). On MovieLens-1M both losses (the table of §2.5 uses the sampled one) and MDSRec's windows."""
    out = []
    for d in datasets:
        data = ml1m if d == "ml-1m" else d
        losses = [(), SAMPLED] if d == "ml-1m" else [()]
        for m in MODELS:
            for loss in losses:
                sets = (*loss, "warmup_epochs=0") if m == "demure" else loss
                out.append({"dataset": d, "data": data, "model": m, "sets": sets, "steps": 20})
                if m == "mdsrec" and d == "ml-1m" and loss:
                    out.append({"dataset": d, "data": data, "model": m, "sets": (*loss, *WINDOWS), "steps": 6,
                                "new": True})  # an option the older code does not have
    return out


def key(cell: dict, version: str) -> str:
    return json.dumps([version, cell["dataset"], cell["model"], list(cell["sets"])])


def run_cell(cell: dict, src: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--model", cell["model"], "--data",
           cell["data"], "--steps", str(cell["steps"]), "--epoch", "--eval"]
    for s in cell["sets"]:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={src}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def table(rows: dict[str, dict], versions: list[str], todo: list[dict]) -> str:
    def label(c: dict) -> tuple[str, str]:
        sets = [s for s in c["sets"] if s != "warmup_epochs=0"]
        loss = "sampled 1,024" if "loss_type=sampled" in sets else "full softmax"
        return f"{c['model']}{', windows' if 'training_samples=windows' in sets else ''}", loss

    lines = ["| data | model | loss | steps / epoch | CPU s / step | CPU s / epoch | CPU s / validation | "
             "peak RSS MB | same losses |", "|---|---|---|---|---|---|---|---|---|"]
    for c in todo:
        got = [rows.get(key(c, v)) for v in versions]
        if not any(got):
            continue
        name, loss = label(c)

        def pair(f, nd=2):
            vals = ["–" if g is None else f"{f(g):,.{nd}f}" for g in got]
            return " → ".join(vals)
        same = "yes" if all(got) and got[0]["losses"] == got[-1]["losses"] else ("no" if all(got) else "")
        steps = " → ".join("–" if g is None else str(g["steps_per_epoch"]) for g in got)
        per_step = pair(lambda g: g['cpu_s'] / g['steps'], 3)
        lines.append(f"| {c['dataset']} | {name} | {loss} | {steps} | {per_step} | "
                     f"{pair(lambda g: g['epoch_cpu_s'], 1)} | {pair(lambda g: g['eval_cpu_s'])} | "
                     f"{pair(lambda g: g['peak_rss_mb'], 0)} | {same} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, help="a checkout of the older version (its src is used)")
    ap.add_argument("--datasets", default="scientific,ml-1m")
    ap.add_argument("--ml1m", default=os.path.join(os.environ.get("PRISMREC_DATA", "../shared/data"),
                                                   "movielens", "ml-1m"))
    ap.add_argument("--out", type=Path, default=Path("bench_out/seq_cost/sequential_cost.jsonl"))
    ap.add_argument("--table-only", action="store_true", help="print the table of the finished cells")
    args = ap.parse_args()

    todo = cells(args.datasets.split(","), args.ml1m)
    checkouts = ([args.before.resolve()] if args.before else []) + [ROOT]
    versions = (["before"] if args.before else []) + ["after"]  # the commits are kept in each record
    rows: dict[str, dict] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            rec = json.loads(line)
            rows[rec["key"]] = rec
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for c in todo:
            for checkout, version in zip(checkouts, versions):
                k = key(c, version)
                if k in rows or (c.get("new") and version == "before"):
                    continue
                rec = {"key": k, "version": version, "commit": commit_of(checkout),
                       **run_cell(c, checkout / "src")}
                rows[k] = rec
                with args.out.open("a") as f:  # a line per finished cell: a killed run loses one cell at most
                    f.write(json.dumps(rec) + "\n")
                print(f"{version} {c['dataset']} {c['model']} {' '.join(c['sets'])}: "
                      f"{rec['epoch_cpu_s']} CPU s/epoch, {rec['eval_cpu_s']} CPU s/validation", flush=True)
    commits = {v: sorted({r["commit"] for r in rows.values() if r["version"] == v}) for v in versions}
    print("versions: " + " → ".join(f"{v} ({', '.join(commits[v]) or 'not run'})" for v in versions))
    print(table(rows, versions, todo))


if __name__ == "__main__":
    main()
