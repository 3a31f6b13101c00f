"""General (non-sequential) top-K recommenders. Importing this package registers them."""

from . import alignrec, bm3, bpr, freedom, lightgcn, lirdrec, pop, vbpr  # noqa: F401
