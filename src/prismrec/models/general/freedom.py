"""Placeholder: freedom is being implemented."""
