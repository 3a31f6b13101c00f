"""Placeholder: vbpr is being implemented."""
