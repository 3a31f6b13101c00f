"""Models. Importing this package registers every model with :data:`MODELS`."""

from .base import MODELS, ModelConfig, Recommender
from . import general, sequential  # noqa: E402,F401
from . import transfer  # noqa: E402,F401

__all__ = ["MODELS", "ModelConfig", "Recommender"]
