"""Sequential recommenders (next item from an ordered history). Importing registers them."""

from . import sasrec  # noqa: F401
