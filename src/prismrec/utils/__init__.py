"""Small helpers shared by every layer: atomic files, seeds, devices, timing and memory."""
