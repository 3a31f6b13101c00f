"""Demure-style denoising of a multimodal sequential recommender with contrastive learning (``demure``).

Yao, Zhang, Zhao, Zhu, Zhang, Zhang, He, Wu, "Denoising Multi-modal Sequential Recommenders with
Contrastive Learning", arXiv 2305.01915 (2023). No official code exists and only the abstract of the
paper could be read, so this is a **reconstruction** (see ``docs/models/demure.md``). What the
abstract states [P], and what is our reconstruction [R]:

* [P] The modalities of an interacted item that caused the interaction are the user's
  *point-of-interests*; the others are potential *noise* that can mislead the model. There is no
  explicit feedback on which is which: Demure is *weakly supervised* and identifies the noise "by
  analyzing the modalities of all interacted items from a given user", and it is built on
  *contrastive learning*.
* [R] Backbone: SASRec-F (:class:`~prismrec.models.sequential.sasrec.SASRecF`): item input
  ``e_i = E_id[i] + sum_m W_m x_{i,m}``, causal Transformer, full-softmax next-item cross-entropy.
* [R] Weak supervision = the next-item prediction itself. For the last position of each training
  window, the contribution of every (history position ``i``, modality ``m``) part to the target's
  score is gradient x input, ``c_{i,m} = <d s(target) / d z_{i,m}, z_{i,m}>`` with
  ``z_{i,m} = W_m x_{i,m}`` (:func:`~prismrec.models.sequential.attribution.contributions`, computed
  without dropout and detached: one extra forward + backward per batch).
* [R] "All interacted items of a user": the parts are ranked *within each sequence*, over all its
  items and modalities. The lowest ``noise_ratio`` share are noise, the highest ``noise_ratio``
  share are point-of-interests (with ``granularity: item`` whole items are ranked instead). A part
  whose feature is missing (the projection's learned "missing" vector, the same for every such item)
  is never a candidate: it says nothing about the item.
* [R] Views (CauseRec-style counterfactuals, the same authors' SIGIR'21 recipe moved from items to
  modalities): the *denoised* positive view alters the noise parts, the *noisy* negative view
  alters the point-of-interests; ``view_op`` zeroes them, swaps in a learned mask vector, or
  replaces them with the same part of a random item.
* [R] Objective ``L = L_CE + cl_weight * L_CL`` with InfoNCE on cosine similarity and temperature
  ``tau``: the anchor is the user representation of the original sequence, its positive is the
  denoised view of the same sequence, negatives are the denoised views of the other sequences in
  the batch plus its own noisy view (a hard negative). ``L_CL`` is switched on after
  ``warmup_epochs`` epochs of plain cross-entropy (attribution is meaningless on an untrained model).

Scoring is plain SASRec-F: the views only shape training.
"""

from __future__ import annotations

from typing import ClassVar

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch
from .attribution import contributions
from .base import PAD
from .sasrec import SASRecF


@dataclass
class NoiseMarks:
    """Which input parts of a batch are noise / point-of-interests.

    ``parts``: the part names (as :meth:`input_parts` orders them); ``noise`` and ``poi``: boolean
    ``(B, L, P)``; ``scores``: the gradient x input contributions ``(B, L, P)`` they were ranked by.
    """

    parts: list[str]
    noise: torch.Tensor
    poi: torch.Tensor
    scores: torch.Tensor


@MODELS.register("demure")
class Demure(SASRecF):
    """SASRec-F trained with Demure-style (reconstructed) modality denoising contrastive learning."""

    #: research note grids (not confirmed in code): cl_weight {0.01, 0.05, 0.1, 0.5}, tau {0.1, 0.2, 0.5}
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "cl_weight": Choice((0.01, 0.05, 0.1, 0.5)),
                                    "tau": Choice((0.1, 0.2, 0.5))}

    class Config(SASRecF.Config):
        noise_ratio: float = Field(
            0.2, gt=0, le=0.5,
            description="share of a sequence's candidate parts marked noise (lowest contributions); the same share "
                        "of highest contributions are the point-of-interests")
        granularity: Literal["modality", "item"] = Field(
            "modality", description="rank (position, modality) parts (the ID part is never noise), or whole items")
        view_op: Literal["zero", "mask", "replace"] = Field(
            "zero", description="how a marked part is altered in a view: zeroed, a learned mask vector per part, "
                                "or the same part of a uniformly drawn random item")
        cl_weight: float = Field(0.1, ge=0, description="weight lambda of the contrastive loss")
        tau: float = Field(0.2, gt=0, description="InfoNCE temperature (cosine similarities)")
        warmup_epochs: int = Field(5, ge=0, description="epochs of plain cross-entropy before the contrastive loss")
        hard_negative: bool = Field(True, description="add the noisy view (point-of-interests altered) as a hard "
                                                      "negative of its own sequence; false: in-batch negatives only")

    def __init__(self, config: Demure.Config, data: TrainingData):
        super().__init__(config, data)
        names = list(self.tokens.features.names) + (["id"] if self.tokens.use_ids else [])
        self.mask_vectors = None
        if config.view_op == "mask":
            self.mask_vectors = nn.ParameterDict(
                {n: nn.Parameter(torch.randn(config.embedding_size) * 0.02) for n in names})
        self._epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def contrastive_active(self) -> bool:
        """The contrastive loss is on from epoch ``warmup_epochs + 1`` (and with a positive weight)."""
        return self.config.cl_weight > 0 and self._epoch > self.config.warmup_epochs

    # weak supervision ------------------------------------------------------------------------------
    def mark_noise(self, seqs: torch.Tensor, targets: torch.Tensor, items: torch.Tensor | None = None) -> NoiseMarks:
        """Noise and point-of-interest parts of each sequence from the target's gradient x input.

        Candidates are the modality parts of the non-padded positions whose item has that feature
        (``granularity: modality``; the ID part is not a modality and is never marked; a missing feature,
        the learned "missing" vector, is never a candidate) or the non-padded positions themselves
        (``granularity: item``, the parts of an item that carry content together, scored by their sum and
        altered together). Per sequence,
        with ``n`` candidates, ``k = min(max(1, round(noise_ratio * n)), n // 2)`` lowest are noise and
        the ``k`` highest are point-of-interests (disjoint; ties broken by position).
        """
        was_training = self.training
        self.eval()  # deterministic attribution: no dropout
        try:
            c = contributions(self, seqs, targets, items=None if items is None else items.detach())
        finally:
            self.train(was_training)
        B, L, P = c.by_part.shape
        valid = seqs != PAD
        avail = self.part_available(seqs, c.parts)
        if self.config.granularity == "modality":
            is_modality = torch.tensor([n != "id" for n in c.parts], device=seqs.device)
            scores, cand = c.by_part, valid[..., None] & is_modality & avail
        else:  # an item is scored by its parts that carry content (a missing feature's vector is no signal)
            scores = (c.by_part * avail).sum(-1, keepdim=True)
            cand = valid[..., None] & avail.any(-1, keepdim=True)
        flat, flat_cand = scores.reshape(B, -1), cand.reshape(B, -1)
        n = flat_cand.sum(1)
        k = torch.minimum((n.float() * self.config.noise_ratio).round().long().clamp(min=1), n // 2)
        order = flat.masked_fill(~flat_cand, float("inf")).argsort(dim=1, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=seqs.device).expand(B, -1))
        noise = (rank < k[:, None]) & flat_cand
        poi = (rank >= (n - k)[:, None]) & (rank < n[:, None]) & flat_cand
        noise, poi = noise.reshape(cand.shape), poi.reshape(cand.shape)
        if self.config.granularity == "item":  # every part of the item that carries content
            noise, poi = noise.expand(B, L, P) & avail, poi.expand(B, L, P) & avail
        return NoiseMarks(c.parts, noise, poi, c.by_part)

    def part_available(self, seqs: torch.Tensor, parts: list[str]) -> torch.Tensor:
        """``(B, L, P)``: whether part ``parts[j]`` of the item at each position carries the item's content.
        A modality part is False where the item lacks that feature (its input is then the projection's
        learned "missing" vector, the same for every such item); the ID part is always True; padding False."""
        valid = seqs != PAD
        rows = (seqs - 1).clamp(min=0)
        tables = self.tokens.features.tables if self.tokens.features is not None else {}
        cols = [valid & tables[n].available[rows] if n in tables else valid for n in parts]
        return torch.stack(cols, dim=-1)

    def make_view(self, parts: dict[str, torch.Tensor], seqs: torch.Tensor, where: torch.Tensor,
                  names: list[str]) -> dict[str, torch.Tensor]:
        """The input parts with the cells ``where[..., j]`` of part ``names[j]`` altered by ``view_op``;
        every other cell is the original part (same tensor values, gradients flow through both)."""
        op = self.config.view_op
        if op == "replace":
            random_tokens = torch.randint(1, self.n_items + 1, seqs.shape, device=seqs.device)
            other = self.input_parts(random_tokens)
        out = {}
        for j, name in enumerate(names):
            x, w = parts[name], where[..., j, None]
            if op == "zero":
                alt = torch.zeros_like(x)
            elif op == "mask":
                alt = self.mask_vectors[name].expand_as(x)
            else:
                alt = other[name]
            out[name] = torch.where(w, alt, x)
        return out

    def views(self, seqs: torch.Tensor, targets: torch.Tensor, parts: dict[str, torch.Tensor] | None = None,
              items: torch.Tensor | None = None):
        """``(parts, denoised parts, noisy parts, marks)`` of a batch of sequences and their next items."""
        parts = self.input_parts(seqs) if parts is None else parts
        marks = self.mark_noise(seqs, targets, items)
        positive = self.make_view(parts, seqs, marks.noise, marks.parts)
        negative = self.make_view(parts, seqs, marks.poi, marks.parts)
        return parts, positive, negative, marks

    def contrastive_loss(self, anchor: torch.Tensor, positive: torch.Tensor,
                         negative: torch.Tensor | None = None) -> torch.Tensor:
        """InfoNCE: ``-log exp(cos(h, h+)/tau) / (sum_c exp(cos(h, h+_c)/tau) + exp(cos(h, h-)/tau))``
        (without the last term when ``negative`` is None)."""
        a = nn.functional.normalize(anchor, dim=-1)
        logits = a @ nn.functional.normalize(positive, dim=-1).T
        if negative is not None:
            hard = (a * nn.functional.normalize(negative, dim=-1)).sum(-1, keepdim=True)
            logits = torch.cat([logits, hard], dim=1)
        logits = logits / self.config.tau
        return nn.functional.cross_entropy(logits, torch.arange(len(a), device=a.device))

    # training --------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Cross-entropy at every position of each window (as SASRec-F); after the warm-up, plus
        ``cl_weight`` x the contrastive loss at the last position of each window, and diagnostics
        ``noise_<modality>``: the share of the marked noise parts that belong to each modality.
        The item tables are computed once for the step (cross-entropy, attribution and both views)."""
        with self.shared_item_tables():
            return self._loss(batch)

    def _loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        seqs, targets = batch["seqs"], batch["targets"]
        items = self.item_embeddings()
        parts = self.input_parts(seqs)
        if targets.dim() == 1:  # prefix batches
            h_last = self.encode_parts(parts, seqs)
            ce = self.logits_loss(h_last, targets, items)
            last = targets
        else:  # window batches: every position, the last one is the sample for the contrastive term
            h = self.encode_parts(parts, seqs, all_positions=True)
            keep = targets >= 0
            ce = self.logits_loss(h[keep], targets[keep], items)
            h_last, last = h[:, -1], targets[:, -1]
        out = {"ce": ce}
        rows = last >= 0
        if not self.contrastive_active or int(rows.sum()) < 2:
            return {"loss": ce, **out}
        if not bool(rows.all()):
            seqs, last, h_last = seqs[rows], last[rows], h_last[rows]
            parts = {k: v[rows] for k, v in parts.items()}
        _, positive, negative, marks = self.views(seqs, last, parts, items)
        h_neg = self.encode_parts(negative, seqs) if self.config.hard_negative else None
        cl = self.contrastive_loss(h_last, self.encode_parts(positive, seqs), h_neg)
        out["cl"] = cl
        if self.config.granularity == "modality":
            total = marks.noise.sum().clamp(min=1)
            for j, name in enumerate(marks.parts):
                if name != "id":
                    out[f"noise_{name}"] = marks.noise[..., j].sum().float() / total
        return {"loss": ce + self.config.cl_weight * cl, **out}
