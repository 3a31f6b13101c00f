"""Placeholder: alignrec is being implemented."""
