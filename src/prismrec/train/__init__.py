"""Training: batch sampling, the Trainer of a run and ANT's pre-training (both fitted by ``utils.loop.EpochLoop``)."""
