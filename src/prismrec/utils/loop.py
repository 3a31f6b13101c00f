"""The one training loop: seeded epochs of a loss, clipped Adam steps, a learning-rate schedule, model
selection, an atomic checkpoint after every epoch, and resume.

Every fit in prismrec runs here (as RecBole's ``PretrainTrainer`` reuses ``_train_epoch``):

* a recommender's run, :class:`prismrec.train.trainer.Trainer`: batches from the model's sampler,
  selection on a validation ranking metric with early stopping;
* ANT's multi-domain pre-training, :func:`prismrec.train.pretrain.pretrain_ant`: selection on the lowest
  mean training loss (ANT's checkpoint monitor), no early stopping;
* AlignRec's stage-1 alignment, :func:`prismrec.models.general.alignrec_stage1.train_alignment`:
  selection on the held-out alignment loss (the untrained heads included), early stopping.

A fit is an *objective* (an ``nn.Module`` whose ``loss(batch)`` returns a scalar, a dict holding
``"loss"`` and its terms, or None to skip the batch), a *batch source* (``epoch(rng, batch_size,
device)`` and ``n_batches(batch_size)``), the optimisation settings of a
:class:`~prismrec.config.TrainConfig` (``epochs``, ``batch_size``, Adam ``learning_rate`` and
``weight_decay``, ``grad_clip``, the MMRec ``lr_scheduler``) and a :class:`Selection`.

Determinism and resume: every source of randomness in an epoch (shuffling, negatives, dropout) is
seeded from ``(seed, epoch)`` (:func:`~prismrec.utils.runtime.epoch_seed`), and the objective, optimiser,
scheduler and selection state are written atomically to ``run_dir/checkpoint`` at the end of each
epoch, the kept weights to ``run_dir/best`` whenever they change. A killed fit restarts the interrupted
epoch from the last checkpoint with the same seeds, so it ends exactly where an uninterrupted one does.

The module sits in ``utils``, below ``models``, so a model that fits a sub-network while it is built
(AlignRec's stage 1) runs this same loop without importing ``train``.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import PrismrecError
from . import distributed as dist
from .io import load_torch, write_bytes
from .progress import FitLine
from .runtime import epoch_seed

log = logging.getLogger("prismrec")


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    best_score: float = math.nan

    @property
    def mean_epoch_seconds(self) -> float:
        vals = [h["train_s"] for h in self.history if h.get("train_s") is not None]
        return float(np.mean(vals)) if vals else 0.0

    @property
    def mean_eval_seconds(self) -> float:
        vals = [h["eval_s"] for h in self.history if h.get("eval_s") is not None]
        return float(np.mean(vals)) if vals else 0.0


@dataclass
class Selection:
    """Which epoch's weights a fit keeps, and when it stops early.

    ``measure(row)`` scores the objective after an epoch (``row``: that epoch's history row) or, with
    ``initial``, once before the first epoch (``row`` is None; the untrained weights are the first kept
    ones, epoch 0). It returns ``(score, details)``; the details are merged into the row (``blank``
    holds the row fields of an epoch that is not measured) and ``summary(details)`` of the best one is
    the result's ``best_valid``. A measurement improves when it beats the best so far by more than
    ``min_delta`` (a tie is no improvement); ``patience`` measurements without one stop the fit (None:
    never). Measurements happen every ``every`` epochs and at the last one.
    """

    name: str
    measure: Callable[[dict[str, Any] | None], tuple[float, dict[str, Any]]]
    higher_is_better: bool = True
    patience: int | None = None
    min_delta: float = 0.0
    every: int = 1
    initial: bool = False
    blank: dict[str, Any] = field(default_factory=dict)
    summary: Callable[[dict[str, Any]], dict[str, Any]] = dict

    def due(self, epoch: int, last: int) -> bool:
        return epoch % self.every == 0 or epoch == last

    def improves(self, score: float, best: float) -> bool:
        return score > best + self.min_delta if self.higher_is_better else score < best - self.min_delta


def lowest_training_loss(patience: int | None = None, min_delta: float = 0.0) -> Selection:
    """Keep the epoch with the lowest mean training loss; stop once it has not fallen by more than
    ``min_delta`` for ``patience`` epochs (None: never stop early)."""
    return Selection("loss", lambda row: (row["loss"], {}), higher_is_better=False, patience=patience,
                     min_delta=min_delta)


def adam(params: list[nn.Parameter], cfg: TrainConfig, *, fused: bool = True):
    """Adam and the MMRec schedule ``lr * factor ** (epoch / step)`` of ``cfg``. The fused kernel (~2.5x
    faster on CPU for embedding tables) is the same algorithm; ``fused=False`` reproduces the reference
    implementation's floating point exactly."""
    opt = None
    if fused:
        try:
            opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = None
    if opt is None:
        opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    factor, step = cfg.lr_scheduler
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: factor ** (e / step))


def _grad_norm(params: list[nn.Parameter]) -> float:
    sq = [p.grad.pow(2).sum() for p in params if p.grad is not None]
    return float(torch.sqrt(torch.stack(sq).sum())) if sq else 0.0


class _Writer:
    """Checkpoint files written on one background thread, in submission order.

    The state is serialised at once (``torch.save`` into memory, so later steps cannot change what is
    written); the atomic write (temporary file, fsync, rename: :func:`~prismrec.utils.io.write_bytes`)
    then overlaps the next epoch instead of adding tens of milliseconds to every epoch. Order is kept (a
    ``best`` file submitted before a checkpoint is on disk before it), at most two files wait (bounded
    memory), and a failed write is raised in the training thread at the next submission or at ``close``.
    A killed process loses at most the files still waiting: the previous checkpoint stays whole, and
    resuming from it replays the same epochs to the same results.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, path: Path, obj: Any) -> None:
        self._raise()
        buf = io.BytesIO()
        torch.save(obj, buf)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prismrec-checkpoint", daemon=True)
            self._thread.start()
        self._queue.put((path, buf.getvalue()))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    write_bytes(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc
            finally:
                self._queue.task_done()

    def close(self) -> None:
        """Wait until every submitted file is written (then raise a write error, if any)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc


class EpochLoop:
    """Fits ``objective`` on ``batches`` for ``cfg.epochs`` epochs; see the module docstring.

    Optional: ``run_dir`` (checkpoints; None keeps everything in memory) with the file names
    ``checkpoint`` and ``best``; ``before_epoch(epoch)`` (a model's ``on_epoch_start``); ``grad_groups``
    ``{"id": [...], "feature": [...]}`` (logs the ratio of their gradient norms); ``on_epoch(row)``;
    ``label`` (the log lines' prefix) and ``log_level`` of the per-epoch lines (DEBUG: shown with ``-v``);
    ``progress`` draws one live line titled ``title`` (:class:`~prismrec.utils.progress.FitLine`).

    ``distributed``: under ``torchrun``, each rank trains on its share of every batch with DDP's gradient
    all-reduce (:class:`~prismrec.utils.distributed.Replicas`); every rank measures (the selection must
    be collective too, as the Trainer's sharded evaluation is) and only rank 0 writes files.
    """

    def __init__(self, objective: nn.Module, batches: Any, cfg: TrainConfig, seed: int, selection: Selection, *,
                 run_dir: Path | None = None, checkpoint: str = "checkpoint.pt", best: str = "model.pt",
                 device: torch.device | None = None, progress: bool = False, fused_adam: bool = True,
                 before_epoch: Callable[[int], None] | None = None,
                 grad_groups: dict[str, list[nn.Parameter]] | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 label: str = "epoch", log_level: int = logging.DEBUG, title: str | None = None,
                 distributed: bool = False):
        self.objective, self.batches, self.cfg, self.seed, self.selection = objective, batches, cfg, seed, selection
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint, self.best = checkpoint, best
        self.device = device or torch.device("cpu")
        self.progress, self.fused_adam = progress, fused_adam
        self.before_epoch, self.on_epoch = before_epoch, on_epoch
        self.grad_groups = grad_groups if grad_groups and grad_groups.get("id") and grad_groups.get("feature") else None
        self.label, self.log_level = label, log_level
        self.title = title or label
        self.distributed = distributed and dist.active()
        self._writes = self.run_dir is not None and dist.is_main()

    def fit(self, resume: bool = False) -> TrainResult:
        """Train; the objective ends holding the kept epoch's weights (``resume``: continue from the
        checkpoint in ``run_dir`` when there is one)."""
        self._writer = _Writer()
        sel = self.selection
        self._line = FitLine(self.title, self.cfg.epochs, metric=sel.name, patience=sel.patience, every=sel.every,
                             enabled=self.progress and dist.is_main())
        try:
            result = self._fit(resume)
        except BaseException:
            self._line.close()
            try:
                self._writer.close()  # what was submitted still lands (an interrupted run resumes from it)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        self._line.close()
        self._writer.close()
        return result

    def _fit(self, resume: bool) -> TrainResult:
        cfg, model, sel = self.cfg, self.objective, self.selection
        model.to(self.device)
        state: dict[str, Any] = {"epoch": 0, "best_score": -math.inf if sel.higher_is_better else math.inf,
                                 "best_epoch": 0, "bad": 0, "history": [], "best_valid": {}, "elapsed": 0.0,
                                 "stopped_early": False}
        best_state: dict[str, torch.Tensor] | None = None
        opt, sched = adam([p for p in model.parameters() if p.requires_grad], cfg, fused=self.fused_adam)
        ckpt_path = self.run_dir / self.checkpoint if self.run_dir is not None else None
        if resume and ckpt_path is not None and ckpt_path.is_file():
            ck = load_torch(ckpt_path, map_location=self.device)
            if not isinstance(ck.get("state"), dict):
                raise PrismrecError(f"{ckpt_path} was written by an older prismrec and cannot be resumed. "
                                    "Fix: start again without --resume in a new directory.")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            state.update(ck["state"])
            if (self.run_dir / self.best).is_file():
                best_state = load_torch(self.run_dir / self.best, map_location=self.device)
            log.info("resuming after epoch %d (best %s %.4f at epoch %d)", state["epoch"], sel.name,
                     state["best_score"], state["best_epoch"])
            if self._stops(state) or state["epoch"] >= cfg.epochs:
                return self._finish(state, best_state)
        elif sel.initial:
            score, details = sel.measure(None)
            state.update(best_score=score, best_valid=sel.summary(details))
            state["history"].append({"epoch": 0, "loss": None, **details})
            best_state = copy.deepcopy(model.state_dict())
            self._save_best(best_state)
        replicas = dist.Replicas(model, self.device) if self.distributed else None

        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            es = epoch_seed(self.seed, epoch)
            torch.manual_seed(es)
            rng = np.random.default_rng(es)
            model.train()
            if self.before_epoch is not None:
                self.before_epoch(epoch)
            t0 = time.perf_counter()
            total, n_batches, terms, ratios = 0.0, 0, {}, []
            line = self._line
            line.start_epoch(epoch, self.batches.n_batches(cfg.batch_size) if line.enabled else None)
            for batch in self.batches.epoch(rng, cfg.batch_size, self.device):
                out, weight = replicas.loss(batch) if replicas is not None else (model.loss(batch), 1.0)
                if out is None:  # nothing to learn from this batch
                    continue
                loss = out["loss"] if isinstance(out, dict) else out
                if not torch.isfinite(loss):
                    raise PrismrecError(
                        f"the loss became {loss.item()} at epoch {epoch}, batch {n_batches + 1}. "
                        "Fix: lower train.learning_rate or the model's loss weights."
                    )
                opt.zero_grad(set_to_none=True)
                (loss * replicas.scale(weight) if replicas is not None else loss).backward()
                if self.grad_groups is not None:
                    g_id, g_feat = _grad_norm(self.grad_groups["id"]), _grad_norm(self.grad_groups["feature"])
                    if g_feat > 0:
                        ratios.append(g_id / g_feat)
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += float(loss.detach()) * weight
                n_batches += 1
                if isinstance(out, dict):
                    for k, v in out.items():
                        if k != "loss":
                            terms[k] = terms.get(k, 0.0) + float(v.detach()) * weight
                if line.enabled:
                    line.batch(n_batches, total / n_batches)
            sched.step()
            if replicas is not None:  # the global batches' mean losses, as one process logs them
                total, terms = replicas.epoch_sums(total, terms)
            row: dict[str, Any] = {"epoch": epoch, "loss": total / max(n_batches, 1),
                                   **{k: v / max(n_batches, 1) for k, v in terms.items()},
                                   "train_s": time.perf_counter() - t0, **sel.blank}
            if ratios:
                row["grad_ratio_id_over_feature"] = float(np.mean(ratios))
            measured = sel.due(epoch, cfg.epochs)
            if measured:
                score, details = sel.measure(row)
                row.update(details)
                if sel.improves(score, state["best_score"]):
                    state.update(best_score=score, best_epoch=epoch, bad=0, best_valid=sel.summary(details))
                    best_state = copy.deepcopy(model.state_dict())
                    self._save_best(best_state)
                else:
                    state["bad"] += 1
            state["history"].append(row)
            state["epoch"] = epoch
            state["elapsed"] = state.get("elapsed", 0.0) + (time.perf_counter() - t0)
            line.end_epoch(epoch, time.perf_counter() - t0, state["best_score"], state["best_epoch"], state["bad"],
                           row["loss"])
            self._log_epoch(row, state, score if measured else None, list(terms))
            if self.on_epoch:
                self.on_epoch(row)
            stop = self._stops(state)
            state["stopped_early"] = stop
            if ckpt_path is not None and self._writes:
                self._writer.submit(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                "scheduler": sched.state_dict(), "state": state})
            if stop:
                log.log(self.log_level, "early stop: no %s improvement for %d evaluations", sel.name, sel.patience)
                break
        return self._finish(state, best_state)

    # ---------------------------------------------------------------------------------------------
    def _stops(self, state: dict[str, Any]) -> bool:
        return self.selection.patience is not None and state["bad"] >= self.selection.patience

    def _finish(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> TrainResult:
        if best_state is not None:
            self.objective.load_state_dict(best_state)
        return TrainResult(
            best_epoch=int(state["best_epoch"]), best_valid=dict(state["best_valid"]),
            epochs_run=int(state["epoch"]), train_seconds=float(state.get("elapsed", 0.0)),
            history=list(state["history"]), stopped_early=bool(state.get("stopped_early", False)),
            best_score=float(state["best_score"]),
        )

    def _save_best(self, sd: dict[str, torch.Tensor]) -> None:
        if self._writes:
            self._writer.submit(self.run_dir / self.best, sd)

    def _log_epoch(self, row: dict[str, Any], state: dict[str, Any], score: float | None, terms: list[str]) -> None:
        if not log.isEnabledFor(self.log_level):
            return
        msg = f"{self.label} {row['epoch']:4d} | loss {row['loss']:.4f}"
        if terms:
            msg += " (" + ", ".join(f"{k} {row[k]:.4f}" for k in terms) + ")"
        msg += f" | {row['train_s']:.2f}s"
        if score is not None:
            msg += f" | {self.selection.name} {score:.4f} (best {state['best_score']:.4f} @ {state['best_epoch']})"
        if row.get("eval_s") is not None:
            msg += f" | eval {row['eval_s']:.2f}s"
        if "grad_ratio_id_over_feature" in row:
            msg += f" | grad id/feat {row['grad_ratio_id_over_feature']:.3f}"
        log.log(self.log_level, msg)
