"""Graph construction and sparse propagation (kNN item graphs, normalised user-item graphs), once."""

from .sparse import SparseOperator, bipartite_adjacency, normalized_bipartite, propagate, sym_normalize, to_torch_csr

__all__ = ["SparseOperator", "bipartite_adjacency", "normalized_bipartite", "propagate", "sym_normalize",
           "to_torch_csr"]
