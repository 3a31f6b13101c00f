"""SASRec, on item ids (``sasrec``) or on ids plus projected item features (``sasrecf``).

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. The sequence encoder is
:class:`~prismrec.models.sequential.layers.CausalTransformer`; the next-item logits are the dot
products of the last position's output with the item embeddings (shared input/output embeddings,
Sec. III-D), trained with full-softmax cross-entropy over all items on every training prefix (the
UniSRec/RecBole protocol) instead of the paper's one sampled negative per position.

``sasrecf`` (SASRec with item features, the usual "+ text/image" baseline of the multimodal
sequential papers): an item's embedding is its ID embedding plus, for each modality, a linear
projection of its frozen feature (a learned "missing" vector where the feature is missing); with
``use_ids: false`` the items are represented by their features alone.

UniSRec-style text-first variant (issue 16): ``feature_encoder: moe`` replaces each modality's linear
projection by the whitening mixture-of-experts adaptor of UniSRec/ANT (:mod:`prismrec.models.moe`, the
layer ANT uses), and ``scoring: cosine`` scores ``cos(u, e_i) / temperature`` as UniSRec and ANT do;
with ``use_ids`` the ID embedding is added (UniSRec's transductive setting), without it the model is
inductive (unseen items scored from their features).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS
from .base import SequentialConfig, SequentialRecommender
from .layers import CausalTransformer, ItemTokens


@MODELS.register("sasrec")
class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation on item ids."""

    #: RecBole/UniSRec grids not confirmed (docs/models/sasrec.md): our space around the RecBole defaults
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "n_layers": IntRange(1, 3),
                                    "dropout": FloatRange(0.1, 0.5)}

    class Config(SequentialConfig):
        n_layers: int = Field(2, ge=1)
        n_heads: int = Field(2, ge=1)
        dropout: float = Field(0.2, ge=0, lt=1)
        positions: Literal["from_end", "from_start"] = Field(
            "from_end", description="position embeddings counted from the latest item (the paper's left-padded "
                                    "slots) or from the oldest visible item (RecBole's; window training then "
                                    "equals prefix training)")
        ff_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of embedding_size "
                                                  "(SASRec/RecBole: 4, i.e. 256 at width 64; ANT: 1)")
        init: Literal["torch", "normal"] = Field(
            "torch", description="transformer initialisation: torch's defaults, or RecBole's N(0, 0.02) for every "
                                 "linear layer (SASRec's RecBole code, UniSRec, ANT)")

    use_features = False

    def __init__(self, config: SASRec.Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        if self.use_features:
            self.tokens = ItemTokens(self.n_items, d, data.modalities, use_ids=config.use_ids,
                                     feature_encoder=config.feature_encoder, n_experts=config.n_experts,
                                     adaptor_dropout=config.adaptor_dropout, expert_dropout=config.expert_dropout)
        else:
            self.tokens = ItemTokens(self.n_items, d, None)
        self.encoder = CausalTransformer(d, config.max_len, config.n_layers, config.n_heads, config.dropout,
                                         ff_mult=config.ff_mult, positions=config.positions, init=config.init)

    causal = True

    @property
    def item_embedding(self) -> nn.Embedding:
        return self.tokens.embedding

    def token_embeddings(self) -> torch.Tensor:
        """Embeddings of all tokens ``(n_items + 1, d)``: row 0 is padding, row i+1 item i."""
        return self.tokens.table()

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        return self.encoder(x, seqs, all_positions=all_positions)


@MODELS.register("sasrecf", aliases=("sasrec_f", "sasrec_features"))
class SASRecF(SASRec):
    """SASRec whose item embeddings add projected item features (any number of modalities)."""

    #: SASRec's space plus the MoE item encoder's adaptor dropout (UniSRec/ANT: 0.2; only read with
    #: ``feature_encoder: moe``); sources in docs/models/sasrec.md
    search_space: ClassVar[dict] = {**SASRec.search_space, "adaptor_dropout": FloatRange(0.1, 0.5)}
    #: a key searched only when a setting has one of these values (``prismrec tune`` drops it otherwise)
    search_space_when: ClassVar[dict] = {"adaptor_dropout": ("feature_encoder", ("moe",))}

    class Config(SASRec.Config):
        use_ids: bool = Field(True, description="add item ID embeddings to the projected features "
                                                "(with feature_encoder: moe, UniSRec's transductive variant)")
        feature_encoder: Literal["linear", "moe"] = Field(
            "linear", description="per modality: a linear projection, or UniSRec's/ANT's whitening "
                                  "mixture-of-experts adaptor (models/moe.py)")
        n_experts: int = Field(8, ge=1, description="experts per modality (feature_encoder: moe; UniSRec/ANT: 8)")
        adaptor_dropout: float = Field(0.2, ge=0, lt=1, description="dropout on the features entering the experts "
                                                                    "(feature_encoder: moe; UniSRec/ANT: 0.2)")
        expert_dropout: Literal["shared", "per_expert"] = Field(
            "shared", description="feature_encoder: moe: one dropout mask for all experts of an item (ours), or one "
                                  "per expert (UniSRec's and ANT's code)")
        scoring: Literal["dot", "cosine"] = Field(
            "dot", description="logits: dot product (SASRec), or cosine / temperature (UniSRec, ANT)")
        temperature: float = Field(0.07, gt=0, description="tau of scoring: cosine (UniSRec/ANT: 0.07)")

    use_features = True
    min_modalities = 1

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        h = super().encode_inputs(x, seqs, all_positions=all_positions)
        if self.config.scoring == "cosine":
            return nn.functional.normalize(h, dim=-1) / self.config.temperature
        return h

    def item_embeddings(self) -> torch.Tensor:
        items = super().item_embeddings()
        return nn.functional.normalize(items, dim=-1) if self.config.scoring == "cosine" else items
