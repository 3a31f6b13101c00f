"""AlignRec stage 1 (Inter-Content Alignment, "MMEnc") on the frozen features we have.

Liu et al., "AlignRec: Aligning and Training in Multimodal Recommendations", CIKM 2024. The paper's
stage 1 fine-tunes BEiT-3 with masked image/text modelling on raw images and texts and takes the CLS
vector as one unified item feature. Raw content and BEiT-3 weights are not available to a toolkit that
receives pre-extracted features, so this module learns the same *kind* of object from them:

* one projection head per modality (``Linear -> LeakyReLU -> Linear``, on standardised features) into
  a shared ``dim``-d space, outputs L2-normalised;
* a symmetric InfoNCE between the modalities of the same item (all pairs when there are more than
  two), with in-batch negatives: ``L = mean over pairs (a, b) of (NCE(z_a, z_b) + NCE(z_b, z_a)) / 2``;
* fusion: the L2-normalised mean of the aligned vectors of the modalities an item *has* (a missing
  modality is left out, never read as a zero vector); an item with none is unavailable.

Training runs in the toolkit's one training loop (:class:`~prismrec.utils.loop.EpochLoop`, the loop of
every run and of ANT's pre-training): the objective is the InfoNCE above on mini-batches of training
items, reshuffled every epoch with the per-epoch seed ``epoch_seed(seed, epoch)``, Adam without weight
decay, clipping or schedule. The kept weights are those with the lowest alignment loss on a held-out
share of items (the untrained heads count as epoch 0; an epoch must lower it by more than 1e-6), and
``patience`` epochs without such a drop stop training. The retrieval accuracy a -> b on the held-out
items is reported before (untrained heads, and the random baseline k / n) and after training.
Everything is seeded and runs inside ``torch.random.fork_rng``, so the result depends only on the inputs
and the settings and the caller's random stream is untouched.

Settings: ``AlignmentEncoder.Config`` (alias ``AlignConfig``), nested in the class it configures as a
model's ``Config`` is. It is a typed :class:`~prismrec.config.StrictConfig` rather than a
``ModelConfig`` because stage 1 is not a registered model: it is a sub-config of AlignRec, whose
``stage1_<name>`` keys are its fields of the same name (:meth:`AlignmentEncoder.Config.from_prefixed`).
Its optimisation fields carry the names of the ``train`` section (``epochs``, ``batch_size``,
``learning_rate``, ``patience``), because stage 1 is trained while AlignRec is built, outside a run's
``train`` section.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from itertools import combinations, permutations
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from ...config import StrictConfig, TrainConfig
from ...data.dataset import Modality
from ...graphs.knn import l2_normalize
from ...utils.loop import EpochLoop, Selection
from ..layers import MaskedProjection, info_nce

log = logging.getLogger("prismrec")

RETRIEVAL_KS = (1, 10)


def concat_modalities(modalities: dict[str, Modality]) -> tuple[np.ndarray, np.ndarray]:
    """The no-alignment feature: every modality L2-normalised, concatenated (sorted by name).

    A missing modality leaves its block at zero, so it adds nothing to a dot product; an item is
    available when it has at least one modality.
    """
    names = sorted(modalities)
    blocks = [np.where(modalities[n].available[:, None], l2_normalize(modalities[n].values), 0.0) for n in names]
    available = np.logical_or.reduce([modalities[n].available for n in names])
    return np.concatenate(blocks, axis=1).astype(np.float32), available


class _Head(nn.Module):
    """One modality's head: standardise (statistics of the training data, kept for re-encoding), project,
    L2-normalise."""

    def __init__(self, modality: Modality, dim: int, hidden: int):
        super().__init__()
        values = modality.values[modality.available] if modality.available.any() else modality.values[:1]
        self.register_buffer("mean", torch.from_numpy(values.mean(axis=0)))
        self.register_buffer("scale", torch.from_numpy(values.std(axis=0) + 1e-6))
        self.proj = MaskedProjection(modality.dim, dim, hidden=hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj((x - self.mean) / self.scale), dim=-1)


class AlignmentEncoder(nn.Module):
    """Per-modality projection heads into one shared space, and the fusion into one item feature."""

    class Config(StrictConfig):
        """Settings of the stage-1 alignment encoder (``prismrec align`` and AlignRec's ``stage1: train``)."""

        dim: int = Field(128, ge=2, description="dimension of the aligned space (the unified feature)")
        hidden: int = Field(512, ge=1, description="hidden width of each modality's projection head")
        epochs: int = Field(100, ge=0, description="maximum epochs over the training items")
        batch_size: int = Field(512, ge=2, description="items per batch (the in-batch negatives)")
        learning_rate: float = Field(1e-3, gt=0)
        temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
        valid_share: float = Field(0.1, gt=0, lt=1, description="share of items held out for early stopping")
        patience: int = Field(10, ge=1, description="epochs without a lower held-out loss before stopping")
        seed: int = Field(0, description="seed of the initialisation, the held-out split and the batches")

        @classmethod
        def from_prefixed(cls, settings: BaseModel, prefix: str) -> "AlignmentEncoder.Config":
            """The stage-1 settings a model's config holds as ``<prefix><field>`` (AlignRec: ``stage1_dim``, ...);
            the fields it does not hold (or holds as None) keep their defaults."""
            values = {name[len(prefix):]: getattr(settings, name) for name in type(settings).model_fields
                      if name.startswith(prefix) and name[len(prefix):] in cls.model_fields
                      and getattr(settings, name) is not None}  # None: the default (AlignRec: the run seed)
            return cls(**values)

    def __init__(self, modalities: dict[str, Modality], dim: int, hidden: int):
        super().__init__()
        self.names = sorted(modalities)
        self.dim = dim
        self.heads = nn.ModuleDict({n: _Head(modalities[n], dim, hidden) for n in self.names})

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Aligned, L2-normalised vectors of raw feature rows ``x`` of modality ``name``."""
        return self.heads[name](x)

    @torch.no_grad()
    def encode(self, modalities: dict[str, Modality], chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """The unified feature of every item: mean of the aligned vectors of its available modalities,
        L2-normalised (the fusion step); returns ``(values, available)``."""
        n = len(modalities[self.names[0]])
        out = np.zeros((n, self.dim), dtype=np.float32)
        count = np.zeros(n, dtype=np.float32)
        for name in self.names:
            m = modalities[name]
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                z = self.project(name, torch.from_numpy(m.values[rows]).to(self.heads[name].mean.device)).cpu().numpy()
                out[rows] += np.where(m.available[rows, None], z, 0.0)
            count += m.available
        available = count > 0
        out[available] = l2_normalize(out[available] / count[available, None])
        return out, available


#: the settings of stage 1 (``AlignmentEncoder.Config``)
AlignConfig = AlignmentEncoder.Config


@dataclass
class AlignmentResult:
    """The unified feature (``values``, ``available``), the trained encoder and what training reported."""

    values: np.ndarray
    available: np.ndarray
    encoder: AlignmentEncoder | None
    report: dict[str, Any] = field(default_factory=dict)


def _pair_loss(enc: AlignmentEncoder, feats: dict[str, torch.Tensor], avail: dict[str, torch.Tensor],
               items: torch.Tensor, temperature: float) -> torch.Tensor | None:
    """Symmetric InfoNCE averaged over the modality pairs that at least two items of ``items`` share."""
    z = {n: enc.project(n, feats[n][items]) for n in enc.names}
    losses = []
    for a, b in combinations(enc.names, 2):
        both = avail[a][items] & avail[b][items]
        if int(both.sum()) >= 2:
            losses.append(0.5 * (info_nce(z[a][both], z[b][both], temperature)
                                 + info_nce(z[b][both], z[a][both], temperature)))
    return torch.stack(losses).mean() if losses else None


@torch.no_grad()
def retrieval_accuracy(enc: AlignmentEncoder, feats: dict[str, torch.Tensor], avail: dict[str, torch.Tensor],
                       items: np.ndarray, ks: tuple[int, ...] = RETRIEVAL_KS, chunk: int = 1024) -> dict[str, Any]:
    """Top-k accuracy of retrieving item i's modality b from its modality a among the held-out items.

    For every ordered pair a -> b: the queries are ``z_a`` of the items that have both modalities, the
    candidates ``z_b`` of the same items; a hit at k when fewer than k candidates score strictly higher
    than the right one. ``random`` is the expected accuracy of a random ranking, ``k / n``.
    """
    out: dict[str, Any] = {}
    idx = torch.as_tensor(items, dtype=torch.long)
    for a, b in permutations(enc.names, 2):
        sel = idx[avail[a][idx] & avail[b][idx]]
        n = len(sel)
        if n < 2:
            continue
        za, zb = enc.project(a, feats[a][sel]), enc.project(b, feats[b][sel])
        ranks = []
        for start in range(0, n, chunk):
            sims = za[start:start + chunk] @ zb.T
            right = sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])]
            ranks.append((sims > right[:, None]).sum(dim=1))
        rank = torch.cat(ranks).cpu().numpy()
        out[f"{a}->{b}"] = {"n": n, **{f"top{k}": float((rank < k).mean()) for k in ks},
                            **{f"random_top{k}": min(1.0, k / n) for k in ks}}
    return out


def _fingerprint(modalities: dict[str, Modality], cfg: AlignConfig) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(cfg.model_dump_json().encode())
    for name in sorted(modalities):
        h.update(name.encode())
        h.update(np.ascontiguousarray(modalities[name].values).tobytes())
        h.update(modalities[name].available.tobytes())
    return h.hexdigest()


_CACHE: dict[str, AlignmentResult] = {}
_CACHE_SIZE = 4


def train_alignment(modalities: dict[str, Modality], cfg: AlignConfig | None = None, *, use_cache: bool = True,
                    device: torch.device | str = "cpu") -> AlignmentResult:
    """Train the stage-1 encoder on ``modalities`` and return the unified item feature.

    With a single modality there is nothing to align: the result is that modality L2-normalised (no
    encoder). Results are memoised in-process by (features, settings), so rebuilding a model for a
    checkpoint or for another seed does not train stage 1 again.
    """
    cfg = cfg or AlignConfig()
    if len(modalities) < 2:
        values, available = concat_modalities(modalities)
        log.warning("stage 1: one modality (%s), nothing to align; using it L2-normalised", ", ".join(modalities))
        return AlignmentResult(values, available, None, {"aligned": False, "modalities": sorted(modalities)})
    key = _fingerprint(modalities, cfg)
    if use_cache and key in _CACHE:
        return _CACHE[key]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        result = _fit(modalities, cfg, torch.device(device))
    if use_cache:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    return result


class _ItemBatches:
    """Stage 1's batch source: the training items, reshuffled every epoch, ``batch_size`` at a time."""

    def __init__(self, items: np.ndarray):
        self.items = items

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.items) // batch_size)

    def epoch(self, rng: np.random.Generator, batch_size: int, device: torch.device):
        order = torch.as_tensor(rng.permutation(self.items), dtype=torch.long, device=device)
        for start in range(0, len(order), batch_size):
            yield {"items": order[start:start + batch_size]}


class _Alignment(nn.Module):
    """Stage 1's objective for the training loop: the alignment loss of a batch of items (None when no
    modality pair has two items in it: nothing to learn)."""

    def __init__(self, enc: AlignmentEncoder, feats: dict[str, torch.Tensor], avail: dict[str, torch.Tensor],
                 temperature: float):
        super().__init__()
        self.enc = enc
        self.feats, self.avail, self.temperature = feats, avail, temperature

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return _pair_loss(self.enc, self.feats, self.avail, batch["items"], self.temperature)


def _fit(modalities: dict[str, Modality], cfg: AlignConfig, device: torch.device) -> AlignmentResult:
    enc = AlignmentEncoder(modalities, cfg.dim, cfg.hidden).to(device)
    names = enc.names
    feats = {n: torch.from_numpy(modalities[n].values).to(device) for n in names}
    avail = {n: torch.from_numpy(modalities[n].available).to(device) for n in names}
    rng = np.random.default_rng(cfg.seed)
    n_avail = np.sum([modalities[n].available for n in names], axis=0)
    pairable = rng.permutation(np.flatnonzero(n_avail >= 2))
    n_valid = min(len(pairable) // 2, max(2, int(round(cfg.valid_share * len(pairable)))))
    valid, train = np.sort(pairable[:n_valid]), pairable[n_valid:]
    valid_t = torch.as_tensor(valid, dtype=torch.long, device=device)

    def held_out(row: dict[str, Any] | None) -> tuple[float, dict[str, float]]:
        enc.eval()
        with torch.no_grad():
            vals = [_pair_loss(enc, feats, avail, valid_t[s:s + cfg.batch_size], cfg.temperature)
                    for s in range(0, len(valid_t), cfg.batch_size)]
        vals = [float(v) for v in vals if v is not None]
        loss = float(np.mean(vals)) if vals else float("nan")
        return loss, {"valid_loss": loss}

    before = retrieval_accuracy(enc, feats, avail, valid)
    settings = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                           patience=cfg.patience, lr_scheduler=(1.0, 1))
    selection = Selection("held-out alignment loss", held_out, higher_is_better=False, patience=cfg.patience,
                          min_delta=1e-6, initial=True)
    result = EpochLoop(_Alignment(enc, feats, avail, cfg.temperature), _ItemBatches(train), settings, cfg.seed,
                       selection, device=device, label="stage 1 epoch", log_level=logging.DEBUG).fit()
    enc.eval()
    after = retrieval_accuracy(enc, feats, avail, valid)
    values, available = enc.encode(modalities)
    enc.cpu()
    report = {"aligned": True, "modalities": names, "dim": cfg.dim, "train_items": int(len(train)),
              "valid_items": int(len(valid)), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "valid_loss": [h["valid_loss"] for h in result.history], "retrieval_before": before,
              "retrieval_after": after, "settings": cfg.model_dump()}
    log.info("stage 1: best held-out alignment loss %.4f at epoch %d of %d", result.best_score, result.best_epoch,
             result.epochs_run)
    return AlignmentResult(values, available, enc, report)
