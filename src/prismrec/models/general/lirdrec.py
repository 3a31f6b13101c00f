"""Placeholder: lirdrec is being implemented."""
