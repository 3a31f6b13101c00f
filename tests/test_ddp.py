"""Data-parallel training with torchrun (2 gloo processes on the CPU) against one process.

Tolerances (stated in docs/cli.md): with the same global batch and seed, a DDP run of BPR ends with the
one-process metrics to within 1e-3 absolute on every metric (the step is the global batch's step up to
the order of floating-point sums; MMRec's batch-norm regulariser is the one per-rank term); SASRec with
dropout 0 to within 0.02 (its window loss is a mean over the shard's non-padded positions, not the
batch's). Only rank 0 writes: the run folder holds exactly a one-process run's files, a write from
another rank would fail the run, and the table is printed once. A DDP run killed with SIGKILL resumes to
exactly the uninterrupted DDP run's result.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, cli_env, write_mmrec
from prismrec.runs import train_run

pytestmark = pytest.mark.slow

EPOCHS = 8
BPR_SETS = ["train.batch_size=256", "train.patience=1000", "train.threads=1", "train.lr_scheduler=[0.9,2]",
            "train.learning_rate=0.005", "train.topk=[10,20]", "bpr.embedding_size=32"]
BPR_TOL = 1e-3
SASREC_TOL = 0.02


def torchrun(*args: str, nproc: int = 2) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node nproc -m prismrec ARGS`` in its own process group."""
    out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    env = cli_env()
    env["TORCH_CPP_LOG_LEVEL"] = "ERROR"  # DDP's one-time note on find_unused_parameters
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", "-m", "prismrec", *map(str, args)],
                            cwd=REPO, env=env, stdout=out, stderr=err, text=True, start_new_session=True)
    proc.files = (out, err)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    out, err = proc.files  # type: ignore[attr-defined]
    out.seek(0)
    err.seek(0)
    return rc, out.read(), err.read()


def bpr_args(data: Path) -> list[str]:
    args = ["-v", "train", "--model", "bpr", "--data", str(data), "--epochs", str(EPOCHS), "--seed", "5"]
    for s in BPR_SETS:
        args += ["--set", s]
    return args


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def close(a: dict[str, float], b: dict[str, float], tol: float) -> float:
    assert set(a) == set(b)
    return max(abs(a[k] - b[k]) for k in a) if a else 0.0


@pytest.fixture(scope="module")
def bpr_runs(tmp_path_factory):
    """The same BPR run on ~30k interactions: one process (in this process) and two DDP processes."""
    root = tmp_path_factory.mktemp("ddp")
    data, _ = write_mmrec(root / "data", "big", n_users=2000, n_items=500, per_user=15, n_groups=8, noise=0.1,
                          label=False)
    ddp = torchrun(*bpr_args(data), "--out", root / "ddp")
    threads = torch.get_num_threads()
    try:
        train_run("bpr", str(data), root / "one", overrides=BPR_SETS, seed=5, epochs=EPOCHS)
    finally:
        torch.set_num_threads(threads)
    rc, out, err = finish(ddp)
    assert rc == 0, err
    return data, root / "one", root / "ddp", out, err


def test_ddp_bpr_matches_one_process(bpr_runs):
    _, one, ddp, out, err = bpr_runs
    m1, m2 = metrics(one), metrics(ddp)
    assert m2["distributed"] == {"processes": 2, "backend": "gloo"} and "distributed" not in m1
    assert m2["epochs_run"] == m1["epochs_run"] == EPOCHS
    assert m2["best_epoch"] == m1["best_epoch"]
    assert close(m1["test"], m2["test"], BPR_TOL) <= BPR_TOL
    assert close(m1["valid"], m2["valid"], BPR_TOL) <= BPR_TOL
    assert m1["test"]["recall@20"] > 0.1  # it learned something, so equal results are not trivially equal
    # the logged loss is the global batch's (the BPR term: a mean over the batch)
    for h1, h2 in zip(history(one), history(ddp)):
        assert abs(h1["bpr"] - h2["bpr"]) < 1e-3
    # only rank 0 wrote: the same files as one process (a write from rank 1 fails the run), printed once
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
    assert out.count("run saved in") == 1
    assert len(re.findall(r"epoch\s+1 \| loss", err)) == 1  # rank 0's log lines only


@pytest.mark.parametrize("model", ["sasrec"])
def test_ddp_sequential_matches_one_process(tmp_path, model):
    sets = ["train.threads=1", "train.batch_size=128", "train.patience=1000", f"{model}.dropout=0",
            "train.topk=[10,20]"]
    args = ["-q", "train", "--model", model, "--data", "demo", "--epochs", "3", "--seed", "1"]
    for s in sets:
        args += ["--set", s]
    ddp = torchrun(*args, "--out", tmp_path / "ddp")
    threads = torch.get_num_threads()
    try:
        train_run(model, "demo", tmp_path / "one", overrides=sets, seed=1, epochs=3)
    finally:
        torch.set_num_threads(threads)
    rc, _, err = finish(ddp)
    assert rc == 0, err
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "ddp")
    assert m2["distributed"]["processes"] == 2
    assert close(m1["test"], m2["test"], SASREC_TOL) <= SASREC_TOL, (m1["test"], m2["test"])
    assert m1["test"]["ndcg@10"] > 0.01
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (torchrun starts each rank in a session of its own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the ranks, then torchrun itself."""
    for pid in children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_ddp_run_resumes_after_sigkill(bpr_runs, tmp_path):
    """SIGKILL every process of a 2-rank run mid-training; --resume ends exactly where the uninterrupted
    DDP run did."""
    data, _, ref, _, _ = bpr_runs
    run_dir = tmp_path / "killed"
    victim = torchrun(*bpr_args(data), "--out", run_dir)
    ckpt = run_dir / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 180
        while checkpoint_epoch(ckpt) < 2:
            assert victim.poll() is None, finish(victim)
            assert time.monotonic() < deadline, "the run never finished two epochs"
            time.sleep(0.02)
        time.sleep(0.1)
        kill_all(victim)  # both ranks and torchrun: no cleanup, no final files
        victim.wait()
    finally:
        if victim.poll() is None:
            kill_all(victim)
            victim.wait()
    killed_at = checkpoint_epoch(ckpt)
    assert 2 <= killed_at < EPOCHS
    assert not (run_dir / "metrics.json").exists()

    rc, _, err = finish(torchrun(*bpr_args(data), "--out", run_dir, "--resume"))
    assert rc == 0, err
    assert f"resuming after epoch {killed_at}" in err
    ran = [int(e) for e in re.findall(r"epoch\s+(\d+) \| loss", err)]
    assert ran == list(range(killed_at + 1, EPOCHS + 1)), err
    m_ref, m_res = metrics(ref), metrics(run_dir)
    assert m_res["best_epoch"] == m_ref["best_epoch"]
    assert m_res["test"] == m_ref["test"] and m_res["valid"] == m_ref["valid"]
    assert [h["loss"] for h in history(run_dir)] == [h["loss"] for h in history(ref)]


def test_commands_that_are_not_data_parallel_refuse_torchrun(tmp_path):
    env = {**cli_env(), "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, "-m", "prismrec", "compare", "-m", "bpr", "-d", "demo", "-o",
                           str(tmp_path / "c")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not data-parallel" in proc.stderr and "torchrun" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_compare_trains_its_runs_data_parallel(bpr_runs, tmp_path):
    """``compare --ddp 2`` trains each seed run with torchrun: the same run as ``torchrun ... train`` with the
    same settings (equal metrics), and the table is built from it."""
    data, _, ddp, _, _ = bpr_runs
    from prismrec.compare import compare

    threads = torch.get_num_threads()
    try:
        res = compare(["bpr"], str(data), tmp_path / "cmp", seeds=[5], overrides=BPR_SETS, epochs=EPOCHS, ddp=2)
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "cmp" / "bpr" / "seed-5"
    m = metrics(run)
    assert m["distributed"] == {"processes": 2, "backend": "gloo"}
    assert m["test"] == pytest.approx(metrics(ddp)["test"], abs=1e-9)
    assert f"{m['test']['recall@20']:.4f}" in res.markdown
