"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import torch

from ...data.training import TrainingData
from ..base import MODELS, ModelConfig, Recommender


@MODELS.register("pop", aliases=("itempop", "popularity"))
class Pop(Recommender):
    """Scores item ``i`` by its number of training interactions (no parameters, no training)."""

    trainable = False

    class Config(ModelConfig):
        pass

    def __init__(self, config: ModelConfig, data: TrainingData):
        super().__init__(config, data)
        self.register_buffer("popularity", torch.as_tensor(data.item_popularity(), dtype=torch.float32))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(users), -1).clone()
