"""Building blocks shared by the multimodal models: feature tables with missing flags, projections.

Item features reach a model as :class:`~prismrec.data.dataset.Modality` objects (values plus an
``available`` mask). The rule every model follows: **a missing feature is never treated as a zero
feature vector**. Projections replace the rows of unavailable items by a learned per-modality
"missing" vector, and kNN graphs leave those items out (``graphs.knn.knn_graph(available=...)``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..data.dataset import FeatureShape, Modality


def id_table(rows: int, dim: int, init: str = "xavier_uniform") -> nn.Parameter:
    """A learned ID embedding table ``(rows, dim)`` initialised as MMRec does (Xavier uniform; BPR: normal)."""
    return nn.Parameter(getattr(nn.init, f"{init}_")(torch.empty(rows, dim)))


class FeatureTable(FeatureShape, nn.Module):
    """Frozen features of one modality as buffers: ``values`` (items x dim) and ``available`` (items,).

    Buffers are not saved in checkpoints (they are rebuilt from the data) and move with ``.to()``.
    ``trainable=True`` makes ``values`` a parameter initialised with the features (MMRec's
    ``nn.Embedding.from_pretrained(feat, freeze=False)``), saved in checkpoints.
    """

    def __init__(self, modality: Modality, *, standardize: bool = False, trainable: bool = False):
        super().__init__()
        # filled block by block from the (possibly float16, memory-mapped) storage: the only whole copy is
        # this float32 table itself
        values = np.empty((len(modality.available), modality.dim), dtype=np.float32)
        for start, block in modality.chunks():
            values[start:start + len(block)] = block
        if standardize:
            avail = modality.available
            mu = values[avail].mean(axis=0, keepdims=True) if avail.any() else 0.0
            sd = values[avail].std(axis=0, keepdims=True) + 1e-6 if avail.any() else 1.0
            values = np.where(avail[:, None], (values - mu) / sd, 0.0).astype(np.float32)
        self.name = modality.name
        self.register_buffer("values", torch.from_numpy(values), persistent=False)
        self.register_buffer("available", torch.from_numpy(modality.available.copy()), persistent=False)
        if trainable:
            self.values = nn.Parameter(self._buffers.pop("values"))



class MaskedProjection(nn.Module):
    """Project a :class:`FeatureTable` to ``out_dim``; unavailable items get a learned missing vector.

    ``hidden=None`` gives one linear layer (VBPR, FREEDOM, BM3); ``hidden=h`` gives
    ``Linear -> LeakyReLU -> Linear`` (LIRDRec's modality MLPs).
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden: int | None = None, bias: bool = True,
                 out_bias: bool = True, activation: nn.Module | None = None):
        super().__init__()
        if hidden is None:
            self.net: nn.Module = nn.Linear(in_dim, out_dim, bias=bias)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden, bias=bias), activation or nn.LeakyReLU(),
                                     nn.Linear(hidden, out_dim, bias=out_bias))
        self.missing = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x)
        if available is not None and not bool(available.all()):
            out = torch.where(available.unsqueeze(-1), out, self.missing.expand_as(out))
        return out


class ModalityProjections(nn.Module):
    """One feature table and one :class:`MaskedProjection` to ``out_dim`` per modality (sorted by name).

    ``finetune=True`` makes the feature tables parameters (FREEDOM, BM3); otherwise they are fixed
    buffers (VBPR). ``self(name, items)`` projects the rows ``items`` (all rows when None).
    """

    def __init__(self, modalities: dict[str, Modality], out_dim: int, *, finetune: bool = False,
                 bias: bool = True):
        super().__init__()
        self.names = sorted(modalities)
        self.tables = nn.ModuleDict({n: FeatureTable(modalities[n], trainable=finetune) for n in self.names})
        self.proj = nn.ModuleDict({n: MaskedProjection(self.tables[n].dim, out_dim, bias=bias)
                                   for n in self.names})

    def forward(self, name: str, items: torch.Tensor | None = None) -> torch.Tensor:
        t = self.tables[name]
        if items is None:
            return self.proj[name](t.values, t.available)
        return self.proj[name](t.values[items], t.available[items])

    def linears(self) -> list[nn.Linear]:
        """The projection layers, for model-specific initialisation."""
        return [self.proj[n].net for n in self.names]  # type: ignore[misc]

    def projection_parameters(self) -> list[nn.Parameter]:
        """Weights, biases and missing vectors of the projections (not the feature tables)."""
        return list(self.proj.parameters())

    def in_dim(self) -> int:
        """Size of the concatenated features (all modalities)."""
        return sum(self.tables[n].dim for n in self.names)


class UniformDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn as ``U(0, 1) >= p`` (``torch.rand``) instead of ``bernoulli_``.

    The same distribution (each element kept with probability ``1 - p``, kept elements scaled by
    ``1 / (1 - p)``), about 4x cheaper on CPU, where ``bernoulli_`` draws ~10 ns per element against ~3 for
    ``torch.rand`` (docs/benchmarks.md §2.4). Another random stream than ``nn.Dropout``: a seed gives
    other, equally distributed, results.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        keep = torch.rand_like(x).ge_(self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep


def feature_tables(modalities: dict[str, Modality], names: Iterable[str] | None = None,
                   standardize: bool = False) -> nn.ModuleDict:
    """One :class:`FeatureTable` per modality (all of them, or ``names``), in a stable order."""
    keys = list(names) if names is not None else sorted(modalities)
    return nn.ModuleDict({k: FeatureTable(modalities[k], standardize=standardize) for k in keys})


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row ``r`` of ``a`` should match row ``r`` of ``b``.

    ``mean_r -log( exp(cos(a_r, b_r)/t) / sum_c exp(cos(a_r, b_c)/t) )``.
    """
    a = nn.functional.normalize(a, dim=-1)
    b = nn.functional.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    return nn.functional.cross_entropy(logits, torch.arange(len(a), device=a.device))
