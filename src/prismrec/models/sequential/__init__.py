"""Sequential recommenders (next item from an ordered history). Importing registers them."""

from . import gru4rec, sasrec  # noqa: F401
