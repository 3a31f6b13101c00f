"""What an equal-budget comparison (`prismrec compare --tune N`) spent and found, per model.

For each entry of a compare folder (``OUT/<entry>/tune`` holds its study, ``runs.csv`` its seed runs): the
trials (complete / pruned / failed), the epochs trained in the search, the search's wall time (the sum of
its complete and pruned trials' durations, from the study's storage), the seed runs' training time (not counting a seed
run copied from the selected trial, ``trained_as.json``: its training is in the search's), the selected setting with
its validation score, and the seeds' test mean ± std. Markdown on stdout.

Pruning's saving is an estimate: a pruned trial is counted as if it would have run as many epochs as the
study's completed trials did on average (what it would really have run is unknown once it is stopped);
the last line gives the share of epochs saved over all studies of the folder.

Usage: python benchmarks/collect_tuned.py bench_out/tuned_topk/scientific_mm [--metric recall@20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from prismrec.report.html import run_dir_candidates
from prismrec.runs import TRAINED_AS_FILE


def _study(tune: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads((tune / "study.json").read_text())
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tune / "study.journal")))
    return spec, optuna.load_study(study_name=spec["study_name"], storage=storage)


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
        spec, study = _study(tune)
        trials = [t for t in study.trials if not t.user_attrs.get("over_budget")]
        states = pd.Series([t.state.name.lower() for t in trials]).value_counts()
        # a failed trial is a killed run: its span runs to when a later start noticed it (not compute), and
        # its retry resumes the run from its checkpoint, so only complete and pruned trials are summed
        search_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                       if t.datetime_complete and t.datetime_start and t.state.name in ("COMPLETE", "PRUNED"))
        tried = pd.read_csv(tune / "trials.csv")
        epochs = int(tried["epochs_run"].fillna(0).sum())
        done = tried.loc[tried["state"] == "complete", "epochs_run"]
        pruned = tried.loc[tried["state"] == "pruned", "epochs_run"].fillna(0)
        saved = float((done.mean() - pruned).clip(lower=0).sum()) if len(done) and len(pruned) else 0.0
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
            "search wall s": round(search_s),
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
