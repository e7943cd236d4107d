"""Array steps shared by training and inference: orientation, intensity, resize, validation, post-processing."""
