"""Several training runs at once: the worker processes of ``compare --jobs N``.

Why. A comparison is many independent runs (entries x seeds). On a small dataset one run cannot keep
two cores busy: most of an epoch is element-wise work on tensors of a few MB, where a second torch
thread gains little, and when anything else runs on the machine, every parallel region waits for a
descheduled thread (the demo's LIRDRec went from 0.5 to 5.5 s per epoch that way). Two runs side by side,
one thread each, use both cores fully and never wait for each other.

How. ``jobs`` worker processes (``spawn``: a fresh interpreter, no forked OpenMP state) each train one
run at a time with ``cores // jobs`` torch threads (unless ``train.threads`` is set). A run's results do
not depend on which worker trains it, nor on what runs beside it: every run is seeded on its own, and
its thread count is fixed by ``jobs`` alone. Runs start in a fixed order, the most expensive models
first (:data:`COST_RANK`; only the order of work, never its result), so the last minutes are not one
long run on one core. Log records of the workers are handled by the main process's logger (so a
warning still appears once), and on a terminal the main process draws one live line per running run.

``jobs == 1`` trains in this process, exactly as before.

Data-parallel runs (``compare --ddp N``): :func:`torchrun_train` trains each run with ``N`` processes
(``torchrun --standalone``: gloo on CPU, NCCL on GPU), one run at a time, through the ``train`` command,
and reads its ``metrics.json``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

log = logging.getLogger("prismrec")

#: rough relative cost of one run per model on small data, for the starting order only (unknown: 5)
COST_RANK = {"pop": 0, "bpr": 1, "lightgcn": 2, "freedom": 3, "vbpr": 4, "bm3": 5, "lattice": 6, "mgcn": 6,
             "lirdrec": 8, "alignrec": 9, "sasrec": 3, "sasrecf": 3, "gru4rec": 3, "demure": 6, "mdsrec": 9}


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_jobs(n_runs: int, device: str | None = None) -> int:
    """``compare``'s default: two runs at once on a CPU with two cores or more (memory grows with every
    parallel run, so not more without ``--jobs``); one on a GPU or for a single run."""
    import torch

    gpu = (device or "auto") != "cpu" and ((device or "auto").startswith("cuda") or
                                          ((device or "auto") == "auto" and torch.cuda.is_available()))
    if gpu:
        return 1
    return max(1, min(2, usable_cores(), n_runs))


# ----------------------------------------------------------------------------------------- the workers
_QUEUE: Any = None


def _init_worker(q: Any, level: int, threads: int) -> None:
    """A worker: its ``prismrec`` records and progress events go to the main process."""
    from logging.handlers import QueueHandler

    global _QUEUE
    _QUEUE = q
    import torch

    torch.set_num_threads(max(1, threads))
    logger = logging.getLogger("prismrec")
    logger.handlers.clear()
    logger.addHandler(QueueHandler(q))
    logger.setLevel(level)
    logger.propagate = False
    from .utils import progress

    progress.set_sink(lambda event: q.put(("progress", os.getpid(), event)))


def _train(kwargs: dict[str, Any]) -> dict[str, Any]:
    return _train_here(**kwargs)


def _train_here(**kwargs: Any) -> dict[str, Any]:
    from .runs import train_run

    return train_run(**kwargs).metrics


class RunPool:
    """Trains runs given by their ``train_run`` arguments; :meth:`submit` returns a key, :meth:`result`
    its metrics (raising the run's error)."""

    def __init__(self, jobs: int, *, progress: bool = False,
                 train: Callable[..., dict[str, Any]] | None = None):
        self.jobs = max(1, int(jobs))
        self.progress = progress
        self.train = train or _train_here
        self._results: dict[int, Any] = {}
        self._pool: Any = None
        self._queue: Any = None
        self._listener: threading.Thread | None = None
        self._display: Any = None
        self._next = 0

    def submit(self, kwargs: dict[str, Any]) -> int:
        key = self._next
        self._next += 1
        if self.jobs == 1:
            self._results[key] = ("call", kwargs)
            return key
        self._start()
        self._results[key] = ("future", self._pool.submit(_train, {**kwargs, "progress": self.progress}))
        return key

    def result(self, key: int) -> dict[str, Any]:
        kind, value = self._results.pop(key)
        if kind == "call":
            return self.train(**value)
        return value.result()

    def completed(self, keys: list[int]):
        """``(key, metrics)`` of the given runs as they finish (a run's error is raised)."""
        from concurrent.futures import as_completed

        futures = {self._results[k][1]: k for k in keys}
        for fut in as_completed(futures):
            key = futures[fut]
            self._results.pop(key)
            yield key, fut.result()

    def _start(self) -> None:
        if self._pool is not None:
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        threads = max(1, usable_cores() // self.jobs)
        self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_init_worker,
                                         initargs=(self._queue, logging.getLogger("prismrec").getEffectiveLevel(),
                                                   threads))
        if self.progress:
            self._display = _Display()
        self._listener = threading.Thread(target=self._listen, name="prismrec-workers", daemon=True)
        self._listener.start()
        log.debug("%d runs at a time, %d torch thread(s) each", self.jobs, threads)

    def _listen(self) -> None:
        logger = logging.getLogger("prismrec")
        while True:
            try:
                item = self._queue.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            if isinstance(item, logging.LogRecord):
                if logger.isEnabledFor(item.levelno):
                    logger.handle(item)
            elif isinstance(item, tuple) and item and item[0] == "progress" and self._display is not None:
                self._display.update(item[1], item[2])

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        if self._listener is not None:
            self._queue.put(None)
            self._listener.join(timeout=5)
            self._listener = None
        if self._display is not None:
            self._display.close()
            self._display = None

    def __enter__(self) -> "RunPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)


class _Display:
    """The main process's live lines: one per worker's running fit (on a terminal only)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        from .utils.progress import console

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                  TextColumn("{task.fields[info]}"), console=console(), transient=True,
                                  refresh_per_second=4)
        self._tasks: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def update(self, pid: int, event: dict[str, Any]) -> None:
        with self._lock:
            if event.get("closed"):
                task = self._tasks.pop(pid, None)
                if task is not None:
                    self._progress.remove_task(task)
                return
            if pid not in self._tasks:
                self._tasks[pid] = self._progress.add_task(event.get("description", ""), total=None, info="")
            self._progress.update(self._tasks[pid], description=event.get("description", ""),
                                  total=event.get("total"), completed=event.get("completed", 0),
                                  info=event.get("info", ""))

    def close(self) -> None:
        self._progress.stop()


def order_runs(models: list[str]) -> list[int]:
    """Indices of runs (by model name) in starting order: the most expensive first, ties in given order."""
    return sorted(range(len(models)), key=lambda i: -COST_RANK.get(models[i], 5))


def torchrun_train(nproc: int) -> Callable[..., dict[str, Any]]:
    """A ``train`` for :func:`run_all`: each run trained data-parallel by ``nproc`` processes,
    ``python -m torch.distributed.run --standalone --nproc_per_node nproc -m prismrec train ...`` with the
    run's model, data, config files, settings, seed, epochs and ``--resume``; returns its metrics."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from .config import override_args
    from .errors import PrismrecError

    def train(*, model: str, data: Any, out: Any, config_files: Any = (), overrides: Any = (), seed: int | None = None,
              epochs: int | None = None, resume: bool = False, progress: bool = False, **_: Any) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "prismrec", "-q", "train", "--model", str(model), "--data", str(data), "--out", str(out)]
        cmd += [a for c in config_files for a in ("--config", str(c))]
        cmd += [a for s in override_args(overrides) for a in ("--set", s)]
        cmd += ["--seed", str(seed)] if seed is not None else []
        cmd += ["--epochs", str(epochs)] if epochs is not None else []
        cmd += ["--resume"] if resume else []
        log.info("training %s with %d processes: %s", out, nproc, " ".join(cmd[2:]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR"})
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise PrismrecError(f"the data-parallel run {out} failed (exit {proc.returncode}):\n{tail}\nFix: run "
                                f"`{' '.join(cmd[2:])}` alone to see the whole output; the run resumes from its "
                                "last checkpoint when the comparison is started again.")
        return json.loads((Path(out) / "metrics.json").read_text())

    return train


def run_all(tasks: list[dict[str, Any]], jobs: int, *, progress: bool = False,
            on_result: Callable[[int, dict[str, Any]], None] | None = None,
            train: Callable[..., dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Train every task (``train_run`` keyword arguments, ``model`` included) with ``jobs`` runs at once and
    return their metrics in the given order; ``on_result(i, metrics)`` is called as each run ends. ``train``
    trains one run in this process (``jobs == 1``; default: ``train_run(**task).metrics``)."""
    results: list[Any] = [None] * len(tasks)
    with RunPool(jobs, progress=progress, train=train) as pool:
        if pool.jobs == 1:  # in this process, one after the other, each reported when it ends
            for i, task in enumerate(tasks):
                results[i] = pool.result(pool.submit(task))
                if on_result:
                    on_result(i, results[i])
            return results
        index = {pool.submit(tasks[i]): i for i in order_runs([str(t["model"]).lower() for t in tasks])}
        for key, metrics in pool.completed(list(index)):
            results[index[key]] = metrics
            if on_result:
                on_result(index[key], metrics)
    return results


__all__ = ["COST_RANK", "RunPool", "default_jobs", "order_runs", "run_all", "torchrun_train", "usable_cores"]
