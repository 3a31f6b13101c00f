"""The Trainer of a run: a recommender fitted by the one training loop, its epoch selected on validation.

The loop itself (per-epoch seeds, Adam steps with clipping, the learning-rate schedule, an atomic
checkpoint after every epoch, resume) is :class:`~prismrec.utils.loop.EpochLoop`, shared with ANT's
pre-training and AlignRec's stage 1. What a run adds: the batches come from the model's sampler
(``build_sampler``, else the one named by ``sampler``), ``on_epoch_start`` runs before each epoch, the
ID / feature gradient-norm ratio is logged, and selection is on validation only. After each evaluation
(every ``train.eval_every`` epochs and at the last) the validation metric (``train.valid_metric``,
default Recall@20) is compared with the best so far; the best model's weights are kept and the test
set is scored once, at the end, with those weights. Training stops after ``train.patience``
evaluations without a strict improvement (MMRec stops after ``stopping_step + 1``).

Run directory: ``checkpoint.pt`` (last finished epoch: model, optimiser, scheduler, selection state) and
``model.pt`` (the best epoch's weights). A killed run restarts the interrupted epoch from the last
checkpoint with the same seeds, so it ends with exactly the metrics of an uninterrupted run.

Under ``torchrun`` the same Trainer runs on every rank: each trains on its share of every batch (DDP
averages the gradients), ranks its share of the validation users, and only rank 0 writes
(:mod:`prismrec.utils.distributed`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import TrainConfig
from ..data.split import Split
from ..data.training import TrainingData
from ..evaluate.ranking import SCORE_BYTES, RankingEvaluator
from ..models.base import Recommender
from ..utils import distributed as dist
from ..utils.io import save_torch
from ..utils.loop import EpochLoop, Selection, TrainResult
from .sampling import make_sampler

log = logging.getLogger("prismrec")

CHECKPOINT = "checkpoint.pt"
BEST = "model.pt"

__all__ = ["BEST", "CHECKPOINT", "Trainer", "TrainResult"]


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
        res = self.valid_eval.evaluate_model(self.model)
        return res.metrics, time.perf_counter() - start

    def selection(self) -> Selection:
        """Keep the epoch with the highest validation ``valid_metric``; stop after ``patience`` evaluations
        without a strict improvement."""
        def measure(row: dict[str, Any] | None) -> tuple[float, dict[str, Any]]:
            valid, eval_s = self.evaluate_valid()
            return valid[self.metric], {"eval_s": eval_s, "valid": valid}

        return Selection(f"valid {self.metric}", measure, higher_is_better=True, patience=self.cfg.patience,
                         every=self.cfg.eval_every, blank={"eval_s": None, "valid": None},
                         summary=lambda details: details["valid"])

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
        chunk = self.valid_eval.chunk * self.data.n_items * SCORE_BYTES
        est = {"parameters": params, "adam state": 2 * params, "graphs and features": buffers,
               "evaluation chunk": chunk, **self.model.memory_hint()}
        est["total"] = sum(est.values())
        return est

    def _warn_memory(self, est: dict[str, int]) -> None:
        """Warn before training when what the run has yet to allocate (optimiser state, an evaluation chunk,
        the model's transient tensors; parameters, graphs and features are already held) is more than this
        machine has free (CPU runs)."""
        from ..utils.runtime import available_memory_bytes

        free = available_memory_bytes() if self.device.type == "cpu" else None
        held = ("parameters", "graphs and features", "total")
        parts = sorted(((v, k) for k, v in est.items() if k not in held), reverse=True)
        need = sum(v for v, _ in parts)
        if free is None or need <= free:
            return
        log.warning("this run will need about %.1f GiB more (largest: %s) and %.1f GiB are free. Fix: a smaller "
                    "train.eval_batch_users, the model's memory options (docs/models/<model>.md, e.g. LIRDRec's "
                    "item_chunk), or a machine with more memory.", need / 2**30,
                    ", ".join(f"{k} {v / 2**30:.1f} GiB" for v, k in parts[:3]), free / 2**30)

    # ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``epochs`` or early stopping; the model ends holding the best epoch's weights."""
        cfg, model = self.cfg, self.model
        model.to(self.device)
        t_start = time.perf_counter()
        est = self.memory_estimate()
        log.debug("memory estimate: %s", ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in est.items()))
        self._warn_memory(est)
        if not model.trainable or cfg.epochs == 0:
            valid, eval_s = self.evaluate_valid()
            hist = [{"epoch": 0, "loss": None, "valid": valid, "train_s": None, "eval_s": eval_s}]
            if self.run_dir is not None and dist.is_main():
                save_torch(self.run_dir / BEST, model.state_dict())
            return TrainResult(0, valid, 0, time.perf_counter() - t_start, hist)

        sampler = model.build_sampler(self.data, cfg)
        if sampler is None:
            sampler = make_sampler(model.sampler, self.data.train, self.data.train_items, cfg.num_negatives)
        loop = EpochLoop(model, sampler, cfg, self.seed, self.selection(), run_dir=self.run_dir,
                         checkpoint=CHECKPOINT, best=BEST, device=self.device, progress=self.progress,
                         before_epoch=model.on_epoch_start, on_epoch=self.on_epoch,
                         grad_groups=model.diagnostic_groups() if cfg.log_grad_ratio else None,
                         title=f"{model.registry_name or type(model).__name__.lower()} seed {self.seed}",
                         distributed=True)  # data-parallel when launched by torchrun, else one process
        return loop.fit(resume)
