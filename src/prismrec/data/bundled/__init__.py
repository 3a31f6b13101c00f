"""Datasets shipped with prismrec (see each folder's ATTRIBUTION.md)."""
