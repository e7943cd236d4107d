"""Axial slices in radiological display orientation, whatever the array order and direction matrix.

Convention shared by training and inference (and by the Slicer logic):

* the *axial* axis is the array axis closest to the patient's superior-inferior axis;
* slices are ordered inferior -> superior;
* inside a slice, rows go anterior -> posterior (anterior at the top) and columns go patient right -> patient left
  (patient right on the image's left), as 3D Slicer shows an axial slice.

In LPS coordinates (SimpleITK, ITK, DICOM, NRRD) the stack axes (slice, row, column) therefore point to +S, +P and
+L: the stack is exactly the SimpleITK array ``(k, j, i)`` of an image with the identity direction matrix.
Oblique volumes use the closest axes (no resampling) and log a warning.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Physical LPS axis (0 = L, 1 = P, 2 = S) that each stack axis (slice, row, column) points to.
STACK_AXES_LPS = (2, 1, 0)
#: Words for the convention, recorded in model cards.
ORIENTATION_CONVENTION = "axial-radiological: slices inferior->superior, rows anterior->posterior, columns right->left"
#: Direction cosines further than this from an axis (in degrees) make a volume "oblique" in the log.
OBLIQUE_TOLERANCE_DEG = 0.1
#: Obliquity up to this angle (a scanner's slight tilt, common in MRI) is logged at debug level, not as a warning:
#: slicing along the closest axes moves a voxel by under 5 % of the in-plane field of view at this angle.
OBLIQUE_WARNING_DEG = 3.0

#: LPS <-> RAS (its own inverse): the one definition, used wherever SimpleITK/NRRD geometry meets MRML's RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _closest_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], float]:
    """For each physical LPS axis, the image index axis (0 = i, 1 = j, 2 = k) closest to it, and the worst angle.

    The assignment is one-to-one: the permutation maximising the product of |cosines| is chosen, so that even a
    strongly oblique matrix yields a valid reorientation.
    """
    magnitudes = np.abs(direction)
    best: tuple[int, int, int] | None = None
    best_score = -math.inf
    for perm in itertools.permutations(range(3)):
        # perm[p] = index axis assigned to physical axis p
        score = float(np.sum(np.log(np.maximum(magnitudes[[0, 1, 2], list(perm)], 1e-12))))
        if score > best_score:
            best, best_score = perm, score
    assert best is not None
    cosines = [float(np.clip(magnitudes[p, best[p]], 0.0, 1.0)) for p in range(3)]
    worst_angle = max(math.degrees(math.acos(c)) for c in cosines)
    return best, worst_angle


@dataclass(frozen=True)
class AxialReorientation:
    """How to turn a SimpleITK-ordered array ``(k, j, i)`` into an axial stack and back.

    ``axes[t]`` is the input array axis that becomes stack axis ``t`` (0 slices, 1 rows, 2 columns);
    ``flips[t]`` says whether that stack axis is reversed after the transpose. ``oblique_deg`` is the largest
    angle between an image axis and the patient axis it was matched with.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    oblique_deg: float = 0.0

    @classmethod
    def from_direction(
        cls, direction: Sequence[float] | np.ndarray, *, warn_oblique: bool = True
    ) -> AxialReorientation:
        """From a 3x3 LPS direction matrix (columns = physical direction of the i, j, k index axes; a flat 9-tuple
        as ``sitk.Image.GetDirection()`` returns is accepted)."""
        matrix = np.asarray(direction, dtype=float).reshape(3, 3)
        if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-6:
            raise ValueError(f"invalid direction matrix {matrix.tolist()}")
        index_axis_of_physical, worst = _closest_axes(matrix)
        axes = []
        flips = []
        for physical in STACK_AXES_LPS:
            index_axis = index_axis_of_physical[physical]
            axes.append(2 - index_axis)  # index axis i/j/k is array axis 2/1/0
            flips.append(bool(matrix[physical, index_axis] < 0))
        if warn_oblique and worst > OBLIQUE_TOLERANCE_DEG:
            logger.log(
                logging.WARNING if worst > OBLIQUE_WARNING_DEG else logging.DEBUG,
                "oblique volume: image axes are up to %.1f degrees from the patient axes; "
                "slicing along the closest axes without resampling",
                worst,
            )
        return cls(tuple(axes), tuple(flips), worst)  # type: ignore[arg-type]

    @classmethod
    def from_image(cls, image, *, warn_oblique: bool = True) -> AxialReorientation:
        """From a 3D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise ValueError(f"a 3D image is needed, got {image.GetDimension()}D")
        return cls.from_direction(image.GetDirection(), warn_oblique=warn_oblique)

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray, *, warn_oblique: bool = True) -> AxialReorientation:
        """From a 4x4 (or 3x3) IJK-to-RAS matrix as MRML volume nodes give it (spacing included is fine)."""
        linear = np.asarray(matrix, dtype=float)[:3, :3]
        lps = LPS_TO_RAS @ linear
        lps = lps / np.linalg.norm(lps, axis=0, keepdims=True)
        return cls.from_direction(lps, warn_oblique=warn_oblique)

    @property
    def is_oblique(self) -> bool:
        return self.oblique_deg > OBLIQUE_TOLERANCE_DEG

    def to_axial(self, array_kji: np.ndarray) -> np.ndarray:
        """The axial stack ``(n_slices, rows, columns)`` of an array in SimpleITK order (a view when possible)."""
        if array_kji.ndim != 3:
            raise ValueError(f"a 3D array is needed, got shape {array_kji.shape}")
        stack = np.transpose(array_kji, self.axes)
        flip_axes = tuple(t for t in range(3) if self.flips[t])
        return np.flip(stack, axis=flip_axes) if flip_axes else stack

    def from_axial(self, stack: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`to_axial`: back to the input's ``(k, j, i)`` order."""
        if stack.ndim != 3:
            raise ValueError(f"a 3D stack is needed, got shape {stack.shape}")
        flip_axes = tuple(t for t in range(3) if self.flips[t])
        unflipped = np.flip(stack, axis=flip_axes) if flip_axes else stack
        return np.transpose(unflipped, np.argsort(self.axes))

    def axial_shape(self, shape_kji: Sequence[int]) -> tuple[int, int, int]:
        """``(n_slices, rows, columns)`` for an input array shape."""
        return tuple(int(shape_kji[a]) for a in self.axes)  # type: ignore[return-value]

    def axial_spacing(self, spacing_ijk: Sequence[float]) -> tuple[float, float, float]:
        """Spacing along (slice, row, column) for an image spacing given in (i, j, k) order."""
        spacing_kji = tuple(reversed([float(s) for s in spacing_ijk]))
        return tuple(spacing_kji[a] for a in self.axes)  # type: ignore[return-value]
