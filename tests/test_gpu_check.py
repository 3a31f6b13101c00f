"""benchmarks/gpu_check.sh in its reduced CPU form: two models (one per family), one epoch, the 1-process
DDP smoke run (gloo), and the Markdown table."""

from __future__ import annotations

import json
import sys
import subprocess

import pytest

from conftest import REPO, cli_env

pytestmark = pytest.mark.slow


def test_gpu_check_runs_on_cpu(tmp_path):
    env = cli_env()
    env.update(GPU_CHECK_MODELS="bpr sasrec", GPU_CHECK_EPOCHS="1", GPU_CHECK_DDP_PROCS="1", PYTHON=sys.executable)
    out = tmp_path / "check"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "gpu_check.md").read_text()
    rows = json.loads((out / "models.json").read_text())
    assert [r["model"] for r in rows] == ["bpr", "sasrec"] and all(r["status"] == "ok" for r in rows)
    assert "| bpr | general | ok | 1 |" in table and "| sasrec | sequential | ok | 1 |" in table
    assert "DDP smoke run (torchrun --nproc_per_node 1): ok: lightgcn, 1 process(es), backend gloo" in table
    assert json.loads((out / "ddp" / "metrics.json").read_text())["distributed"] == {"processes": 1, "backend": "gloo"}


def test_gpu_check_rejects_unknown_options(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--devices", "cpu"], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown option --devices" in proc.stderr
