"""One trainer for every model: epochs, Adam, early stopping on validation, checkpoints, resume.

Selection is on validation only: after each evaluation the validation metric (``train.valid_metric``,
default Recall@20) is compared with the best so far; the best model's weights are kept and the test
set is scored once, at the end, with those weights. Training stops after ``train.patience``
evaluations without a strict improvement (MMRec stops after ``stopping_step + 1``).

Determinism and resume: every source of randomness in an epoch (shuffling, negatives, dropout) is
seeded from ``(seed, epoch)``, and the model, optimiser, scheduler and early-stopping state are
written atomically at the end of each epoch. A killed run restarts the interrupted epoch from the
last checkpoint with the same seeds, so it ends with exactly the metrics of an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.split import Split
from ..data.training import TrainingData
from ..errors import PrismrecError
from ..evaluate.ranking import RankingEvaluator
from ..models.base import Recommender
from ..utils.io import load_torch, save_torch
from ..utils.runtime import epoch_seed
from .sampling import make_sampler

log = logging.getLogger("prismrec")

CHECKPOINT = "checkpoint.pt"
BEST = "model.pt"


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def mean_epoch_seconds(self) -> float:
        vals = [h["train_s"] for h in self.history if h.get("train_s") is not None]
        return float(np.mean(vals)) if vals else 0.0

    @property
    def mean_eval_seconds(self) -> float:
        vals = [h["eval_s"] for h in self.history if h.get("eval_s") is not None]
        return float(np.mean(vals)) if vals else 0.0


class Trainer:
    """Fits a :class:`Recommender` on a :class:`TrainingData` and selects its epoch on validation."""

    def __init__(self, model: Recommender, data: TrainingData, split: Split, cfg: TrainConfig, seed: int,
                 *, run_dir: Path | None = None, device: torch.device | None = None,
                 progress: bool = False, filter_cold_users: bool = True,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None):
        self.model = model
        self.data = data
        self.split = split
        self.cfg = cfg
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = device or torch.device("cpu")
        self.progress = progress
        self.on_epoch = on_epoch
        self.metric = cfg.valid_metric
        self.valid_eval = RankingEvaluator(split, "valid", cfg.eval_ks, filter_cold_users=filter_cold_users,
                                           mask_history=cfg.mask_history,
                                           chunk_users=cfg.eval_batch_users)

    # ---------------------------------------------------------------------------------------------
    def evaluate_valid(self) -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            self.model.use_history("valid", self.split)
            self.model.prepare_scoring()
            res = self.valid_eval.evaluate(self.model.score, device=self.device)
        return res.metrics, time.perf_counter() - start

    def _optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:  # the fused kernel is ~2.5x faster on CPU for embedding tables; same algorithm
            opt = torch.optim.Adam(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay,
                                   fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.Adam(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)
        factor, step = self.cfg.lr_scheduler
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: factor ** (e / step))
        return opt, sched

    def _grad_norm(self, params: list[torch.nn.Parameter]) -> float:
        sq = [p.grad.pow(2).sum() for p in params if p.grad is not None]
        return float(torch.sqrt(torch.stack(sq).sum())) if sq else 0.0

    def memory_estimate(self) -> dict[str, int]:
        """Bytes of parameters, optimiser state, buffers (graphs, features), one evaluation chunk and the
        model's own transient tensors; logged before training so a user sees what a run will need."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = 0
        for b in self.model.buffers():
            if b.layout == torch.sparse_csr:
                buffers += b.values().numel() * (b.values().element_size() + b.col_indices().element_size())
                buffers += b.crow_indices().numel() * b.crow_indices().element_size()
            else:
                buffers += b.numel() * b.element_size()
        chunk = self.valid_eval.chunk * self.data.n_items * 5
        est = {"parameters": params, "adam state": 2 * params, "graphs and features": buffers,
               "evaluation chunk": chunk, **self.model.memory_hint()}
        est["total"] = sum(est.values())
        return est

    # ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``epochs`` or early stopping; the model ends holding the best epoch's weights."""
        cfg, model = self.cfg, self.model
        model.to(self.device)
        t_start = time.perf_counter()
        est = self.memory_estimate()
        log.info("memory estimate: %s", ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in est.items()))
        state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad": 0, "history": [],
                 "best_valid": {}, "elapsed": 0.0, "stopped_early": False}
        best_state: dict[str, torch.Tensor] | None = None

        if not model.trainable or cfg.epochs == 0:
            valid, eval_s = self.evaluate_valid()
            hist = [{"epoch": 0, "loss": None, "valid": valid, "train_s": None, "eval_s": eval_s}]
            self._save_best(model.state_dict())
            return TrainResult(0, valid, 0, time.perf_counter() - t_start, hist)

        opt, sched = self._optimizer()
        ckpt_path = self.run_dir / CHECKPOINT if self.run_dir else None
        if resume and ckpt_path is not None and ckpt_path.is_file():
            ck = load_torch(ckpt_path, map_location=self.device)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            state.update(ck["state"])
            best_path = self.run_dir / BEST
            if best_path.is_file():
                best_state = load_torch(best_path, map_location=self.device)
            log.info("resuming after epoch %d (best %s %.4f at epoch %d)", state["epoch"], self.metric,
                     state["best_score"], state["best_epoch"])
            if state["bad"] >= cfg.patience or state["epoch"] >= cfg.epochs:
                return self._finish(state, best_state, t_start)

        sampler = model.build_sampler(self.data, cfg)
        if sampler is None:
            sampler = make_sampler(model.sampler, self.data.train, self.data.train_items, cfg.num_negatives)
        groups = model.diagnostic_groups() if cfg.log_grad_ratio else {}
        track_ratio = bool(groups.get("id")) and bool(groups.get("feature"))

        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            es = epoch_seed(self.seed, epoch)
            torch.manual_seed(es)
            rng = np.random.default_rng(es)
            model.train()
            model.on_epoch_start(epoch)
            t0 = time.perf_counter()
            total, n_batches, terms = 0.0, 0, {}
            ratios = []
            bar = tqdm(sampler.epoch(rng, cfg.batch_size, self.device), total=sampler.n_batches(cfg.batch_size),
                       desc=f"epoch {epoch}", leave=False, disable=not self.progress, dynamic_ncols=True)
            for batch in bar:
                out = model.loss(batch)
                loss = out["loss"] if isinstance(out, dict) else out
                if not torch.isfinite(loss):
                    raise PrismrecError(
                        f"the loss became {loss.item()} at epoch {epoch}, batch {n_batches + 1}. "
                        "Fix: lower train.learning_rate or the model's loss weights."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if track_ratio:
                    g_id, g_feat = self._grad_norm(groups["id"]), self._grad_norm(groups["feature"])
                    if g_feat > 0:
                        ratios.append(g_id / g_feat)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += float(loss.detach())
                n_batches += 1
                if isinstance(out, dict):
                    for k, v in out.items():
                        if k != "loss":
                            terms[k] = terms.get(k, 0.0) + float(v.detach())
                if n_batches % 10 == 0:
                    bar.set_postfix(loss=f"{total / n_batches:.4f}")
            bar.close()
            sched.step()
            train_s = time.perf_counter() - t0
            row: dict[str, Any] = {"epoch": epoch, "loss": total / max(n_batches, 1),
                                   **{k: v / max(n_batches, 1) for k, v in terms.items()},
                                   "train_s": train_s, "eval_s": None, "valid": None}
            if track_ratio and ratios:
                row["grad_ratio_id_over_feature"] = float(np.mean(ratios))
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                valid, eval_s = self.evaluate_valid()
                row["valid"], row["eval_s"] = valid, eval_s
                score = valid[self.metric]
                if score > state["best_score"]:
                    state.update(best_score=score, best_epoch=epoch, bad=0, best_valid=valid)
                    best_state = copy.deepcopy(model.state_dict())
                    self._save_best(best_state)
                else:
                    state["bad"] += 1
            state["history"].append(row)
            state["epoch"] = epoch
            state["elapsed"] = state.get("elapsed", 0.0) + (time.perf_counter() - t0)
            self._log_epoch(row, state)
            if self.on_epoch:
                self.on_epoch(row)
            stop = state["bad"] >= cfg.patience
            state["stopped_early"] = stop
            if ckpt_path is not None:
                save_torch(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "state": state})
            if stop:
                log.info("early stop: no %s improvement for %d evaluations", self.metric, cfg.patience)
                break
        return self._finish(state, best_state, t_start)

    # ---------------------------------------------------------------------------------------------
    def _finish(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None,
                t_start: float) -> TrainResult:
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return TrainResult(
            best_epoch=int(state["best_epoch"]), best_valid=dict(state["best_valid"]),
            epochs_run=int(state["epoch"]), train_seconds=float(state.get("elapsed", 0.0)),
            history=list(state["history"]), stopped_early=bool(state.get("stopped_early", False)),
        )

    def _save_best(self, sd: dict[str, torch.Tensor]) -> None:
        if self.run_dir is not None:
            save_torch(self.run_dir / BEST, sd)

    def _log_epoch(self, row: dict[str, Any], state: dict[str, Any]) -> None:
        msg = f"epoch {row['epoch']:4d} | loss {row['loss']:.4f} | {row['train_s']:.2f}s"
        if row.get("valid"):
            msg += (f" | valid {self.metric} {row['valid'][self.metric]:.4f} "
                    f"(best {state['best_score']:.4f} @ {state['best_epoch']}) | eval {row['eval_s']:.2f}s")
        if "grad_ratio_id_over_feature" in row:
            msg += f" | grad id/feat {row['grad_ratio_id_over_feature']:.3f}"
        log.info(msg)
