"""Training: batch sampling and the Trainer (early stopping on validation, checkpoints, resume)."""
