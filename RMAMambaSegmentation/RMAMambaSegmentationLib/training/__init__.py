"""Training and evaluation with the paper protocol: datasets, augmentation, trainer, metrics."""
