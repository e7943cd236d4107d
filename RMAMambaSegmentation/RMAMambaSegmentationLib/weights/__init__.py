"""Weights: where the shipped files are, file sniffing, model cards, checkpoints, prepared models, the cache."""
