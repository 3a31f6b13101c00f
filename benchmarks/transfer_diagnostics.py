"""Why a transfer strategy wins or loses: learning curves and which parameters moved.

Usage: python benchmarks/transfer_diagnostics.py bench_out/transfer/runs/SETTING --pretrained bench_out/transfer/CKPT
       [--metric recall@10] [--out DIR]

Reads the adaptation runs of one setting (``SETTING/<strategy>/seed-*``: ``history.jsonl``, ``model.pt``,
``metrics.json``, as ``benchmarks/transfer.sh`` writes them) and the pre-trained checkpoint's ``model.pt``.
Prints two Markdown tables and writes ``curves.png`` into --out (default: SETTING/diagnostics):

* learning curves, mean over seeds: the validation metric after epoch 1, 5, 10, 20, the best and where it is
  reached, the first epoch at which each strategy reaches scratch's best (a transfer that helps starts
  higher or gets there sooner), and the training loss at the first and best epoch;
* parameter movement per part of the model (transformer attention, feed-forward, layer norms, position
  embedding, input norm, whitening experts, gates, missing vectors): ``||θ − θ_pre|| / ||θ_pre||`` between the
  adapted weights (best epoch) and the pre-trained ones, mean over seeds. Frozen parts read 0. For parts a
  strategy re-initialises (``relearn``: experts, gates, position) the figure is the distance of the
  re-learned solution from the pre-trained one, as it is for every part of ``scratch`` (which loads nothing):
  scratch's row is the distance between two independent solutions, the reference for "far". A part that
  fine-tuning leaves exactly unchanged received no gradient (the missing-modality vectors when every item
  has the modality) and is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from prismrec.report.tables import Table, num

ORDER = ["scratch", "finetune", "adaptor", "relearn"]
# (label, predicate on the parameter name); the first match wins, unmatched names go to "other"
PARTS = [
    ("attention", lambda n: n.startswith("encoder.layers.") and ".self_attn." in n),
    ("feed-forward", lambda n: n.startswith("encoder.layers.") and ".linear" in n),
    ("block layer norms", lambda n: n.startswith("encoder.layers.") and ".norm" in n),
    ("position embedding", lambda n: n.startswith("encoder.position.")),
    ("input layer norm", lambda n: n.startswith("encoder.norm_in.")),
    ("whitening experts", lambda n: n.startswith("item_encoder.adaptors.") and (n.endswith(".weight") or ".bias" in n)),
    ("gates", lambda n: n.startswith("item_encoder.adaptors.") and (n.endswith(".gate") or n.endswith(".noise"))),
    ("missing vectors", lambda n: n.startswith("item_encoder.missing.")),
]


def part_of(name: str) -> str:
    return next((label for label, hit in PARTS if hit(name)), "other")


def movement(adapted: dict[str, torch.Tensor], pre: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative L2 distance per part over the parameters both state dicts hold with the same shape."""
    diff: dict[str, float] = {}
    base: dict[str, float] = {}
    for name, w in adapted.items():
        p = pre.get(name)
        if p is None or p.shape != w.shape or not torch.is_floating_point(w):
            continue
        part = part_of(name)
        diff[part] = diff.get(part, 0.0) + float(((w.double() - p.double()) ** 2).sum())
        base[part] = base.get(part, 0.0) + float((p.double() ** 2).sum())
    return {k: (diff[k] ** 0.5) / max(base[k] ** 0.5, 1e-12) for k in diff}


def curves(run: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "valid" in r]
    return np.array([r["valid"][metric] for r in rows]), np.array([r["loss"] for r in rows])


def mean_curve(curves_: list[np.ndarray]) -> np.ndarray:
    """Mean over seeds, epoch by epoch, over the epochs every seed ran (early stopping ends them apart)."""
    n = min(len(c) for c in curves_)
    return np.mean([c[:n] for c in curves_], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("setting", type=Path)
    ap.add_argument("--pretrained", type=Path, required=True)
    ap.add_argument("--metric", default="recall@10")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    out = a.out or a.setting / "diagnostics"
    pre = torch.load(a.pretrained / "model.pt", map_location="cpu", weights_only=True)
    strategies = sorted((p.name for p in a.setting.iterdir() if p.is_dir() and any(p.glob("seed-*/metrics.json"))),
                        key=lambda s: ORDER.index(s) if s in ORDER else 99)
    if not strategies:
        raise SystemExit(f"{a.setting}: no finished run (<strategy>/seed-*/metrics.json). Fix: run benchmarks/transfer.sh first.")
    valid, loss, moved = {}, {}, {}
    for s in strategies:
        runs = sorted(p.parent for p in (a.setting / s).glob("seed-*/metrics.json"))
        got = [curves(r, a.metric) for r in runs]
        valid[s], loss[s] = [v for v, _ in got], [l for _, l in got]
        per_seed = [movement(torch.load(r / "model.pt", map_location="cpu", weights_only=True), pre) for r in runs]
        moved[s] = {k: float(np.mean([m[k] for m in per_seed])) for k in per_seed[0]}

    # scratch's best on its seed-mean curve: the level a transfer has to reach
    target = float(mean_curve(valid["scratch"]).max()) if "scratch" in valid else None
    t = Table(["strategy", "seeds", *(f"valid {a.metric} @ epoch {e}" for e in (1, 5, 10, 20)), "best (epoch)",
               "first epoch at scratch's best", "train loss epoch 1 -> best"],
              caption=f"\n### Learning curves: {a.setting.name} (validation {a.metric}, mean over seeds)")
    for s in strategies:
        mc, ml = mean_curve(valid[s]), mean_curve(loss[s])
        at = [num(mc[e - 1]) if len(mc) >= e else "" for e in (1, 5, 10, 20)]
        best = int(mc.argmax())
        reach = ""
        if target is not None:
            hit = np.flatnonzero(mc >= target)
            reach = str(int(hit[0]) + 1) if len(hit) else "never"
        t.add(s, len(valid[s]), *at, f"{num(mc[best])} ({best + 1})", reach, f"{num(ml[0])} -> {num(ml[best])}")
    print(t.markdown())

    parts = [p for p, _ in PARTS] + ["other"]
    parts = [p for p in parts if any(p in moved[s] for s in strategies)]
    # a part fine-tuning left exactly where it was got no gradient (e.g. the missing vectors when every item has
    # the modality): its other figures are initialisation noise, so it is left out
    idle = [p for p in parts if "finetune" in moved and moved["finetune"].get(p) == 0.0]
    parts = [p for p in parts if p not in idle]
    m = Table(["strategy", *parts], caption="\n### Parameter movement: ||θ − θ_pre|| / ||θ_pre|| at the best epoch (mean over seeds)")
    for s in strategies:
        m.add(s, *(num(moved[s][p], 3) if p in moved[s] else "" for p in parts))
    print(m.markdown())
    if idle:
        print(f"\nleft out (no gradient under finetune): {', '.join(idle)}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in strategies:
        mc, ml = mean_curve(valid[s]), mean_curve(loss[s])
        ax1.plot(range(1, len(mc) + 1), mc, label=s)
        ax2.plot(range(1, len(ml) + 1), ml, label=s)
    ax1.set(xlabel="adaptation epoch", ylabel=f"valid {a.metric}", title=a.setting.name)
    ax2.set(xlabel="adaptation epoch", ylabel="training loss")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    tmp = out / "curves.png.tmp"
    fig.savefig(tmp, dpi=120, format="png")
    tmp.replace(out / "curves.png")
    print(f"\ncurves: {out / 'curves.png'}")


if __name__ == "__main__":
    main()
