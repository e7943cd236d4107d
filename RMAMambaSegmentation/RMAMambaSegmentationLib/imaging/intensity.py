"""Intensity presets: map a volume's values to [0, 1] as the network expects.

* ``MRI``: robust percentiles computed over the whole volume (default 0.5 and 99.5) map to 0 and 1.
* ``MRI-tissue``: the 0.5th percentile maps to 0 and four times the median *tissue* intensity (above that
  percentile) to 1. The median of the body's voxels does not move when a large bright structure (a stomach full of
  fluid on T2) takes over the top percentiles, so the liver keeps its usual grey level where ``MRI`` darkens it.
* ``CT``: a fixed window in Hounsfield units (default -150 to 250 HU) maps to 0 and 1.

Values outside are clipped. The bounds are computed once per volume (:meth:`IntensityPreset.bounds`) so slices
can then be normalised batch by batch (:func:`apply_bounds`) without a float copy of the whole volume.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PERCENTILE = "percentile"
WINDOW = "window"
TISSUE = "tissue"
KINDS = (PERCENTILE, WINDOW, TISSUE)
#: Names that mean a modality (use the model card's preset for it) rather than one particular preset.
MODALITY_NAMES = ("MRI", "MR", "CT")
#: Voxels below this fraction of the way from the low percentile to the 99.5th are background (air), not tissue.
TISSUE_THRESHOLD_FRACTION = 0.05


@dataclass(frozen=True)
class IntensityPreset:
    """How intensities become [0, 1]: ``kind`` is ``"percentile"`` (``low``/``high`` are percentiles of the
    volume), ``"window"`` (``low``/``high`` are absolute values, e.g. HU) or ``"tissue"`` (``low`` is a
    percentile mapped to 0, ``high`` the multiple of the median tissue intensity above it mapped to 1)."""

    name: str
    kind: str
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown intensity preset kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        if self.kind == TISSUE:
            if not (0.0 <= self.low < 100.0 and np.isfinite(self.high) and self.high > 0.0):
                raise ValueError(
                    f"intensity preset {self.name!r}: the low percentile must lie in [0, 100) and the tissue "
                    f"multiple must be positive (got {self.low}, {self.high})"
                )
            return
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"intensity preset {self.name!r}: low ({self.low}) must be below high ({self.high})")
        if self.kind == PERCENTILE and not (self.low >= 0.0 and self.high <= 100.0):
            raise ValueError(f"intensity preset {self.name!r}: percentiles must lie in [0, 100]")

    @classmethod
    def mri(cls, low: float = 0.5, high: float = 99.5) -> IntensityPreset:
        return cls("MRI", PERCENTILE, float(low), float(high))

    @classmethod
    def mri_tissue(cls, low: float = 0.5, multiple: float = 4.0) -> IntensityPreset:
        return cls("MRI", TISSUE, float(low), float(multiple))

    @classmethod
    def ct(cls, low: float = -150.0, high: float = 250.0) -> IntensityPreset:
        return cls("CT", WINDOW, float(low), float(high))

    @classmethod
    def from_name(cls, name: str) -> IntensityPreset:
        """The default preset for ``"MRI"`` / ``"MR"``, ``"MRI-tissue"`` or ``"CT"`` (case-insensitive)."""
        key = str(name).strip().upper()
        if key in ("MRI", "MR"):
            return cls.mri()
        if key in ("MRI-TISSUE", "MR-TISSUE"):
            return cls.mri_tissue()
        if key == "CT":
            return cls.ct()
        raise ValueError(f"unknown intensity preset {name!r}: use 'MRI', 'MRI-tissue' or 'CT'")

    @property
    def label(self) -> str:
        """The name a user types for this preset: ``"MRI"``, ``"MRI-tissue"`` or ``"CT"``."""
        return f"{self.name}-tissue" if self.kind == TISSUE else self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntensityPreset:
        try:
            return cls(str(data["name"]), str(data["kind"]), float(data["low"]), float(data["high"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"invalid intensity preset {data!r}: {error}") from error

    def bounds(self, array: np.ndarray) -> tuple[float, float]:
        """The values mapped to 0 and 1 for this volume."""
        if self.kind == WINDOW:
            return self.low, self.high
        finite = np.asarray(array)
        if self.kind == TISSUE:
            lo, top = (float(v) for v in np.percentile(finite, [self.low, 99.5]))
            tissue = finite[finite > lo + TISSUE_THRESHOLD_FRACTION * (top - lo)]
            hi = lo + self.high * (float(np.median(tissue, overwrite_input=True)) - lo) if tissue.size else lo
        else:
            lo, hi = (float(v) for v in np.percentile(finite, [self.low, self.high]))
        if hi <= lo:  # e.g. a volume that is mostly background: fall back to the full range
            lo, hi = float(np.min(finite)), float(np.max(finite))
            logger.debug("%s bounds coincide; using the volume's min-max %s-%s", self.label, lo, hi)
        return lo, hi


def apply_bounds(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(array - lo) / (hi - lo)`` clipped to [0, 1], as float32 (a constant map gives zeros)."""
    values = np.array(array, dtype=np.float32, copy=True)
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    values -= np.float32(lo)
    values *= np.float32(1.0 / (hi - lo))
    np.clip(values, 0.0, 1.0, out=values)
    return values


def normalize_intensities(array: np.ndarray, preset: IntensityPreset | str) -> np.ndarray:
    """The whole array mapped to float32 in [0, 1] by ``preset`` (a preset or a name, e.g. ``"CT"``)."""
    if isinstance(preset, str):
        preset = IntensityPreset.from_name(preset)
    lo, hi = preset.bounds(array)
    return apply_bounds(array, lo, hi)
