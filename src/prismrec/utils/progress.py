"""What a command shows while it works: one live line per fit on a terminal, nothing when piped.

* :func:`console` is the one ``rich`` console on standard error. The CLI's log handler writes through it
  (on a terminal), so log lines appear above a live line instead of breaking it.
* :class:`FitLine` is the live line of one fit (a training run, ANT's pre-training): its title (model,
  seed), the epoch and the batch within it, the loss, the best validation score so far and when it was
  reached, and an estimate of the time left. It is drawn only when asked (``enabled``; the CLI asks when
  standard error is a terminal and ``-q`` is not given) and disappears when the fit ends, so that the
  caller's one result line takes its place.

The time left is a lower bound: without a further improvement a fit stops after ``patience``
evaluations (or at its last epoch), so ``min(epochs left, evaluations left before the early stop x
every)`` epochs of the mean epoch time (training + evaluation) remain; an improvement extends it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

_CONSOLE = None
_SINK: Any = None  # a worker process of ``compare --jobs``: live-line events go to the main process


def set_sink(sink) -> None:
    """Send :class:`FitLine` events to ``sink(event)`` instead of drawing them (None: draw)."""
    global _SINK
    _SINK = sink


def console():
    """The shared ``rich`` console on standard error (created on first use)."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console(stderr=True, soft_wrap=True)
    return _CONSOLE


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def seconds_left(epoch: int, epochs: int, bad: int, patience: int | None, every: int, epoch_seconds: float) -> float:
    """Lower bound of the time a fit still needs after ``epoch`` (see the module docstring)."""
    left = max(epochs - epoch, 0)
    if patience is not None:
        left = min(left, max(patience - bad, 0) * max(every, 1))
    return left * epoch_seconds


class FitLine:
    """The live line of one fit; every method is a no-op when ``enabled`` is False."""

    def __init__(self, title: str, epochs: int, *, metric: str = "", patience: int | None = None, every: int = 1,
                 enabled: bool = True):
        self.title, self.epochs, self.metric = title, epochs, metric
        self.patience, self.every = patience, every
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._best = ""
        self._left = ""
        self._epoch_s: list[float] = []
        self._sink = _SINK if enabled else None
        self._sent = 0.0
        self._state: dict[str, Any] = {"description": title, "total": None, "completed": 0, "info": "starting"}
        if enabled and self._sink is None:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                      TextColumn("{task.fields[info]}"), console=console(), transient=True,
                                      refresh_per_second=4)
            self._task = self._progress.add_task(title, total=None, info="starting")
            self._progress.start()

    def _update(self, **fields: Any) -> None:
        if self._sink is not None:
            self._state.update(fields)
            now = time.monotonic()
            if now - self._sent >= 0.25:  # at most four events a second cross to the main process
                self._sent = now
                self._sink(dict(self._state))
        else:
            self._progress.update(self._task, **fields)

    def start_epoch(self, epoch: int, n_batches: int | None) -> None:
        if self.enabled:
            self._update(description=f"{self.title} · epoch {epoch}/{self.epochs}", total=n_batches, completed=0,
                         info=self._info(None))

    def batch(self, done: int, loss: float | None = None) -> None:
        if self.enabled:
            self._update(completed=done, info=self._info(loss))

    def end_epoch(self, epoch: int, seconds: float, best: float | None, best_epoch: int, bad: int,
                  loss: float | None = None) -> None:
        if not self.enabled:
            return
        self._epoch_s.append(seconds)
        recent = self._epoch_s[-10:]
        per = sum(recent) / len(recent)
        if best is not None and math.isfinite(best):
            self._best = f"best {self.metric} {best:.4f} @ {best_epoch}"
        self._left = f"≥{duration(seconds_left(epoch, self.epochs, bad, self.patience, self.every, per))} left"
        self._update(info=self._info(loss))

    def _info(self, loss: float | None) -> str:
        parts = [f"loss {loss:.4f}" if loss is not None else "", self._best, self._left]
        return " · ".join(p for p in parts if p)

    def close(self) -> None:
        if self.enabled:
            if self._sink is not None:
                self._sink({"closed": True})
            elif self._progress is not None:
                self._progress.stop()
                self._progress = None
            self.enabled = False
