"""MRML side: write the liver mask into Slicer segmentation nodes (no Qt)."""
