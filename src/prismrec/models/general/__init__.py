"""General (non-sequential) top-K recommenders. Importing this package registers them."""

from . import alignrec, bm3, bpr, freedom, lattice, lgmrec, lightgcn, lirdrec, mentor, mgcn, pop, vbpr  # noqa: F401
