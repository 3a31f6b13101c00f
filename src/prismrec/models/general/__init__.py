"""General (non-sequential) top-K recommenders. Importing this package registers them."""

from . import bpr, lightgcn, pop  # noqa: F401
