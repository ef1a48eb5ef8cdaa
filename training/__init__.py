"""TokenRelay training: labeling with the large model, datasets, the Lightning selector module."""
