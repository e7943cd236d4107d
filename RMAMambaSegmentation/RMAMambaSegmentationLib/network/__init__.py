"""The model family: RMA-Mamba-T/-S, SRMA-Mamba (3D) and the U-Net baseline; ``build.build_model`` builds any."""
