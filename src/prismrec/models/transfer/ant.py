"""ANT: ID-free multimodal sequential recommender built for transfer (pre-train, then adapt).

Peng, Parthasarathy & Ning, "Multi-modality Meets Re-learning: Mitigating Negative Transfer in
Sequential Recommendation", arXiv 2309.10195 (official code: ninglab/ANT). An item is its frozen
text / image / price features through per-modality MoE adaptors, fused
(:class:`~prismrec.models.transfer.modules.ItemEncoder`); a SASRec-style causal transformer (post-LN,
FFN inner size = hidden size, dropout 0.5) encodes the history; scores are cosine similarities
divided by a temperature, trained with full-softmax cross-entropy over the domain's items.

Transfer. ``pretrained: DIR`` (written by ``prismrec pretrain``) plus ``strategy``:

* ``scratch``: the pre-trained architecture, randomly initialised (the negative-transfer reference);
* ``finetune``: every pre-trained weight loaded, everything trained;
* ``adaptor``: loaded; transformer blocks and position embedding frozen, adaptors (and input norm)
  trained (UniSRec's parameter-efficient fine-tuning);
* ``relearn``: ANT's re-learning as its ``finetune.py`` does it by default: transformer blocks loaded
  and frozen; position embedding re-initialised N(0, 0.02) and trained; every expert re-initialised
  (xavier-normal, whitening biases 0, the price experts' output bias kept), gates zeroed; input
  layer norm loaded and trained.

Feature spaces. A pre-trained adaptor only means something on features from the same encoder:
every modality of the target must have the encoder and dimension recorded in the checkpoint
(:func:`check_same_spaces`); an unrecorded encoder must be declared (``feature_encoders``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ...data.dataset import Modality
from ...data.training import TrainingData
from ...errors import PrismrecError
from ..base import MODELS, Batch
from ..contrastive import full_info_nce
from ..layers import FeatureTable
from ..sequential.base import SequentialConfig, SequentialRecommender
from ..sequential.layers import CausalTransformer
from .modules import ItemEncoder, price_modality

PRETRAIN_META = "pretrain.json"
PRETRAIN_WEIGHTS = "model.pt"
#: settings that define the network's shapes: taken from the checkpoint when adapting
ARCH_KEYS = ("embedding_size", "max_len", "n_layers", "n_heads", "n_experts", "price_encoder", "price_dim",
             "price_buckets", "fusion_pair")
STRATEGIES = ("scratch", "finetune", "adaptor", "relearn")
UNKNOWN = "unknown"


# ------------------------------------------------------------------------------- feature spaces
def select_modalities(available: dict[str, Modality], items: Any, cfg: ANT.Config,
                      wanted: list[str] | None) -> dict[str, Modality]:
    """The modalities the model uses, with the price feature built from ``items.price`` when asked."""
    pool = dict(available)
    # a price feature file (e.g. from prismrec features) wins; otherwise encode items.price here
    price = None if "price" in pool else price_modality(items, cfg.price_encoder, cfg.price_dim, cfg.price_buckets)
    if price is not None:
        pool["price"] = price
    if wanted is None:
        return pool
    missing = [m for m in wanted if m not in pool]
    if missing:
        raise PrismrecError(
            f"ANT was asked for modalities {', '.join(missing)}, which this dataset does not have "
            f"(it has: {', '.join(sorted(pool)) or 'none'}). Fix: set ant.modalities to a subset of those "
            "(price needs an items.price column and ant.price_encoder other than none)."
        )
    return {m: pool[m] for m in wanted}


def feature_space(mod: Modality, declared: dict[str, str]) -> dict[str, Any]:
    """``{"encoder", "dim", "declared"}`` of a modality: the recorded encoder, else the declared one."""
    enc = str(mod.provenance.get("encoder") or UNKNOWN)
    if enc == UNKNOWN and mod.name in declared:
        return {"encoder": declared[mod.name], "dim": mod.dim, "declared": True}
    return {"encoder": enc, "dim": mod.dim, "declared": False}


def check_same_spaces(spaces: dict[str, dict[str, dict[str, Any]]], what: str = "pre-training") -> dict[str, dict]:
    """``spaces[dataset][modality]`` -> the common space per modality, or a one-paragraph error.

    Refused: a modality whose encoder or dimension differs between datasets, and a modality whose
    encoder a dataset does not record (it cannot be checked) unless declared with ``feature_encoders``.
    A modality that only one dataset has mixes nothing: it needs no recorded encoder (pre-training on a
    single dataset, or a modality only one source has); adapting it to another dataset is checked then.
    """
    names = sorted({m for sp in spaces.values() for m in sp})
    common: dict[str, dict] = {}
    for m in names:
        have = {ds: sp[m] for ds, sp in spaces.items() if m in sp}
        unknown = [ds for ds, s in have.items() if s["encoder"] == UNKNOWN]
        if unknown and len(have) > 1:
            raise PrismrecError(
                f"{what} refuses to mix feature spaces it cannot check: modality '{m}' of "
                f"{', '.join(unknown)} records no encoder (no features.json entry), so it is unknown whether it "
                f"is the same space as in {', '.join(d for d in have if d not in unknown) or 'the other datasets'}. "
                f"Fix: record the encoder in the dataset's features.json ({{\"{m}\": {{\"encoder\": NAME}}}}), or, "
                f"if you know every dataset's '{m}' comes from the same encoder, declare it with "
                f"--encoder {m}=NAME (ant.feature_encoders.{m}=NAME); or leave '{m}' out with ant.modalities."
            )
        kinds = {(s["encoder"], s["dim"]) for s in have.values()}
        if len(kinds) > 1:
            listing = "; ".join(f"{ds}: {s['encoder']} ({s['dim']}-d)" for ds, s in have.items())
            raise PrismrecError(
                f"{what} refuses to mix feature spaces: modality '{m}' comes from different encoders or dimensions "
                f"({listing}). An adaptor learned on one space is meaningless on another, so nothing was trained. "
                f"Fix: re-extract '{m}' for every dataset with one encoder (prismrec features), or leave '{m}' out "
                f"with --set ant.modalities=[...] listing only the modalities that share an encoder."
            )
        common[m] = next(iter(have.values()))
    return common


def read_pretrained(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, state dict) of a ``prismrec pretrain`` directory."""
    p = Path(path)
    if not (p / PRETRAIN_META).is_file() or not (p / PRETRAIN_WEIGHTS).is_file():
        raise PrismrecError(f"{p} is not a pre-trained ANT directory (it needs {PRETRAIN_META} and {PRETRAIN_WEIGHTS}). "
                            "Fix: pass the --out directory of a finished `prismrec pretrain`.")
    meta = json.loads((p / PRETRAIN_META).read_text())
    state = torch.load(p / PRETRAIN_WEIGHTS, map_location="cpu", weights_only=True)
    return meta, state


def build_networks(cfg: ANT.Config, dims: dict[str, int]) -> tuple[ItemEncoder, CausalTransformer]:
    """ANT's item encoder and sequence encoder, initialised as the official code (N(0, 0.02) for every
    linear layer, the attention's query/key/value projection included, biases 0, layer norms 1/0)."""
    items = ItemEncoder(dims, cfg.embedding_size, cfg.n_experts, cfg.adaptor_dropout, cfg.fusion_beta,
                        tuple(cfg.fusion_pair), cfg.expert_dropout)
    enc = CausalTransformer(cfg.embedding_size, cfg.max_len, cfg.n_layers, cfg.n_heads, cfg.dropout, ff_mult=1,
                            init="normal")
    return items, enc


def frozen_prefixes(strategy: str) -> tuple[str, ...]:
    """Parameter-name prefixes that a strategy freezes."""
    if strategy == "adaptor":
        return ("encoder.layers.", "encoder.position.")
    if strategy == "relearn":
        return ("encoder.layers.",)
    return ()


def cosine_logits(u: torch.Tensor, items: torch.Tensor, tau: float) -> torch.Tensor:
    return nn.functional.normalize(u, dim=-1) @ nn.functional.normalize(items, dim=-1).T / tau


def image_text_loss(parts: dict[str, torch.Tensor], tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
                    items: torch.Tensor, pair: tuple[str, str] | None, tau: float) -> torch.Tensor | None:
    """ANT's one-directional image -> text InfoNCE over the (unique) batch target items having both."""
    if pair is None:
        return None
    img, txt = pair
    both = tables[img][1][items] & tables[txt][1][items]
    items = items[both]
    if len(items) < 2:
        return None
    logits = cosine_logits(parts[img][items], parts[txt][items], tau)
    return nn.functional.cross_entropy(logits, torch.arange(len(items), device=logits.device))


# ------------------------------------------------------------------------------------------- model
@MODELS.register("ant")
class ANT(SequentialRecommender):
    """ANT: ID-free items from text/image/price through MoE adaptors; transfer via prismrec pretrain/adapt."""

    class Config(SequentialConfig):
        embedding_size: int = Field(64, ge=1, description="d (the paper uses 256)")
        n_layers: int = Field(2, ge=1)
        n_heads: int = Field(2, ge=1)
        dropout: float = Field(0.5, ge=0, lt=1, description="transformer dropout (ANT: 0.5)")
        n_experts: int = Field(8, ge=1, description="experts per modality adaptor")
        adaptor_dropout: float = Field(0.2, ge=0, lt=1)
        expert_dropout: Literal["shared", "per_expert"] = Field(
            "shared", description="one dropout mask for all experts of an item (ours), or one per expert (ANT's code)")
        temperature: float = Field(0.07, gt=0, description="tau of the cosine logits")
        fusion_beta: float = Field(0.1, description="weight of the image x text product in the fusion")
        fusion_pair: list[str] = Field(default_factory=lambda: ["image", "text"],
                                       description="the two modalities of the product term and the alignment loss")
        modalities: list[str] | None = Field(None, description="modalities to use (default: all the data has; "
                                                               "when adapting, the pre-trained ones)")
        price_encoder: Literal["sinusoidal", "bucket", "none"] = Field(
            "sinusoidal", description="price feature from items.price: sin/cos of log1p(price), or quantile bucket one-hot")
        price_dim: int = Field(64, ge=2, description="dimension of the sinusoidal price feature")
        price_buckets: int = Field(16, ge=2, description="quantile buckets of the bucket price feature")
        it_weight: float = Field(1e-3, ge=0, description="weight of the image->text contrastive term (pre-training)")
        pretrain_loss: Literal["inbatch", "full"] = Field(
            "inbatch", description="pre-training softmax: in-batch targets of all domains (ANT) or all items of the domain")
        feature_encoders: dict[str, str] = Field(
            default_factory=dict, description="declared encoder per modality for data whose provenance records none")
        pretrain_patience: int | None = Field(
            None, ge=1, description="pre-training stops once the mean training loss has not fallen by more than "
                                    "pretrain_min_delta for this many epochs (None: run every epoch, ANT's rule)")
        pretrain_min_delta: float = Field(0.0, ge=0, description="the fall of the training loss that counts as progress")
        pretrained: str | None = Field(None, description="directory written by prismrec pretrain")
        strategy: Literal["scratch", "finetune", "adaptor", "relearn"] = Field(
            "scratch", description="how the pre-trained model is adapted")

    min_modalities = 0
    causal = True
    defaults = {
        "data": {"default_split": "loo", "dedup": "none"},
        "train": {"valid_metric": "recall@10", "topk": [5, 10, 20, 50], "mask_valid_in_test": True,
                  "batch_size": 256, "lr_scheduler": [0.99, 1]},
    }

    def __init__(self, config: ANT.Config, data: TrainingData):
        super().__init__(config, data)
        meta, state = (read_pretrained(config.pretrained) if config.pretrained else (None, None))
        wanted = config.modalities
        if wanted is None and meta is not None:
            wanted = sorted(meta["modalities"])
        mods = select_modalities(data.modalities, data.items, config, wanted)
        if not mods:
            raise PrismrecError(
                f"ANT represents items only by their features, and dataset '{data.name}' has no feature modality "
                "(no *_feat.npy and no items.price). Fix: extract features (prismrec features) or use sasrec."
            )
        self.spaces = {m: feature_space(mod, config.feature_encoders) for m, mod in mods.items()}
        self.features = nn.ModuleDict({m: FeatureTable(mod) for m, mod in mods.items()})
        self.item_encoder, self.encoder = build_networks(config, {m: mod.dim for m, mod in mods.items()})
        self.strategy = config.strategy
        self.new_modalities: list[str] = []
        self.loaded: list[str] = []
        if meta is not None:
            self._from_pretrained(meta, state, data.name)

    # transfer ----------------------------------------------------------------------------------------
    def _from_pretrained(self, meta: dict[str, Any], state: dict[str, torch.Tensor], target: str) -> None:
        cfg = self.config
        arch = meta["params"]
        diff = [k for k in ARCH_KEYS if k in arch and arch[k] != getattr(cfg, k)]
        if diff:
            raise PrismrecError(
                f"the ANT settings {', '.join(f'{k}={getattr(cfg, k)!r}' for k in diff)} differ from the pre-trained "
                f"model's ({', '.join(f'{k}={arch[k]!r}' for k in diff)}) in {cfg.pretrained}. Fix: drop those "
                "--set overrides (prismrec adapt takes them from the checkpoint)."
            )
        pre = {m: s for m, s in meta["modalities"].items() if m in self.spaces}
        sources = ", ".join(s["name"] for s in meta.get("sources", [])) or "the pre-training data"
        check_same_spaces({f"pre-training ({sources})": pre, f"target {target}": {m: self.spaces[m] for m in pre}},
                          what="adaptation")
        self.new_modalities = sorted(set(self.spaces) - set(meta["modalities"]))
        if self.strategy == "scratch":
            return
        own = self.state_dict()
        take = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(take, strict=False)
        self.loaded = sorted(take)
        if self.strategy == "relearn":
            with torch.no_grad():
                nn.init.normal_(self.encoder.position.weight, std=0.02)
            for ad in self.item_encoder.adaptors.values():
                ad.reset("xavier", keep_output_bias=True)
            self.item_encoder.reset_missing()
        for name, p in self.named_parameters():
            if name.startswith(frozen_prefixes(self.strategy)):
                p.requires_grad_(False)

    def extra_info(self) -> dict[str, Any]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        info: dict[str, Any] = {"strategy": self.strategy if self.config.pretrained else "scratch (no pre-training)",
                                "modalities": self.spaces, "trainable_params": trainable, "frozen_params": frozen}
        if self.config.pretrained:
            info["pretrained"] = str(self.config.pretrained)
            info["new_modalities"] = self.new_modalities
        return info

    # encoders ---------------------------------------------------------------------------------------
    def tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (t.values, t.available) for m, t in self.features.items()}

    def _token_parts(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        held = getattr(self, "_held_parts", None)  # one scoring pass: computed once in prepare_scoring
        if held is not None and not self.training and not torch.is_grad_enabled():
            return held
        fused, parts = self.item_encoder(self.tables())
        pad = lambda t: nn.functional.pad(t, (0, 0, 1, 0))  # noqa: E731  row 0 = padding token
        return fused, {k: pad(v) for k, v in self.item_encoder.fuse(parts).items()}

    @torch.no_grad()
    def prepare_scoring(self, history=None) -> None:
        """The base's, with the item encoder's output held for the whole pass (every group of users
        encoded by ``score`` reads it)."""
        self._held_parts = None
        self._held_parts = self._token_parts()
        super().prepare_scoring(history)

    def clear_scoring(self) -> None:
        super().clear_scoring()
        self._held_parts = None

    def input_parts(self, seqs: torch.Tensor) -> dict[str, torch.Tensor]:
        _, parts = self._token_parts()
        return {k: v[seqs] for k, v in parts.items()}

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        h = self.encoder(x, seqs, all_positions=all_positions)
        return nn.functional.normalize(h, dim=-1) / self.config.temperature

    def item_embeddings(self) -> torch.Tensor:
        fused, _ = self.item_encoder(self.tables())
        return nn.functional.normalize(fused, dim=-1)

    def loss(self, batch: Batch) -> torch.Tensor:
        """ANT's adaptation objective: full-softmax InfoNCE (cosine / tau) over all the domain's items."""
        fused, parts = self.item_encoder(self.tables())
        tokens = nn.functional.pad(fused, (0, 0, 1, 0))
        seqs, targets = batch["seqs"], batch["targets"]
        if targets.dim() == 1:
            u = self.encoder(tokens[seqs], seqs)
        else:
            keep = targets >= 0
            u = self.encoder(tokens[seqs], seqs, all_positions=True)[keep]
            targets = targets[keep]
        return full_info_nce(u, fused, targets, self.config.temperature)  # the (n, items) logits in bounded blocks

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {}


#: the settings of ANT (``ANT.Config``), also read by ``prismrec pretrain``
ANTConfig = ANT.Config


def trainable_summary(model: nn.Module) -> dict[str, bool]:
    """``{parameter name: requires_grad}`` (tests and docs)."""
    return {n: p.requires_grad for n, p in model.named_parameters()}


def domain_offsets(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
