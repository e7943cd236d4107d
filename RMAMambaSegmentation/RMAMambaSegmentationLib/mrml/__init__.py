"""MRML side (no Qt): validate volume nodes, start runs, write the liver mask into Slicer segmentation nodes."""
