"""Exceptions raised by the library: each says what went wrong and what to do."""

from __future__ import annotations


class RMAMambaError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidImageError(RMAMambaError, ValueError):
    """The input image cannot be segmented (wrong dimension, pixel type, values or size)."""


class CheckpointError(RMAMambaError):
    """A weights file is missing, unreadable, or not an RMA-Mamba checkpoint."""


class VariantMismatchError(CheckpointError):
    """The checkpoint holds weights of another variant than the one asked for (e.g. T weights for S)."""


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """No weights file was given and no default weights are installed."""


class SegmentationCancelledError(RMAMambaError):
    """The caller's cancel check asked to stop; nothing was produced."""


class InputFileError(RMAMambaError, OSError):
    """An input file or folder is missing or cannot be read as a medical image."""


class WorkerStoppedError(RMAMambaError, RuntimeError):
    """The segmentation worker process stopped before answering (killed for memory, a CUDA error, a crash);
    nothing was changed, and the next run starts a fresh worker."""
