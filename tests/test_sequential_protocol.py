"""Both ranking protocols of the sequential models: history masked (the default) and not masked (RecBole's,
under which UniSRec, VQ-Rec and MISSRec report), switchable on a finished run without retraining."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prismrec.cli.main import app
from prismrec.compare import compare
from prismrec.errors import PrismrecError
from prismrec.report.tables import history_protocol
from prismrec.runs import evaluate_run, load_run, train_run

SMALL = ["train.batch_size=64", "max_len=8", "embedding_size=16", "train.topk=[1,5,10]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("seqrun") / "run"
    train_run("sasrec", "demo", out, overrides=SMALL, epochs=3)
    return out


def test_evaluate_under_the_other_protocol_without_retraining(run_dir):
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["mask_history"] is True
    masked = evaluate_run(run_dir, "test")
    assert masked == pytest.approx(saved["test"])
    unmasked = evaluate_run(run_dir, "test", {"train.mask_history": False})
    # the same weights scored without masking: what the evaluator gives for that configuration
    run = load_run(run_dir)
    run.config.train.mask_history = False
    assert unmasked == pytest.approx(run.evaluate("test", keep_per_user=False).metrics)
    assert unmasked != pytest.approx(masked)
    # nothing in the run directory changed
    assert json.loads((run_dir / "metrics.json").read_text()) == saved


def test_evaluate_refuses_settings_that_need_retraining(run_dir):
    with pytest.raises(PrismrecError, match="train.learning_rate.*mask_history.*Fix"):
        evaluate_run(run_dir, "test", ["train.learning_rate=0.1"])


def test_cli_evaluate_set_states_the_protocol(run_dir):
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--set", "train.mask_history=false"])
    assert res.exit_code == 0, res.output
    assert "history not masked" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--json", "--set", "train.mask_history=false"])
    want = evaluate_run(run_dir, "test", ["train.mask_history=false"])
    assert json.loads(res.output) == pytest.approx(want)
    res = CliRunner().invoke(app, ["evaluate", str(run_dir)])
    assert "history masked" in res.output


def test_compare_caption_states_the_protocol(tmp_path):
    out = tmp_path / "cmp"
    res = compare(["sasrec"], "demo", out, seeds=[0], overrides=[*SMALL, "train.mask_history=false"], epochs=1)
    assert "history not masked" in res.markdown.splitlines()[0]
    assert history_protocol([True, True]) == "history masked"
    assert "some runs" in history_protocol([True, False])
    assert history_protocol([None, True]) == "history masked" and history_protocol([None]) == ""


def test_masked_history_of_runs_old_and_new(run_dir, tmp_path):
    """metrics.json says it; a run written before it did: its config.yaml."""
    import shutil

    from prismrec.runs import masked_history

    assert masked_history(run_dir) is True
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    m = json.loads((old / "metrics.json").read_text())
    del m["mask_history"]
    (old / "metrics.json").write_text(json.dumps(m))
    assert masked_history(old) is True
