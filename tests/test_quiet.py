"""Quiet by default, detailed on request: one result line per run, each warning once, no per-epoch lines
unless -v, unwrapped lines when piped; the live progress line's pieces; runs trained side by side
(compare --jobs) give the results of runs trained one after the other."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import cli_env, write_mmrec
from prismrec.cli.main import _global_flags_first, _Once, _PlainFormatter
from prismrec.compare import compare
from prismrec.parallel import order_runs
from prismrec.utils import progress
from prismrec.utils.progress import FitLine, duration, seconds_left

EPOCH_LINE = re.compile(r"epoch\s+\d+ \| loss")
RESULT_LINE = re.compile(r"^(pop|bpr) seed [01]: test recall@10 ")


def _data_with_duplicates(root):
    """A tiny MMRec folder whose interactions repeat 5 (user, item) pairs: every load warns once."""
    folder, _ = write_mmrec(root / "data", name="dup", n_users=40, n_items=30, per_user=8)
    inter = pd.read_csv(folder / "dup.inter", sep="\t")
    pd.concat([inter, inter.iloc[:5]]).to_csv(folder / "dup.inter", sep="\t", index=False)
    return folder


def _start(*args: str) -> subprocess.Popen:
    env = cli_env()
    env["COLUMNS"] = "60"  # a narrow "terminal": piped output must not be wrapped at it
    return subprocess.Popen([sys.executable, "-m", "prismrec", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_compare_prints_results_and_each_warning_once_and_epochs_only_with_v(tmp_path):
    data = _data_with_duplicates(tmp_path)
    args = ["compare", "--data", str(data), "--model", "pop", "--model", "bpr", "--seeds", "0,1", "--epochs", "2",
            "--set", "train.batch_size=64", "--set", "train.threads=1", "--jobs", "1"]
    quiet = _start(*args, "--out", str(tmp_path / "q"))
    verbose = _start(*args, "--out", str(tmp_path / "v"), "-v")  # -v after the command works too
    q_out, q_err = quiet.communicate(timeout=240)
    v_out, v_err = verbose.communicate(timeout=240)
    assert quiet.returncode == 0 and verbose.returncode == 0, q_err + v_err

    lines = q_err.splitlines()
    dup = [line for line in lines if "duplicate" in line]
    # four runs read the data four times: the warning is shown once, whole, on one unwrapped line
    assert len(dup) == 1 and dup[0].startswith("warning: dup: 5 duplicate") and dup[0].endswith("to keep them."), lines
    assert sorted(line.split(":")[0] for line in lines if RESULT_LINE.match(line)) == \
        ["bpr seed 0", "bpr seed 1", "pop seed 0", "pop seed 1"], lines
    assert not any(EPOCH_LINE.search(line) for line in lines), lines
    assert not any("memory estimate" in line for line in lines), lines
    assert "| `bpr` |" in q_out and "tables saved in" in q_out

    v_lines = v_err.splitlines()
    assert sum(bool(EPOCH_LINE.search(line)) for line in v_lines) == 4, v_lines  # bpr: 2 seeds x 2 epochs
    assert sum("duplicate" in line for line in v_lines) == 1
    assert sum(bool(RESULT_LINE.match(line)) for line in v_lines) == 4


def test_the_main_flags_are_accepted_after_the_command():
    assert _global_flags_first(["compare", "-m", "bpr", "-v"]) == ["-v", "compare", "-m", "bpr"]
    assert _global_flags_first(["-q", "train", "--debug"]) == ["-q", "--debug", "train"]
    assert _global_flags_first(["train", "--", "-v"]) == ["train", "--", "-v"]
    assert _global_flags_first(["datasets"]) == ["datasets"]


def test_each_warning_passes_once_and_plain_lines_name_problems():
    once = _Once()

    def rec(level, msg, *args):
        return logging.LogRecord("prismrec", level, __file__, 1, msg, args, None)

    assert once.filter(rec(logging.WARNING, "demo: %d duplicates", 3))
    assert not once.filter(rec(logging.WARNING, "demo: %d duplicates", 3))
    assert once.filter(rec(logging.WARNING, "demo: %d duplicates", 4))  # another text
    assert once.filter(rec(logging.INFO, "bpr seed 0: done")) and once.filter(rec(logging.INFO, "bpr seed 0: done"))
    fmt = _PlainFormatter("%(message)s")
    assert fmt.format(rec(logging.WARNING, "careful")) == "warning: careful"
    assert fmt.format(rec(logging.INFO, "bpr seed 0: test")) == "bpr seed 0: test"


def test_time_left_is_the_lower_bound_before_an_early_stop():
    # 10 of 100 epochs done, 3 bad evaluations of patience 5: at least 2 more epochs (every epoch evaluated)
    assert seconds_left(10, 100, bad=3, patience=5, every=1, epoch_seconds=2.0) == 4.0
    assert seconds_left(10, 100, bad=3, patience=5, every=2, epoch_seconds=1.0) == 4.0
    assert seconds_left(98, 100, bad=0, patience=20, every=1, epoch_seconds=1.0) == 2.0  # the last epochs
    assert seconds_left(5, 10, bad=0, patience=None, every=1, epoch_seconds=3.0) == 15.0
    assert [duration(s) for s in (4.2, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_a_fit_line_in_a_worker_sends_its_state_to_the_main_process(monkeypatch):
    events = []
    monkeypatch.setattr(progress, "_SINK", events.append)
    line = FitLine("bpr seed 0", 50, metric="valid recall@20", patience=5, enabled=True)
    line.start_epoch(1, 7)
    line.end_epoch(1, 0.5, best=0.1234, best_epoch=1, bad=0, loss=0.69)
    line._sent = 0.0  # (events are throttled to four a second)
    line.batch(3, 0.5)
    line.close()
    assert events[0]["description"] == "bpr seed 0 · epoch 1/50" and events[0]["total"] == 7
    assert "best valid recall@20 0.1234 @ 1" in events[-2]["info"] and events[-2]["completed"] == 3
    assert events[-1] == {"closed": True}
    disabled = FitLine("x", 3, enabled=False)
    disabled.start_epoch(1, 2)
    disabled.close()
    assert len(events) == 3  # a disabled line sends and draws nothing


def test_runs_side_by_side_give_the_results_of_runs_one_after_the_other(tmp_path):
    folder, _ = write_mmrec(tmp_path / "data", features=8)
    kw = dict(seeds=[0, 1], epochs=2, overrides={"train": {"batch_size": 64, "threads": 1}})
    one = compare(["bpr", "lightgcn"], str(folder), tmp_path / "one", jobs=1, **kw)
    two = compare(["bpr", "lightgcn"], str(folder), tmp_path / "two", jobs=2, **kw)
    cols = [c for c in one.runs.columns if c.startswith(("test_", "valid_"))] + ["entry", "seed", "best_epoch"]
    pd.testing.assert_frame_equal(one.runs[cols], two.runs[cols])
    means = [c for c in one.summary.columns if c.endswith(("_mean", "_std")) and "seconds" not in c]
    pd.testing.assert_frame_equal(one.summary[means], two.summary[means])


def test_the_most_expensive_models_start_first():
    assert order_runs(["pop", "bpr", "lirdrec", "bpr", "lirdrec", "unknown"]) == [2, 4, 5, 1, 3, 0]


@pytest.mark.parametrize("flag", ["-q", None])
def test_piped_output_draws_no_live_line(flag, monkeypatch):
    from prismrec.cli import main as cli

    monkeypatch.setattr(cli, "_STATE", {"debug": False, "quiet": flag == "-q", "verbose": False})
    assert cli._progress() is False  # pytest's stderr is not a terminal
