"""ANT's multi-domain pre-training (``prismrec pretrain``), run by the one training loop.

:func:`pretrain_ant` fits; :func:`prismrec.transfer.pretrain` (the runs layer) resolves each source's
configuration, loads the data, checks the output directory and calls it, as ``train_run`` calls the
:class:`~prismrec.train.trainer.Trainer`.

Several source datasets at once. Their items are concatenated into one catalogue (ids offset per
domain, as ANT's ``PretrainDataset``), every training sequence is cut into windows
(:class:`~prismrec.models.sequential.base.WindowSampler`), and batches are shuffled across domains.
Loss: next-item InfoNCE with cosine / tau logits against the batch's distinct target items of all
domains (``pretrain_loss: inbatch``, ANT's choice) or against every item of the sample's own domain
(``full``, its logits taken in memory-bounded blocks: ``models.contrastive.full_info_nce``), plus
``it_weight`` x the image -> text InfoNCE on the batch's target items that have both.

Training is :class:`~prismrec.utils.loop.EpochLoop`, the loop of every run: per-epoch seeds, Adam with
the ``train`` section's learning rate, weight decay, ``grad_clip`` and ``lr_scheduler``, an atomic
checkpoint after every epoch. It keeps the weights of the epoch with the lowest mean training loss
(ANT's checkpoint monitor); it runs every epoch (ANT) unless ``pretrain_patience`` is set, then it stops
once the loss has not fallen by more than ``pretrain_min_delta`` for that many epochs (``converged`` in
``pretrain.json``). In ``DIR``:

* ``model.pt``: the kept weights (state dict); ``pretrain.json``: settings, each modality's provenance,
  sources, per-epoch history and seconds. Both complete a pre-training (:func:`~prismrec.models.transfer.ant.read_pretrained`).
* ``pretrain_checkpoint.pt`` (the loop's checkpoint: weights, optimiser, scheduler, selection state and
  history) and ``pretrain_request.json`` (the invocation), so a killed pre-training resumes with
  ``resume=True`` (``--resume``) and ends with the same weights as an uninterrupted one.

Adaptation to a target is :func:`prismrec.transfer.adapt`; the negative-transfer report is
:mod:`prismrec.report.transfer`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.dataset import Dataset, Modality
from ..data.split import Split
from ..errors import PrismrecError
from ..models.contrastive import full_info_nce
from ..models.sequential.base import WindowSampler
from ..models.transfer.ant import (PRETRAIN_META, PRETRAIN_WEIGHTS, build_networks, check_same_spaces, cosine_logits,
                                   feature_space, image_text_loss, select_modalities)
from ..utils.io import save_torch, write_json
from ..utils.loop import EpochLoop, lowest_training_loss
from ..utils.runtime import peak_rss_mb, resolve_device

log = logging.getLogger("prismrec")

PRETRAIN_CHECKPOINT = "pretrain_checkpoint.pt"
PRETRAIN_REQUEST = "pretrain_request.json"


class _Pretraining(nn.Module):
    """The pre-trained part of ANT (same parameter names as :class:`~prismrec.models.transfer.ant.ANT`) and
    its pre-training loss. The features of every domain's items are non-persistent buffers: data, not
    weights, so they are not in the checkpoint."""

    def __init__(self, item_encoder: nn.Module, encoder: nn.Module, feats: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 domain_of_item: np.ndarray, offsets: np.ndarray, cfg: Any):
        super().__init__()
        self.item_encoder = item_encoder
        self.encoder = encoder
        self.names = list(feats)
        for m, (values, available) in feats.items():
            self.register_buffer(f"values_{m}", values, persistent=False)
            self.register_buffer(f"available_{m}", available, persistent=False)
        self.register_buffer("domain", torch.as_tensor(domain_of_item), persistent=False)
        self.offsets = [int(x) for x in offsets]
        self.cfg = cfg

    def tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (getattr(self, f"values_{m}"), getattr(self, f"available_{m}")) for m in self.names}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats, tau, offsets, dev = self.tables(), self.cfg.temperature, self.offsets, self.domain.device
        seqs, targets = batch["seqs"], batch["targets"]
        keep = targets >= 0
        tgt = targets[keep]
        uniq, inverse = torch.unique(tgt, return_inverse=True)
        if self.cfg.pretrain_loss == "inbatch":
            # only the batch's target items are needed: encode those and the inputs
            rows = torch.unique(torch.cat([uniq, seqs[seqs > 0] - 1]))
            fused_r, parts_r = self.item_encoder(feats, rows)
            local = torch.full((offsets[-1] + 1,), -1, dtype=torch.long, device=dev)
            local[rows] = torch.arange(len(rows), device=dev)
            tokens = nn.functional.pad(fused_r, (0, 0, 1, 0))
            x = tokens[torch.where(seqs > 0, local[(seqs - 1).clamp(min=0)] + 1, 0)]
            u = self.encoder(x, seqs, all_positions=True)[keep]
            cand = local[uniq]
            si = nn.functional.cross_entropy(cosine_logits(u, fused_r[cand], tau), inverse)
            parts_u = {m: v[cand] for m, v in parts_r.items()}
            it_tables = {m: (v[uniq], a[uniq]) for m, (v, a) in feats.items()}
            it = image_text_loss(parts_u, it_tables, torch.arange(len(uniq), device=dev), self.item_encoder.pair, tau)
        else:
            fused, parts = self.item_encoder(feats)
            tokens = nn.functional.pad(fused, (0, 0, 1, 0))
            u = self.encoder(tokens[seqs], seqs, all_positions=True)[keep]
            d_t = self.domain[tgt]
            si = u.new_zeros(())
            for d in torch.unique(d_t).tolist():
                sel = d_t == d
                lo, hi = offsets[d], offsets[d + 1]
                si = si + full_info_nce(u[sel], fused[lo:hi], tgt[sel] - lo, tau, reduction="sum")
            si = si / len(tgt)
            it = image_text_loss(parts, feats, uniq, self.item_encoder.pair, tau)
        loss = si + (self.cfg.it_weight * it if it is not None else 0.0)
        return {"loss": loss, "seq_item": si, "image_text": it if it is not None else si.new_zeros(())}


def pretrain_ant(domains: Sequence[tuple[str, Dataset, Split]], params: Any, train: TrainConfig, seed: int,
                 out: Path, *, request: dict[str, Any], resume: bool = False, device: str | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Pre-train ANT (settings ``params``, an ``ANT.Config``) on ``domains`` (``(data source, dataset,
    split)`` each) into ``out``; returns the metadata written to ``pretrain.json``.

    ``request`` (the invocation) is written to ``pretrain_request.json`` once the sources are checked;
    ``resume`` continues from the checkpoint in ``out``. The caller (:func:`prismrec.transfer.pretrain`)
    resolves the configuration, checks the directory and seeds the run."""
    names = [ds.name for _, ds, _ in domains]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    pools = [select_modalities(ds.modalities, ds.items, params, None) for _, ds, _ in domains]
    if params.modalities is None:
        wanted = sorted(set.intersection(*[set(p) for p in pools]))
        if not wanted:
            raise PrismrecError(
                "the source datasets share no feature modality: "
                + "; ".join(f"{n}: {', '.join(sorted(p)) or 'none'}" for n, p in zip(names, pools))
                + ". Fix: pick sources with a common modality, or list modalities with ant.modalities "
                "(a domain without one gets the learned 'missing' vector)."
            )
    else:
        wanted = list(params.modalities)
        absent = [m for m in wanted if not any(m in p for p in pools)]
        if absent:
            raise PrismrecError(f"no source dataset has modality {', '.join(absent)} (they have: "
                                + "; ".join(f"{n}: {', '.join(sorted(p))}" for n, p in zip(names, pools))
                                + "). Fix: change ant.modalities.")
    spaces = {n: {m: feature_space(p[m], params.feature_encoders) for m in wanted if m in p}
              for n, p in zip(names, pools)}
    common = check_same_spaces(spaces, what="prismrec pretrain")

    # one catalogue: the domains' items one after the other, their training windows shuffled together
    sizes = [ds.n_items for _, ds, _ in domains]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for m in wanted:
        dim = common[m]["dim"]
        vals, avail = [], []
        for (_, ds, _), p in zip(domains, pools):
            mod: Modality | None = p.get(m)
            vals.append(mod.values if mod is not None else np.zeros((ds.n_items, dim), np.float32))
            avail.append(mod.available if mod is not None else np.zeros(ds.n_items, bool))
        feats[m] = (torch.from_numpy(np.concatenate(vals)), torch.from_numpy(np.concatenate(avail)))
    indptrs, items, n_inter = [0], [], 0
    for (_, _, split), off in zip(domains, offsets[:-1]):
        ip, it = split.sequences(("train",))
        items.append(it + off)
        indptrs.append(ip[1:] + n_inter)
        n_inter += len(it)
    indptr = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in indptrs])
    all_items = np.concatenate(items).astype(np.int64)
    sampler = WindowSampler(indptr, all_items, params.max_len)

    dev = resolve_device(device or train.device)
    item_encoder, encoder = build_networks(params, {m: common[m]["dim"] for m in wanted})
    net = _Pretraining(item_encoder, encoder, feats, np.repeat(np.arange(len(sizes)), sizes), offsets, params).to(dev)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PRETRAIN_REQUEST, request)
    log.info("pre-training ANT on %s: %d items, %d training interactions, %d windows, modalities %s",
             ", ".join(names), int(offsets[-1]), len(all_items), len(sampler), ", ".join(wanted))
    # the reference (non-fused) Adam: pre-trained weights stay those of earlier releases bit for bit
    selection = lowest_training_loss(params.pretrain_patience, params.pretrain_min_delta)
    result = EpochLoop(net, sampler, train, seed, selection, run_dir=out, checkpoint=PRETRAIN_CHECKPOINT,
                       best=PRETRAIN_WEIGHTS, device=dev, progress=progress, fused_adam=False,
                       label="pretrain epoch", title="pre-training ANT").fit(resume)
    save_torch(out / PRETRAIN_WEIGHTS, {k: v.cpu() for k, v in net.state_dict().items()})
    history = result.history
    epoch_s = [h["train_s"] for h in history]
    meta = {
        "model": "ant",
        "params": params.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "modalities": common,
        "modalities_by_source": spaces,
        "sources": [{"name": n, "data_source": src, "users": ds.n_users, "items": ds.n_items,
                     "train_interactions": int((sp.labels == 0).sum())}
                    for n, (src, ds, sp) in zip(names, domains)],
        "seed": seed,
        "epochs_run": len(history),
        # converged: stopped by the loss plateau rule (pretrain_patience), not by the epoch cap
        "converged": bool(result.stopped_early),
        "best_epoch": result.best_epoch,
        "best_loss": result.best_score,
        "train_seconds": round(result.train_seconds, 3),
        "epoch_seconds": round(float(np.mean(epoch_s)), 4) if epoch_s else 0.0,
        "n_params": int(sum(p.numel() for p in net.parameters())),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": str(dev),
        "history": history,
    }
    write_json(out / PRETRAIN_META, meta)
    return meta
