"""Gradient-based contributions of history items and modalities to a next-item score.

Demure (Yao et al., arXiv 2305.01915) scores each item and each modality of a training sequence by
its contribution to the next-item prediction and treats low contributors as noise. We use gradient x
input on the encoder's input parts (:meth:`SequentialRecommender.input_parts`): for position ``i``
and part ``m`` (``"id"`` or a modality) with input ``z_{i,m}``,

    c_{i,m} = < d s(target) / d z_{i,m} , z_{i,m} >

where ``s(target)`` is the score of the target item. ``c_{i,m}`` sums over ``m`` to the item's
contribution ``c_i``. The same function serves Demure's training-time noise detection and
``prismrec explain`` for any sequential model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Contributions:
    """``parts``: part names; ``by_part``: ``(B, L, P)``; ``by_item``: ``(B, L)`` (sum over parts);
    ``scores``: the target scores ``(B,)``. Padded positions are 0."""

    parts: list[str]
    by_part: torch.Tensor
    by_item: torch.Tensor
    scores: torch.Tensor


def contributions(model, seqs: torch.Tensor, targets: torch.Tensor, *, create_graph: bool = False,
                  items: torch.Tensor | None = None) -> Contributions:
    """Gradient x input of the target score w.r.t. every input part of every position.

    ``seqs``: left-padded tokens ``(B, L)``; ``targets``: internal item ids ``(B,)``. ``items``: the
    output item embeddings to score against (default ``model.item_embeddings()``). Runs one forward
    and one backward pass; leaves the model's parameter gradients untouched.
    """
    with torch.enable_grad():
        parts = {k: v.detach().requires_grad_(True) for k, v in model.input_parts(seqs).items()}
        h = model.encode_parts(parts, seqs)
        item_emb = items if items is not None else model.item_embeddings()
        score = (h * item_emb[targets]).sum(-1)
        names = list(parts)
        grads = torch.autograd.grad(score.sum(), [parts[k] for k in names], create_graph=create_graph)
    by_part = torch.stack([(g * parts[k]).sum(-1) for g, k in zip(grads, names)], dim=-1)
    by_part = by_part * (seqs != 0).unsqueeze(-1)
    if not create_graph:
        by_part = by_part.detach()
    return Contributions(names, by_part, by_part.sum(-1), score.detach())
