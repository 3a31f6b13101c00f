"""The command line end to end: `python -m prismrec ...` in subprocesses, on an MMRec folder written here.

Interpreter start-up (torch, scipy, pandas) dominates the cost of each command, so commands that do not
depend on each other run concurrently: those that need only the data start with the test session
(conftest's ``cli_commands`` calls :func:`start_commands`), those that need the trained runs start together
in the ``trained`` fixture, and each test checks one command's result.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import CliProcess, write_mmrec

pytestmark = pytest.mark.slow

TRAIN_SETS = ["--set", "train.batch_size=64", "--set", "train.learning_rate=0.01",
              "--set", "bpr.embedding_size=16"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table(stdout: str) -> dict[str, str]:
    """``| metric | @10 | @20 |`` tables printed by train / evaluate -> {"recall@20": "0.1234", ...}."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[0] == "metric", stdout
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for k, v in zip(head[1:], cells[1:]):
            out[f"{cells[0]}{k}"] = v
    return out


def assert_user_error(res, *needles: str) -> None:
    """Exit status 2, one paragraph on stderr starting with 'error:', no traceback."""
    assert res.returncode == 2, str(res)
    err = res.stderr.strip()
    assert err.startswith("error:"), str(res)
    assert "\n\n" not in err and len(err.splitlines()) <= 3, str(res)
    assert "Traceback" not in res.stderr, str(res)
    for needle in needles:
        assert needle in err, (needle, str(res))


def start_commands(root: Path) -> SimpleNamespace:
    """Write the data and start every command that needs nothing but the data.

    Called by conftest's session fixture ``cli_commands`` at the start of the session (when tests of this
    file are selected), so these interpreters start while the in-process tests of other files run.
    """
    data, frame = write_mmrec(root / "data", "toy", features=8)    # 60 users, 60 items, 10 each, x_label
    (root / "data" / "junk").mkdir()
    (root / "data" / "junk" / "notes.txt").write_text("not a dataset\n")
    (root / "cwd").mkdir()
    ns = SimpleNamespace(root=root, data=data, frame=frame, run=root / "run", cmp=root / "cmp")
    ns.procs = {
        "train": CliProcess("train", "--model", "bpr", "--data", data, "--out", ns.run, "--epochs", "8",
                            "--seed", "3", *TRAIN_SETS),
        "compare": CliProcess("compare", "--model", "bpr", "--model", "lightgcn", "--data", data,
                              "--out", ns.cmp, "--seeds", "0,1", "--epochs", "3",
                              "--set", "train.batch_size=128", "--set", "embedding_size=16",
                              "--set", "lightgcn.n_layers=1"),
        "unknown_model": CliProcess("train", "--model", "lightgnc", "--data", data, "--out", root / "never1"),
        "missing_data": CliProcess("train", "--model", "bpr", "--data", root / "no-such-folder",
                                   "--out", root / "never2"),
        "bad_set": CliProcess("train", "--model", "bpr", "--data", data, "--out", root / "never3",
                              "--set", "train.learing_rate=0.01"),
        "datasets": CliProcess("datasets", "--root", root / "data", cwd=root / "cwd"),
    }
    return ns


@pytest.fixture(scope="module")
def cli(cli_commands):
    return cli_commands


@pytest.fixture(scope="module")
def trained(cli):
    """The finished `train` and `compare` runs, plus the commands that need them, started together."""
    res = cli.procs["train"].result()
    assert res.returncode == 0, str(res)
    res = cli.procs["compare"].result()
    assert res.returncode == 0, str(res)
    cli.before = {name: (sha(cli.run / name), (cli.run / name).stat().st_mtime_ns)
                  for name in ("metrics.json", "model.pt", "config.yaml", "split.npz")}
    cli.procs.update({
        "evaluate": CliProcess("evaluate", cli.run),
        "recommend": CliProcess("recommend", cli.run, "--user", "7", "-k", "5"),
        "out_exists": CliProcess("train", "--model", "bpr", "--data", cli.data, "--out", cli.run,
                                 "--epochs", "2"),
        "significance": CliProcess("significance", cli.cmp / "bpr" / "seed-0",
                                   cli.cmp / "lightgcn" / "seed-0"),
    })
    return cli


# ------------------------------------------------------------------------------------------- train
def test_train_writes_the_metrics_contract(trained):
    run = trained.run
    for name in ("metrics.json", "config.yaml", "split.npz", "model.pt", "history.jsonl",
                 "per_user_test.npz"):
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"] == "bpr"
    assert isinstance(m["best_epoch"], int) and 1 <= m["best_epoch"] <= 8
    assert isinstance(m["seed"], int) and m["seed"] == 3
    assert isinstance(m["epochs_run"], int) and m["epochs_run"] == 8
    assert isinstance(m["train_seconds"], float) and m["train_seconds"] > 0
    assert isinstance(m["valid"], dict) and 0 <= m["valid"]["recall@20"] <= 1
    for k in ("recall@20", "ndcg@20", "recall@10", "precision@50", "map@20", "hit@10", "mrr@20"):
        assert 0 <= m["test"][k] <= 1, k
    assert m["test_users"] == 60  # every user has a test item and training items
    assert m["split"] == {"rule": "given", "train": 480, "valid": 60, "test": 60}
    # the printed table shows the same test metrics
    printed = table(trained.procs["train"].result().stdout)
    assert printed["recall@20"] == f"{m['test']['recall@20']:.4f}"
    assert printed["ndcg@20"] == f"{m['test']['ndcg@20']:.4f}"


def test_train_saves_the_given_split_and_resolved_config(trained):
    with np.load(trained.run / "split.npz") as z:
        saved = set(zip(z["users"].tolist(), z["items"].tolist(), z["labels"].tolist()))
    f = trained.frame
    assert saved == set(zip(f["userID"], f["itemID"], f["x_label"]))
    import yaml

    cfg = yaml.safe_load((trained.run / "config.yaml").read_text())
    assert cfg["model"] == "bpr" and cfg["seed"] == 3
    assert cfg["train"]["epochs"] == 8 and cfg["train"]["batch_size"] == 64
    assert cfg["params"]["embedding_size"] == 16
    assert Path(cfg["data_source"]) == trained.data


def test_evaluate_prints_the_saved_test_metrics(trained):
    res = trained.procs["evaluate"].result()
    assert res.returncode == 0, str(res)
    m = json.loads((trained.run / "metrics.json").read_text())
    printed = table(res.stdout)
    assert printed["recall@20"] == f"{m['test']['recall@20']:.4f}"
    assert printed["ndcg@10"] == f"{m['test']['ndcg@10']:.4f}"


def test_recommend_skips_the_users_items(trained):
    res = trained.procs["recommend"].result()
    assert res.returncode == 0, str(res)
    assert res.stdout.splitlines()[0] == "user 7:"
    rows = re.findall(r"^\s+(\d+)\.\s+(\S+)\s*$", res.stdout, flags=re.M)
    assert [int(r) for r, _ in rows] == [1, 2, 3, 4, 5]
    items = [int(i) for _, i in rows]
    assert len(set(items)) == 5 and all(0 <= i < 60 for i in items)
    f = trained.frame
    mine = f[f["userID"] == 7]
    assert not set(items) & set(mine.loc[mine["x_label"] == 0, "itemID"])  # training items
    assert not set(items) & set(mine["itemID"])                              # nor anything else seen


def test_saved_run_reloads_in_process(trained):
    """The same run through the Python API: reload, recommend (unknown ids are a clear error)."""
    from prismrec.errors import DataError
    from prismrec.runs import load_run

    run = load_run(trained.run)
    frame = run.recommend(["7"], k=5)
    printed = re.findall(r"^\s+\d+\.\s+(\S+)\s*$", trained.procs["recommend"].result().stdout, flags=re.M)
    assert frame["item"].tolist() == printed
    assert frame["score"].is_monotonic_decreasing
    with pytest.raises(DataError, match="unknown user id 'nobody'"):
        run.recommend(["nobody"])


def test_out_holding_a_finished_run_is_not_overwritten(trained):
    res = trained.procs["out_exists"].result()
    assert_user_error(res, "already holds a finished run", "nothing is overwritten", "--resume")
    for name, (digest, mtime) in trained.before.items():
        assert sha(trained.run / name) == digest, name
        assert (trained.run / name).stat().st_mtime_ns == mtime, name


# ----------------------------------------------------------------------------------------- compare
def test_compare_writes_mean_and_std_tables(trained):
    res = trained.procs["compare"].result()
    out = trained.cmp
    assert (out / "results.md").is_file() and (out / "results.csv").is_file()
    summary = pd.read_csv(out / "results.csv")
    assert summary["entry"].tolist() == ["bpr", "lightgcn"]
    assert summary["seeds"].tolist() == [2, 2]
    md = (out / "results.md").read_text()
    assert md in res.stdout
    assert f"report saved in {out / 'report.html'}" in res.stdout and (out / "report.html").is_file()
    for entry in ("bpr", "lightgcn"):
        vals = []
        for seed in (0, 1):
            m = json.loads((out / entry / f"seed-{seed}" / "metrics.json").read_text())
            assert m["model"] == entry and m["seed"] == seed and m["epochs_run"] == 3
            vals.append(m["test"]["recall@20"])
        a, b = vals
        row = summary[summary["entry"] == entry].iloc[0]
        mean, std = (a + b) / 2, abs(a - b) / math.sqrt(2)    # sample std (ddof=1) of two values
        assert row["recall@20_mean"] == pytest.approx(mean, abs=1e-12)
        assert row["recall@20_std"] == pytest.approx(std, abs=1e-12)
        assert f"| `{entry}` | " in md
        assert f"{mean:.4f} ± {std:.4f}" in md
    # the seeds really differ (different initialisations), so the spread is not zero
    assert summary.loc[summary["entry"] == "bpr", "recall@20_std"].iloc[0] > 0
    assert "p_value" in summary.columns and not np.isnan(summary["p_value"].iloc[1])


def test_compare_tests_every_entry_against_each_reference(trained, tmp_path):
    """``references`` (``compare --ref``, repeatable): one paired test per reference and entry, one p column each
    in the table; finished runs are reused, nothing is trained again; a name that is no entry is refused."""
    from prismrec.compare import compare
    from prismrec.errors import ConfigError

    out = tmp_path / "cmp"
    shutil.copytree(trained.cmp, out)
    stamp = (out / "bpr" / "seed-0" / "metrics.json").stat().st_mtime_ns
    sets = ["train.batch_size=128", "embedding_size=16", "lightgcn.n_layers=1"]
    res = compare(["bpr", "lightgcn"], trained.data, out, seeds=(0, 1), epochs=3, overrides=sets,
                  references=["lightgcn", "bpr", "lightgcn"])  # a repeated reference counts once
    assert (out / "bpr" / "seed-0" / "metrics.json").stat().st_mtime_ns == stamp
    s = res.summary.set_index("entry")
    gap = s.loc["bpr", "ndcg@20_mean"] - s.loc["lightgcn", "ndcg@20_mean"]
    assert s.loc["bpr", "diff_vs_lightgcn"] == pytest.approx(gap, abs=1e-9)
    assert s.loc["lightgcn", "diff_vs_bpr"] == pytest.approx(-gap, abs=1e-9)
    assert s.loc["bpr", "p_vs_lightgcn"] == pytest.approx(s.loc["lightgcn", "p_vs_bpr"])
    assert s.loc["bpr", "p_value"] == s.loc["bpr", "p_vs_lightgcn"] and np.isnan(s.loc["lightgcn", "p_value"])
    assert res.markdown.count("p vs lightgcn (ndcg@20)") == 1 and "p vs bpr (ndcg@20)" in res.markdown
    with pytest.raises(ConfigError, match="'freedom' names no entry.*bpr, lightgcn"):
        compare(["bpr", "lightgcn"], trained.data, out, seeds=(0, 1), epochs=3, overrides=sets,
                references=["freedom"])


def test_paired_script_wide_layout_matches_the_pooled_tests(trained):
    """``benchmarks/paired.py --wide`` (the layout of docs/benchmarks.md's paired tables): one row per model,
    one "diff (t p / Wilcoxon p)" cell per reference and metric, equal to the pooled rows of the long layout."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired.py"
    args = [sys.executable, script, trained.cmp, "--ref", "lightgcn", "--ref", "bpr",
            "--models", "bpr,lightgcn", "--metrics", "recall@20,ndcg@20", "--layout", "compare"]
    long_ = subprocess.run([*map(str, args)], capture_output=True, text=True, check=True).stdout
    wide = subprocess.run([*map(str, args), "--wide"], capture_output=True, text=True, check=True).stdout
    pooled = {}
    for line in long_.splitlines():
        c = [x.strip() for x in line.strip("|").split("|")]
        if len(c) == 9 and c[2] == "pooled":
            pooled.setdefault(c[0], []).append(f"{c[5]} ({c[7]} / {c[8]})")
    rows = {c[0]: c[1:] for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in wide.splitlines()
                                  if ln.startswith("| bpr |") or ln.startswith("| lightgcn |"))}
    assert [cell.replace("**", "") for cell in rows["bpr"][:2]] == pooled["bpr"]     # bpr - lightgcn
    assert [cell.replace("**", "") for cell in rows["lightgcn"][2:]] == pooled["lightgcn"]  # lightgcn - bpr
    assert rows["bpr"][2:] == ["", ""] and rows["lightgcn"][:2] == ["", ""]          # no test against itself
    assert rows["bpr"][0].replace("**", "").lstrip("+-") == rows["lightgcn"][2].replace("**", "").lstrip("+-")


def test_significance_between_two_runs(trained):
    res = trained.procs["significance"].result()
    assert res.returncode == 0, str(res)
    a = json.loads((trained.cmp / "bpr" / "seed-0" / "metrics.json").read_text())
    b = json.loads((trained.cmp / "lightgcn" / "seed-0" / "metrics.json").read_text())
    text = res.stdout.strip()
    assert text.startswith("ndcg@20: ")
    assert f"{a['test']['ndcg@20']:.4f} vs " in text
    assert f" {b['test']['ndcg@20']:.4f} on {a['test_users']} users" in text
    diff = b["test"]["ndcg@20"] - a["test"]["ndcg@20"]
    assert f"diff (B-A) {diff:+.4f}" in text
    assert "paired t p=" in text and "Wilcoxon p=" in text and "95% CI" in text


# ---------------------------------------------------------------------------------------- datasets
def test_datasets_lists_the_root_folder(cli):
    res = cli.procs["datasets"].result()
    assert res.returncode == 0, str(res)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("| name | format | users | items | interactions |")
    toy = [ln for ln in lines if ln.startswith("| toy |")]
    # 60 users, 60 items, 600 interactions, density 600 / 3600, the given split and the image features
    assert len(toy) == 1
    assert toy[0].startswith("| toy | mmrec | 60 | 60 | 600 | 0.16667 | given | image 8-d")
    assert any(ln.startswith("| junk | unreadable:") for ln in lines)


# ------------------------------------------------------------------------------------------ errors
def test_unknown_model_is_a_one_paragraph_error(cli):
    res = cli.procs["unknown_model"].result()
    assert_user_error(res, "Unknown model 'lightgnc'.", "Did you mean 'lightgcn'?",
                      "Known: ", "lightgcn, lirdrec, ", "pop")
    assert not (cli.root / "never1" / "metrics.json").exists()


def test_missing_data_path(cli):
    res = cli.procs["missing_data"].result()
    assert_user_error(res, "no dataset named or found at", "no-such-folder", "Fix:")


def test_unknown_set_key_suggests(cli):
    res = cli.procs["bad_set"].result()
    assert_user_error(res, "Unknown key 'learing_rate'", "Did you mean 'learning_rate'?")
    assert not (cli.root / "never3" / "metrics.json").exists()
