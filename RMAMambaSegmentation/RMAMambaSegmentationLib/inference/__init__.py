"""From an image to a liver mask: run options, scan checks, 2D slices and 3D windows, the verdict."""
