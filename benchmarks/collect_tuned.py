"""What an equal-budget comparison (`prismrec compare --tune N`) spent and found, per model.

For each entry of a compare folder (``OUT/<entry>/tune`` holds its study, ``runs.csv`` its seed runs): the
trials (complete / pruned / failed), the epochs trained in the search and its wall time (the sum of its complete
and pruned trials' durations), both from the study's storage (``prismrec.study.search_cost``), the seed runs' training time (not counting a seed
run copied from the selected trial, ``trained_as.json``: its training is in the search's), the selected setting with
its validation score, and the seeds' test mean ± std. Markdown on stdout.

Pruning's saving is ``search_cost``'s estimate (a pruned trial counted at the study's completed trials' mean length);
the last line gives the share of epochs saved over all studies of the folder.

Usage: python benchmarks/collect_tuned.py bench_out/tuned_topk/scientific_mm [--metric recall@20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.report.html import run_dir_candidates
from prismrec.runs import TRAINED_AS_FILE
from prismrec.study import load_spec, open_study, search_cost, trials_frame


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--metric", default="recall@20")
    args = ap.parse_args()
    runs = pd.read_csv(args.folder / "runs.csv")
    rows, totals = [], {"epochs": 0, "saved": 0.0}
    for entry, sub in runs.groupby("entry", sort=False):
        # the entry's folder (brackets become _): under the folder given, not the path recorded at compare time
        tune = next((c.parent / "tune" for c in run_dir_candidates(args.folder, str(sub["run_dir"].iloc[0]))
                     if (c.parent / "tune" / "study.json").is_file()), None)
        if tune is None:
            continue
        study = open_study(load_spec(tune), create=False)  # a read: the journal is left as it is
        frame = trials_frame(study)
        states = frame["state"].value_counts()
        cost = search_cost(frame)
        epochs, saved = cost["epochs"], cost["saved_epochs"]
        totals["epochs"] += epochs
        totals["saved"] += saved
        best = study.best_trial
        test = sub[f"test_{args.metric}"].to_numpy(float)
        rows.append({
            "model": entry,
            "trials (complete / pruned / failed)": f"{states.get('complete', 0)} / {states.get('pruned', 0)} / "
                                                   f"{states.get('fail', 0)}",
            "epochs in the search": epochs,
            "epochs saved by pruning (est.)": round(saved),
            "search wall s": round(cost["seconds"]),
            # a seed run copied from the selected trial (trained_as.json) was trained, and timed, in the search
            "seed runs train s": round(float(sub.loc[[not (run_dir_candidates(args.folder, d)[0] / TRAINED_AS_FILE)
                                                      .is_file() for d in sub["run_dir"]], "train_seconds"].sum())),
            "selected setting": ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()),
            f"valid {args.metric} (trial seed)": f"{best.value:.4f}",
            f"test {args.metric}": f"{np.mean(test):.4f} ± {np.std(test, ddof=1) if len(test) > 1 else 0:.4f}",
            "peak RSS MB": int(sub["peak_rss_mb"].max()),
        })
    from prismrec.report.tables import Table

    table = Table(list(rows[0]))
    for r in rows:
        table.add(*r.values())
    print(table.markdown())
    if totals["epochs"]:
        share = totals["saved"] / (totals["epochs"] + totals["saved"])
        print(f"\nPruning saved about {totals['saved']:.0f} epochs, {share:.0%} of what the searches would have "
              f"trained without it ({totals['epochs']} trained; estimate: each pruned trial counted at its study's "
              f"mean completed length).")


if __name__ == "__main__":
    main()
