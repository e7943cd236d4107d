"""Slices to network input and network output back to slice size, as the official training does.

The official pipeline reads 8-bit 3-channel PNGs, resizes them with OpenCV's bilinear interpolation (half-pixel
centres, no antialiasing) to 256x256 and divides by 255. Here the same geometry is done with
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, on slices already in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from RMAMambaSegmentationLib.registry import NETWORK_INPUT_SIZE  # the 2D members' slice size (torch-free registry)


def resize_slices(
    stack01: np.ndarray | torch.Tensor,
    size: Sequence[int] = NETWORK_INPUT_SIZE,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(N, rows, cols)`` (or one ``(rows, cols)``) slices in [0, 1] -> float32 ``(N, H, W)``, bilinear."""
    tensor = torch.as_tensor(np.ascontiguousarray(stack01) if isinstance(stack01, np.ndarray) else stack01)
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise ValueError(f"slices must be (N, rows, cols), got shape {tuple(tensor.shape)}")
    tensor = tensor.to(device=device, dtype=torch.float32)[:, None]
    height, width = (int(s) for s in size)
    if tuple(tensor.shape[-2:]) != (height, width):
        tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    return tensor[:, 0]


def slices_to_network_input(
    stack01: np.ndarray | torch.Tensor,
    size: Sequence[int] = NETWORK_INPUT_SIZE,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(N, rows, cols)`` slices in [0, 1] -> float32 tensor ``(N, 3, H, W)`` (3 identical channels)."""
    return resize_slices(stack01, size, device=device)[:, None].expand(-1, 3, -1, -1).contiguous()


def context_network_input(
    stack01: np.ndarray | torch.Tensor,
    size: Sequence[int] = NETWORK_INPUT_SIZE,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(N + 2, rows, cols)`` consecutive slices in [0, 1] -> ``(N, 3, H, W)``: for each of the N inner slices the
    channels (previous slice, slice, next slice), as a model with ``context_slices`` 1 was trained."""
    if stack01.ndim != 3 or stack01.shape[0] < 3:
        raise ValueError(f"context input needs (N + 2, rows, cols) slices with N >= 1, got {tuple(stack01.shape)}")
    single = resize_slices(stack01, size, device=device)
    return torch.stack([single[:-2], single[1:-1], single[2:]], dim=1)


def resize_logits_back(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Network logits ``(N, 1, h, w)`` -> ``(N, 1, rows, cols)`` bilinearly (before any threshold)."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, 1, h, w), got shape {tuple(logits.shape)}")
    rows, cols = (int(s) for s in size)
    if tuple(logits.shape[-2:]) == (rows, cols):
        return logits
    return F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False)
