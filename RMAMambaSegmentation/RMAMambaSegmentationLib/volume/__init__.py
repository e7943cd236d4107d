"""From a 3D image to a liver mask in patient space: orientation, intensities, inference, post-processing, I/O."""
