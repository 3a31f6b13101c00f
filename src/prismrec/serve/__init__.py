"""The REST service: serving bundles behind FastAPI."""
