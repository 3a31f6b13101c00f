"""Placeholder: bm3 is being implemented."""
