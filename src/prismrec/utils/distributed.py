"""Data-parallel training under ``torchrun``: everything prismrec does differently with several processes.

``torchrun --nproc_per_node N -m prismrec train ...`` starts N copies of the command. Each one joins the
process group (:func:`setup`: gloo on CPU, NCCL on CUDA, one device per process: ``cuda:LOCAL_RANK``),
reads the data and builds the split and the model itself (the same seed gives the same result on every
rank), and then:

* **training** (:class:`Replicas`, used by :class:`~prismrec.utils.loop.EpochLoop`): every rank draws the
  same global batches (the batch source is seeded from ``(seed, epoch)``) and keeps its contiguous share
  of each (:func:`shard`: ``batch_size / N`` rows). The objective is wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel`, which all-reduces the gradients during the
  backward pass. Each rank's loss is scaled by ``N * n_rank / n_batch`` before it, so DDP's average is
  the gradient of the global batch's mean loss even when the last batch does not divide evenly: for a
  loss that is a mean over the batch's rows, the step is the one-process step (up to the order of
  floating-point sums). The epoch's loss is all-reduced once per epoch, for the log;
* **evaluation** (:func:`user_share`, :func:`sum_across`, used by
  :class:`~prismrec.evaluate.ranking.RankingEvaluator`): every rank prepares scoring itself and ranks a
  contiguous share of the evaluated users; the per-user hit (and top-K) rows are summed across ranks
  with one ``all_reduce``, so every rank holds every user's result and computes the same metrics and
  makes the same early-stopping decision;
* **files**: only rank 0 writes (logs, checkpoints, ``model.pt``, metrics, the split); a write from any
  other rank is refused (:func:`check_writer`), so a missed guard fails loudly instead of racing.

What DDP does not divide: work that a model does for the whole catalogue in every step (a graph model's
propagation over the full user-item graph, a full-softmax's ``batch x items`` logits are per rank but
its item table is whole) is repeated on every rank; only the per-example part of the loss is split.
Each rank also draws the whole epoch's batches (cheap, vectorised) so that every rank sees the same
global batches as one process.

Without ``torchrun`` (no ``RANK`` / ``WORLD_SIZE`` in the environment) nothing here does anything.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import timedelta
from typing import Any

import numpy as np

from ..errors import PrismrecError

#: how long a rank waits for the others at a collective before it gives up
TIMEOUT = timedelta(minutes=30)


def launched() -> bool:
    """True in a process started by ``torchrun`` (or anything that sets ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's rank from the environment (0 when not launched by ``torchrun``); usable before
    :func:`setup` (the CLI uses it to keep other ranks quiet)."""
    try:
        return int(os.environ.get("RANK", "0")) if launched() else 0
    except ValueError:
        return 0


def _dist():
    return sys.modules.get("torch.distributed")


def active() -> bool:
    """True once this process has joined a process group."""
    d = _dist()
    return d is not None and d.is_available() and d.is_initialized()


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world() -> int:
    return _dist().get_world_size() if active() else 1


def backend() -> str | None:
    return str(_dist().get_backend()) if active() else None


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files, logs and prints."""
    return rank() == 0


def check_writer(path: Any) -> None:
    """Refuse a file write from a rank other than 0 (the atomic writers call this)."""
    if active() and rank() != 0:
        raise PrismrecError(f"rank {rank()} tried to write {path}; under torchrun only rank 0 writes files. "
                            "Fix: guard the write with prismrec.utils.distributed.is_main().")


def setup(device: Any) -> tuple[Any, bool]:
    """Join the ``torchrun`` process group when launched by it; returns ``(device of this rank, joined)``.

    ``joined`` is True when this call created the group (the caller then calls :func:`teardown`). A CUDA
    device becomes ``cuda:LOCAL_RANK`` (NCCL); anything else runs on the CPU with gloo. A plain process
    gets its ``device`` back unchanged."""
    import torch

    if not launched():
        return device, False
    device = torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PrismrecError("train.device asks for CUDA but this machine has none. Fix: --device cpu.")
        if local >= torch.cuda.device_count():
            raise PrismrecError(
                f"torchrun started rank with LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are "
                "visible. Fix: --nproc_per_node at most the number of GPUs, or --device cpu (gloo).")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise PrismrecError(f"data-parallel training runs on cpu (gloo) or cuda (NCCL), not {device.type}. "
                            "Fix: --device cpu or --device cuda.")
    d = torch.distributed
    if d.is_initialized():
        return device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    d.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    if d.get_rank() != 0:  # only rank 0 logs: the others report errors only
        logger = logging.getLogger("prismrec")
        logger.setLevel(max(logger.level, logging.ERROR))
    d.barrier()
    return device, True


def teardown() -> None:
    if active():
        _dist().destroy_process_group()


def barrier() -> None:
    if active():
        _dist().barrier()


# ------------------------------------------------------------------------------------------ evaluation
def user_share(n: int) -> slice:
    """This rank's contiguous share of ``n`` items (users to evaluate): all of them on one process."""
    r, w = rank(), world()
    return slice(n * r // w, n * (r + 1) // w)


def sum_across(arr: np.ndarray, device: Any = None) -> np.ndarray:
    """``arr`` summed element-wise over the ranks (one ``all_reduce``); unchanged on one process. Booleans
    are summed as bytes (each entry is set on one rank only, so the sum is that rank's value)."""
    if not active():
        return arr
    import torch

    d = _dist()
    dtype = arr.dtype
    t = torch.from_numpy(np.ascontiguousarray(arr.view(np.uint8) if dtype == bool else arr))
    if d.get_backend() == "nccl":
        t = t.to(device if device is not None and torch.device(device).type == "cuda" else "cuda")
    d.all_reduce(t)
    out = t.cpu().numpy()
    return out.astype(bool) if dtype == bool else out


# ------------------------------------------------------------------------------------------ training
def shard(batch: Any, r: int, w: int) -> tuple[Any, float]:
    """Rank ``r``'s contiguous share of a global batch (a dict of tensors whose first dimension is the
    batch) and the fraction of the batch it holds. A tensor whose first dimension is not the batch's is
    passed whole. A rank whose share is empty (a last batch of fewer rows than ranks) gets the whole batch
    with weight 0, so it still joins the gradient all-reduce."""
    import torch

    if not isinstance(batch, dict):
        raise PrismrecError("data-parallel training needs batches that are dicts of tensors. "
                            "Fix: train this objective with one process.")
    n = next((v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 0)
    lo, hi = n * r // w, n * (r + 1) // w
    if hi == lo:
        return batch, 0.0
    return ({k: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
             for k, v in batch.items()}, (hi - lo) / n)


class Replicas:
    """The objective of one rank in data-parallel training: its share of each batch, DDP's gradient
    all-reduce, and the epoch's loss summed over the ranks (see the module docstring)."""

    def __init__(self, objective: Any, device: Any):
        import torch
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel

        class _Forward(nn.Module):
            """DDP wraps ``forward``; a prismrec objective trains through ``loss(batch)``."""

            def __init__(self, inner: nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, batch: Any) -> Any:
                out = self.inner.loss(batch)
                if out is None:  # this rank's share has nothing to learn: a zero loss still joins the all-reduce
                    params = [p for p in self.inner.parameters() if p.requires_grad]
                    out = torch.stack([p.reshape(-1)[:1].sum() for p in params]).sum() * 0.0
                return out

        self.rank, self.world = rank(), world()
        device = torch.device(device)
        with warnings.catch_warnings():  # broadcast_buffers=False is still the only way to skip the init sync
            warnings.simplefilter("ignore", FutureWarning)
            self.ddp = DistributedDataParallel(
                _Forward(objective), device_ids=[device.index] if device.type == "cuda" else None,
                # buffers (sparse graphs, features) are built identically on every rank: never broadcast
                broadcast_buffers=False,
                # a loss may leave parameters out, and which ones can change between epochs (warm-ups,
                # a graph rebuilt on an epoch's first batch): DDP finds them every step
                find_unused_parameters=True,
            )

    def loss(self, batch: Any) -> tuple[Any, float]:
        """``(output, weight)``: the objective's output on this rank's share and the share's fraction of the
        batch. Multiply the loss by :meth:`scale` ``(weight)`` before ``backward``."""
        part, weight = shard(batch, self.rank, self.world)
        return self.ddp(part), weight

    def scale(self, weight: float) -> float:
        return self.world * weight

    def epoch_sums(self, total: float, terms: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The epoch's weighted loss sums added over the ranks (every rank has the same keys)."""
        keys = sorted(terms)
        summed = sum_across(np.asarray([total, *(terms[k] for k in keys)], dtype=np.float64))
        return float(summed[0]), {k: float(v) for k, v in zip(keys, summed[1:])}
