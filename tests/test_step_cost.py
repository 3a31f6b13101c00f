"""``benchmarks/step_cost.py --epoch --eval`` (the cells of ``benchmarks/sequential_cost.py``): the epoch's
step count, a validation pass over every validation user, and the path for older checkouts (no
``runs.prepare``) computing the same steps."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from conftest import write_mmrec

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_cost.py"


def run_script(monkeypatch, capsys, folder: Path, *extra: str) -> dict:
    monkeypatch.setattr(sys, "argv", ["step_cost.py", "--model", "sasrecf", "--data", str(folder),
                                      "--steps", "2", "--set", "train.batch_size=16", *extra])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_step_cost_counts_the_epoch_and_times_a_validation_pass(tmp_path, monkeypatch, capsys):
    folder, frame = write_mmrec(tmp_path, features=8)  # 60 users, 10 items each: 8 train, 1 valid, 1 test
    out = run_script(monkeypatch, capsys, folder, "--epoch", "--eval")
    # one training window per user (8 items < max_len), 16 a step: 60 windows -> 4 steps
    assert out["steps"] == 2 and out["steps_per_epoch"] == 4
    assert out["epoch_cpu_s"] == pytest.approx(out["cpu_s"] / 2 * 4, abs=0.06)
    assert out["users"] == frame.loc[frame["x_label"] == 1, "userID"].nunique() == 60
    assert out["items"] == 60 and out["mask_history"] is True
    assert out["eval_cpu_s"] >= 0 and out["peak_rss_mb"] > 0

    import prismrec.runs

    monkeypatch.delattr(prismrec.runs, "prepare")  # as in a checkout older than runs.prepare
    old = run_script(monkeypatch, capsys, folder)
    assert old["losses"] == out["losses"] and "steps_per_epoch" not in old
