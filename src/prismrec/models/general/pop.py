"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import torch

from ...data.training import TrainingData
from ..base import MODELS, DotProductRecommender, ModelConfig


@MODELS.register("pop", aliases=("itempop", "popularity"))
class Pop(DotProductRecommender):
    """Scores item ``i`` by its number of training interactions (no parameters, no training)."""

    trainable = False

    search_space = {}  # nothing to tune

    class Config(ModelConfig):
        pass

    def __init__(self, config: ModelConfig, data: TrainingData):
        super().__init__(config, data)
        self.register_buffer("popularity", torch.as_tensor(data.item_popularity(), dtype=torch.float32))

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user is the vector ``[1]``, every item its popularity ``[n_i]``."""
        return self.popularity.new_ones(self.n_users, 1), self.popularity.unsqueeze(1)
