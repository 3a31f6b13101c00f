"""GRU4Rec on item ids (``gru4rec``) or on ids plus projected item features (``gru4recf``).

Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016, in the form
the multimodal sequential papers compare against (RecBole's GRU4Rec): item embeddings -> dropout ->
GRU -> a linear map back to the embedding size; the next-item logits are dot products with the
(shared) item embeddings, trained with full-softmax cross-entropy (the paper's session-parallel
mini-batches and ranking losses are replaced by this protocol, as in RecBole, so every sequential
model here is trained and evaluated the same way).

Sequences arrive left-padded; they are right-aligned and packed before the GRU, so padding never
enters the recurrent state. The GRU is causal, so windows train every prefix in one pass.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...data.training import TrainingData
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS
from .base import PAD, SequentialConfig, SequentialRecommender
from .layers import ItemTokens


@MODELS.register("gru4rec")
class GRU4Rec(SequentialRecommender):
    """Recurrent next-item model on item ids."""

    #: RecBole grid not confirmed (docs/models/gru4rec.md): our space around the RecBole defaults
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "n_layers": IntRange(1, 2),
                                    "dropout": FloatRange(0.1, 0.5)}

    class Config(SequentialConfig):
        hidden_size: int = Field(128, ge=1, description="GRU state size (RecBole default 128)")
        n_layers: int = Field(1, ge=1)
        dropout: float = Field(0.3, ge=0, lt=1, description="dropout on the input embeddings (RecBole 0.3)")

    causal = True
    use_features = False

    def __init__(self, config: GRU4Rec.Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.tokens = ItemTokens(self.n_items, d, data.modalities if self.use_features else None,
                                 use_ids=config.use_ids if self.use_features else True, init="xavier")
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, config.hidden_size, config.n_layers, batch_first=True)
        self.dense = nn.Linear(config.hidden_size, d)

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        B, L, _ = x.shape
        n = (seqs != PAD).sum(1)
        shift = (L - n)[:, None]
        idx = (torch.arange(L, device=x.device)[None] + shift) % L           # right-align
        x_right = x.gather(1, idx[..., None].expand_as(x))
        packed = pack_padded_sequence(self.dropout(x_right), n.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)
        out = self.dense(out)
        if not all_positions:
            return out[torch.arange(B, device=x.device), (n - 1).clamp(min=0)]
        back = (torch.arange(L, device=x.device)[None] - shift) % L          # back to left padding
        out = out.gather(1, back[..., None].expand(-1, -1, out.shape[-1]))
        return out * (seqs != PAD)[..., None]


@MODELS.register("gru4recf", aliases=("gru4rec_f", "gru4rec_features"))
class GRU4RecF(GRU4Rec):
    """GRU4Rec whose item embeddings add projected item features (any number of modalities)."""

    class Config(GRU4Rec.Config):
        use_ids: bool = Field(True, description="add item ID embeddings to the projected features")

    use_features = True
    min_modalities = 1
