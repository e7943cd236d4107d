"""VMamba's four-direction cross scan of a 2D map into sequences, and the merge back (spec section 5.4)."""

from __future__ import annotations

import torch


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed."""
    row_major = x.flatten(2)
    column_major = x.transpose(2, 3).flatten(2)
    return torch.stack((row_major, column_major, row_major.flip(-1), column_major.flip(-1)), dim=1)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, H*W) -> (B, D, H*W) in row-major order, summed in the official grouping."""
    batch, _, channels, length = y.shape
    rows = y[:, 0] + y[:, 2].flip(-1)
    columns = y[:, 1] + y[:, 3].flip(-1)
    columns = columns.view(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)
    return rows + columns
