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
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ..base import MODELS
from ..layers import ModalityProjections
from .base import SequentialConfig, SequentialRecommender
from .layers import CausalTransformer


class SASRecConfig(SequentialConfig):
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)


@MODELS.register("sasrec")
class SASRec(SequentialRecommender):
    """Self-attentive sequential recommendation on item ids."""

    Config = SASRecConfig
    use_features = False

    class _Feat(SASRecConfig):
        use_ids: bool = Field(True, description="add item ID embeddings to the projected features")

    def __init__(self, config: SASRecConfig, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.item_embedding = nn.Embedding(self.n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.features = ModalityProjections(data.modalities, d) if self.use_features else None
        if self.features is not None and not getattr(config, "use_ids", True):
            self.item_embedding.weight.requires_grad_(False)
            with torch.no_grad():
                self.item_embedding.weight.zero_()
        self.encoder = CausalTransformer(d, config.max_len, config.n_layers, config.n_heads, config.dropout)

    def _feature_tokens(self) -> dict[str, torch.Tensor]:
        """Projected features of all tokens per modality ``(n_items + 1, d)`` (row 0, padding, is zero)."""
        out = {}
        for name in self.features.names if self.features is not None else ():
            f = self.features(name)
            out[name] = torch.cat([torch.zeros_like(f[:1]), f], dim=0)
        return out

    def token_embeddings(self) -> torch.Tensor:
        """Embeddings of all tokens ``(n_items + 1, d)``: row 0 is padding, row i+1 item i."""
        e = self.item_embedding.weight
        for f in self._feature_tokens().values():
            e = e + f
        return e

    causal = True

    def input_parts(self, seqs: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = {name: f[seqs] for name, f in self._feature_tokens().items()}
        if self.item_embedding.weight.requires_grad or self.features is None:
            parts["id"] = self.item_embedding(seqs)
        return parts

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        return self.encoder(x, seqs, all_positions=all_positions)

    def item_embeddings(self) -> torch.Tensor:
        return self.token_embeddings()[1:]

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        if self.features is None or not self.item_embedding.weight.requires_grad:
            return {}
        return {"id": [self.item_embedding.weight], "feature": self.features.projection_parameters()}


@MODELS.register("sasrecf", aliases=("sasrec_f", "sasrec_features"))
class SASRecF(SASRec):
    """SASRec whose item embeddings add projected item features (any number of modalities)."""

    Config = SASRec._Feat
    use_features = True
    min_modalities = 1
