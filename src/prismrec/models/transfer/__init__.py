"""Transferable (ID-free) recommenders: ANT and its MoE item encoder. Importing registers them."""

from . import ant  # noqa: F401
