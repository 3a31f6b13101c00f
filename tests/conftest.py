"""Shared fixtures: small synthetic datasets (in memory or as MMRec folders) and a CLI runner.

The synthetic data has a block structure: users and items fall into ``n_groups`` groups
(``user % n_groups``, ``item % n_groups``) and a user mostly interacts with items of its own group,
so even a tiny model learns something measurable in a few epochs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import prismrec
from prismrec.data import build_dataset

REPO = Path(__file__).resolve().parents[1]

# The suite targets small CPU machines: one intra-op thread avoids thread-pool contention (fused Adam on CPU
# is ~50x slower with 2 threads on a busy 2-core machine) and keeps timings stable. CLI subprocesses get
# OMP_NUM_THREADS=1 for the same reason (see cli_env).
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ data
def block_interactions(n_users: int = 60, n_items: int = 60, per_user: int = 10, n_groups: int = 4,
                       noise: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Distinct (user, item) pairs with a learnable block structure, plus a per-user row order.

    Returns a frame with integer ``user``, ``item`` and ``pos`` (0-based position of the row in the
    user's history, used as a time stamp by callers that want one).
    """
    rng = np.random.default_rng(seed)
    users, items, pos = [], [], []
    for u in range(n_users):
        own = np.arange(u % n_groups, n_items, n_groups)
        n_own = min(len(own), int(round(per_user * (1 - noise))))
        chosen = list(rng.choice(own, n_own, replace=False))
        rest = np.setdiff1d(np.arange(n_items), chosen)
        chosen += list(rng.choice(rest, per_user - n_own, replace=False))
        chosen = rng.permutation(chosen)
        users += [u] * per_user
        items += list(chosen)
        pos += list(range(per_user))
    return pd.DataFrame({"user": users, "item": np.asarray(items, dtype=np.int64), "pos": pos})


def given_labels(frame: pd.DataFrame) -> np.ndarray:
    """A hand-made split: per user, the last row is test (2), the one before valid (1), the rest train."""
    n = frame.groupby("user")["pos"].transform("size").to_numpy()
    pos = frame["pos"].to_numpy()
    return np.where(pos == n - 1, 2, np.where(pos == n - 2, 1, 0)).astype(np.int64)


def write_mmrec(root: Path, name: str = "toy", *, n_users: int = 60, n_items: int = 60, per_user: int = 10,
                n_groups: int = 4, noise: float = 0.2, seed: int = 0, label: bool = True,
                features: int | None = None) -> tuple[Path, pd.DataFrame]:
    """Write ``root/name/name.inter`` (``userID itemID [x_label]``, tab-separated) and optionally
    ``image_feat.npy`` (``features`` columns, row r = itemID r). Returns the folder and the frame written
    (columns userID, itemID, x_label when labelled, and pos)."""
    frame = block_interactions(n_users, n_items, per_user, n_groups, noise, seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({"userID": frame["user"], "itemID": frame["item"]})
    if label:
        out["x_label"] = given_labels(frame)
    out.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    if features:
        rng = np.random.default_rng(seed + 1)
        group = np.eye(n_groups, features)[np.arange(n_items) % n_groups]
        feats = group + 0.1 * rng.standard_normal((n_items, features))
        np.save(folder / "image_feat.npy", feats.astype(np.float32))
    out["pos"] = frame["pos"]
    return folder, out


def tiny_frame(label: bool = True, **kw) -> pd.DataFrame:
    """Raw-id interactions for :func:`prismrec.data.build_dataset` (users 'u0'.., items 'i0'..)."""
    frame = block_interactions(**kw)
    out = pd.DataFrame({"user": "u" + frame["user"].astype(str), "item": "i" + frame["item"].astype(str)})
    if label:
        out["label"] = given_labels(frame)
    return out


@pytest.fixture
def tiny_dataset():
    """60 users x 60 items, 10 interactions each, block structure, with a given split (last row test)."""
    return build_dataset("tiny", tiny_frame())


@pytest.fixture
def mmrec_folder(tmp_path):
    """A labelled MMRec folder with a 16-d image modality: returns (folder, frame written)."""
    return write_mmrec(tmp_path / "data", features=16)


@pytest.fixture
def prismrec_log(caplog):
    """caplog that also sees the 'prismrec' logger when it does not propagate."""
    logger = logging.getLogger("prismrec")
    extra = not logger.propagate  # the CLI's logging setup turns propagation off
    if extra:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="prismrec")
    yield caplog
    if extra:
        logger.removeHandler(caplog.handler)


# ------------------------------------------------------------------------------------------- CLI
def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PRISMREC_DATA", "PRISMREC_DEBUG")}
    # the subprocesses import the same prismrec as this process (editable install, or PYTHONPATH=src)
    package_root = str(Path(prismrec.__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "200"
    return env


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"prismrec {' '.join(self.args)} -> {self.returncode}\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}")


class CliProcess:
    """``python -m prismrec ARGS`` started in the background; output goes to files (no pipe stalls)."""

    def __init__(self, *args: str, cwd: Path | None = None):
        self.args = [str(a) for a in args]
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "prismrec", *self.args], cwd=cwd or REPO,
                                     env=cli_env(), stdout=self._out, stderr=self._err, text=True)
        self._result: CliResult | None = None

    def result(self, timeout: float = 240) -> CliResult:
        if self._result is None:
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
            self._out.seek(0)
            self._err.seek(0)
            self._result = CliResult(self.args, rc, self._out.read(), self._err.read())
            self._out.close()
            self._err.close()
        return self._result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 240) -> CliResult:
    return CliProcess(*args, cwd=cwd).result(timeout)


@pytest.fixture(scope="session", autouse=True)
def cli_commands(request, tmp_path_factory):
    """test_cli.py's independent commands, started as soon as the session starts.

    Each ``python -m prismrec`` spends seconds importing torch, scipy and pandas. When tests of test_cli.py
    are selected, their independent commands start here, in the background, so they use the second core
    while the in-process tests of the other files run; test_cli.py's tests then only collect the results.
    Yields None when no test of test_cli.py is selected.
    """
    if not any(item.path.name == "test_cli.py" for item in request.session.items):
        yield None
        return
    import test_cli  # already imported by pytest's collection

    ns = test_cli.start_commands(tmp_path_factory.mktemp("cli"))
    yield ns
    for proc in ns.procs.values():
        proc.stop()


# ------------------------------------------------------------------------------------- PostgreSQL
# A throw-away local PostgreSQL server (the Debian package's binaries) for the tests that share a database
# between processes (test_serve_store.py, test_tune_optuna.py); skipped with the reason when it cannot start.
def _postgres_bin() -> Path | None:
    for cand in [shutil.which("initdb"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))]:
        if cand:
            return Path(cand).parent
    return None


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    pytest.importorskip("psycopg")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    from prismrec.serve.soak import free_port

    import tempfile

    root = Path(tempfile.mkdtemp(prefix="prismrec-pg-"))  # under /tmp: reachable by the 'postgres' user
    data, port = root / "data", free_port()
    user = []
    if os.geteuid() == 0:  # postgres refuses to run as root: use the 'postgres' system user when there is one
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL cannot run as root and there is no 'postgres' user")
        shutil.chown(root, "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    run = lambda *a: subprocess.run([*user, *map(str, a)], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run(bindir / "initdb", "-D", data, "-U", "prismrec", "--auth=trust")
    if r.returncode != 0:
        pytest.skip(f"initdb failed: {r.stderr[-300:]}")
    r = run(bindir / "pg_ctl", "-D", data, "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "-w",
            "-l", root / "log", "start")
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {r.stderr[-300:]}")
    yield f"postgresql+psycopg://prismrec@127.0.0.1:{port}/postgres"
    run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
    shutil.rmtree(root, ignore_errors=True)



def pytest_terminal_summary(terminalreporter):
    """One line saying whether the page tests ran in a real browser (headless Chromium), for CI logs."""
    counts = {k: sum("chromium" in r.nodeid for r in terminalreporter.stats.get(k, []) if getattr(r, "nodeid", None))
              for k in ("passed", "failed", "skipped")}
    if any(counts.values()):
        terminalreporter.write_line("page tests in headless Chromium: "
                                    + ", ".join(f"{n} {k}" for k, n in counts.items()))
