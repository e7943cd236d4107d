"""The paper's augmentation in plain torch, on whole batches (CPU or GPU): rotation, flips, coarse dropout.

Defaults follow the official scripts (albumentations 1.3.0): each transform is applied independently with
probability 0.3; rotation by an angle uniform in [-35, 35] degrees (bilinear for the image, nearest for the
target, mirrored border); horizontal and vertical flips; coarse dropout of exactly 10 holes of 32x32 pixels
(at 256x256; scaled with the input size) set to 0 in the image only. Differences from the official pipeline:
the transforms act on the network-size slices rather than before resizing, and the mirrored border repeats the
edge pixel (torch's ``reflection`` padding) where OpenCV's reflect-101 does not.

Two optional transforms that are not in the paper are off by default: a random gamma on the [0, 1] image
(``gamma_p``; MR contrast between liver and the rest varies with scanner and patient, and percentile
normalisation alone leaves some livers much darker than others) and a random zoom about the centre
(``scale_p``; body size and field of view vary), drawn only when enabled so that the paper's defaults keep
their random stream.
A third optional transform, also off by default, is a smooth multiplicative shading (``shading_p``): MR receive
coils leave a slowly varying gain across the field of view (bias field), so the same tissue can be darker on one
side of the body than on the other. The gain is the exponential of a random 4x4 grid of log-factors, uniform in
[-log S, log S], upsampled bicubically to the image and kept within those bounds; the target is unchanged.
All random draws come from the caller's ``torch.Generator`` on the CPU, so a seed fixes them on any device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

_SHADING_GRID = 4  # control points per side of the shading field


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and sizes of the augmentation; ``enabled=False`` turns it off."""

    rotate_p: float = 0.3
    max_angle_deg: float = 35.0
    hflip_p: float = 0.3
    vflip_p: float = 0.3
    dropout_p: float = 0.3
    holes: int = 10
    hole_fraction: float = 32 / 256  # hole side as a fraction of the image side
    gamma_p: float = 0.0  # not in the paper: image ** gamma, gamma log-uniform in [1/max_gamma, max_gamma]
    max_gamma: float = 1.5
    scale_p: float = 0.0  # not in the paper: zoom log-uniform in [1/max_scale, max_scale] about the centre
    max_scale: float = 1.25
    shading_p: float = 0.0  # not in the paper: smooth gain field with factors in [1/max_shading, max_shading]
    max_shading: float = 1.3
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("rotate_p", "hflip_p", "vflip_p", "dropout_p", "hole_fraction", "gamma_p", "scale_p",
                     "shading_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation {name} must lie in [0, 1], got {value}")
        if self.holes < 0 or self.max_angle_deg < 0:
            raise ValueError("augmentation holes and max_angle_deg must not be negative")
        if self.max_gamma < 1 or self.max_scale < 1 or self.max_shading < 1:
            raise ValueError("augmentation max_gamma, max_scale and max_shading must be at least 1")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _log_factors(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    """Logarithms of factors log-uniform in [1/bound, bound], drawn on the CPU."""
    return (torch.rand(shape, generator=generator) * 2 - 1) * math.log(bound)


def _log_uniform(batch: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    """Factors log-uniform in [1/bound, bound]."""
    return _log_factors((batch,), bound, generator).exp()


def _shading_fields(
    count: int, height: int, width: int, bound: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """``count`` smooth gain fields (count, 1, H, W) on ``device`` with values in [1/bound, bound]."""
    coarse = _log_factors((count, 1, _SHADING_GRID, _SHADING_GRID), bound, generator).to(device)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return fine.clamp(-math.log(bound), math.log(bound)).exp()


def _affine_grid(
    angles_rad: torch.Tensor, zooms: torch.Tensor, height: int, width: int, device: torch.device
) -> torch.Tensor:
    """Sampling grid rotating each image about its centre by ``angles`` and magnifying it by ``zooms``
    (in pixel units, any aspect ratio)."""
    cos, sin = torch.cos(angles_rad) / zooms, torch.sin(angles_rad) / zooms
    theta = torch.zeros((len(angles_rad), 2, 3), dtype=torch.float32)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * height / width
    theta[:, 1, 0] = sin * width / height
    theta[:, 1, 1] = cos
    return F.affine_grid(theta.to(device), [len(angles_rad), 1, height, width], align_corners=False)


def augment_batch(
    images: torch.Tensor, targets: torch.Tensor, config: AugmentationConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``images`` (B, C, H, W) and ``targets`` (B, 1, H, W) together; returns new tensors."""
    if not config.enabled or images.shape[0] == 0:
        return images, targets
    batch, _, height, width = images.shape
    device = images.device
    images, targets = images.clone(), targets.clone()

    def draw(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    rotate = draw(config.rotate_p)
    angles = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(config.max_angle_deg)
    hflip, vflip, dropout = draw(config.hflip_p), draw(config.vflip_p), draw(config.dropout_p)
    hole_h = max(1, round(config.hole_fraction * height))
    hole_w = max(1, round(config.hole_fraction * width))
    tops = torch.randint(0, max(1, height - hole_h + 1), (batch, config.holes), generator=generator)
    lefts = torch.randint(0, max(1, width - hole_w + 1), (batch, config.holes), generator=generator)
    zoom = torch.zeros(batch, dtype=torch.bool)
    zooms = torch.ones(batch)
    if config.scale_p > 0:
        zoom = draw(config.scale_p)
        zooms = torch.where(zoom, _log_uniform(batch, config.max_scale, generator), zooms)
    if config.gamma_p > 0:
        regamma = draw(config.gamma_p)
        gammas = _log_uniform(batch, config.max_gamma, generator)
        if regamma.any():
            index = regamma.nonzero().flatten().to(device)
            exponent = gammas[regamma].to(device=device, dtype=images.dtype).view(-1, 1, 1, 1)
            images[index] = images[index].clamp(0.0, 1.0) ** exponent
    if config.shading_p > 0:
        shade = draw(config.shading_p)
        if shade.any():
            index = shade.nonzero().flatten().to(device)
            fields = _shading_fields(int(shade.sum()), height, width, config.max_shading, generator, device)
            images[index] = (images[index] * fields.to(images.dtype)).clamp(0.0, 1.0)

    moved = rotate | zoom
    if moved.any():
        index = moved.nonzero().flatten().to(device)
        grid = _affine_grid(torch.where(rotate, angles, 0.0)[moved], zooms[moved], height, width, device)
        images[index] = F.grid_sample(images[index], grid, mode="bilinear", padding_mode="reflection",
                                      align_corners=False)
        targets[index] = F.grid_sample(targets[index], grid, mode="nearest", padding_mode="reflection",
                                       align_corners=False)
    for flags, dim in ((hflip, 3), (vflip, 2)):
        if flags.any():
            index = flags.nonzero().flatten().to(device)
            images[index] = images[index].flip(dim)
            targets[index] = targets[index].flip(dim)
    if dropout.any() and config.holes > 0:
        keep = torch.ones((batch, 1, height, width), dtype=images.dtype)
        for sample in dropout.nonzero().flatten().tolist():
            for top, left in zip(tops[sample].tolist(), lefts[sample].tolist()):
                keep[sample, :, top:top + hole_h, left:left + hole_w] = 0
        images = images * keep.to(device)
    return images, targets
