"""Torch runtime: device choice, compiled forward, heap reuse (no files, no models)."""
