"""Axial reorientation: radiological display order whatever the array order and direction matrix."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TOTALSEG
from RMAMambaSegmentationLib.imaging.orientation import LPS_TO_RAS, AxialReorientation

SIGNED_PERMUTATIONS = [
    (perm, signs) for perm in itertools.permutations(range(3)) for signs in itertools.product((1, -1), repeat=3)
]


def _direction(perm, signs) -> np.ndarray:
    """LPS direction whose index axis i/j/k (columns) points along physical axis perm[c] with sign signs[c]."""
    matrix = np.zeros((3, 3))
    assert len(perm) == len(signs) == 3
    for column, (axis, sign) in enumerate(zip(perm, signs)):
        matrix[axis, column] = sign
    return matrix


@pytest.mark.parametrize(("perm", "signs"), SIGNED_PERMUTATIONS)
def test_stack_axes_point_superior_posterior_left(perm, signs):
    """Stepping along the stack's slice/row/column axes moves the voxel towards +S, +P and +L (LPS), exactly."""
    direction = _direction(perm, signs)
    image = sitk.Image(5, 6, 7, sitk.sitkUInt16)
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    # voxel value = flat index, so every stack position tells which input voxel it holds
    array = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(7, 6, 5)
    reorientation = AxialReorientation.from_image(image)
    stack = reorientation.to_axial(array)
    assert stack.shape == reorientation.axial_shape(array.shape)

    def physical(t):
        k, j, i = np.unravel_index(int(stack[t]), array.shape)
        return np.array(image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))

    origin = physical((0, 0, 0))
    steps_mm = []
    for axis, lps_axis in ((0, 2), (1, 1), (2, 0)):
        step = [0, 0, 0]
        step[axis] = 1
        delta = physical(tuple(step)) - origin
        assert delta[lps_axis] > 0, f"stack axis {axis} does not point to +{'LPS'[lps_axis]}"
        assert np.count_nonzero(np.abs(delta) > 1e-9) == 1
        steps_mm.append(float(delta[lps_axis]))
    assert reorientation.axial_spacing(image.GetSpacing()) == pytest.approx(steps_mm)


@pytest.mark.parametrize(("perm", "signs"), SIGNED_PERMUTATIONS[::5])
def test_from_axial_is_the_exact_inverse(perm, signs):
    reorientation = AxialReorientation.from_direction(_direction(perm, signs))
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    stack = reorientation.to_axial(array)
    np.testing.assert_array_equal(reorientation.from_axial(stack), array)
    np.testing.assert_array_equal(reorientation.to_axial(reorientation.from_axial(stack)), stack)


def test_identity_direction_is_already_axial():
    """With the identity LPS direction the SimpleITK array is the stack (i -> L, j -> P, k -> S)."""
    reorientation = AxialReorientation.from_direction(np.eye(3))
    assert reorientation.axes == (0, 1, 2)
    assert reorientation.flips == (False, False, False)


@pytest.mark.parametrize("name", ["example_ct_sm", "example_mr_sm"])
def test_fixture_liver_is_on_the_image_left(name):
    """Radiological display: the liver (patient right) lies in the left half of each axial slice, anterior up."""
    labels = sitk.ReadImage(str(TOTALSEG / ("example_seg.nii.gz" if "ct" in name else "example_seg_mr.nii.gz")))
    stack = AxialReorientation.from_image(labels).to_axial(sitk.GetArrayViewFromImage(labels))
    liver = np.argwhere(stack == 5)
    spleen = np.argwhere(stack == 1)
    assert liver[:, 2].mean() < stack.shape[2] / 2 < spleen[:, 2].mean()


def test_from_ijk_to_ras_matches_the_sitk_direction():
    """MRML's IJK-to-RAS (spacing included) gives the same reorientation as the image's LPS direction."""
    rotation = sitk.VersorTransform((0, 0, 1), np.radians(10)).GetMatrix()
    direction = np.asarray(rotation).reshape(3, 3) @ _direction((1, 0, 2), (1, -1, 1))
    spacing = np.array([0.8, 0.9, 2.5])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    a = AxialReorientation.from_ijk_to_ras(ijk_to_ras, warn_oblique=False)
    b = AxialReorientation.from_direction(direction, warn_oblique=False)
    assert (a.axes, a.flips) == (b.axes, b.flips)
    assert a.oblique_deg == pytest.approx(10.0, abs=1e-6)


def test_oblique_volume_uses_closest_axes_and_says_so(caplog):
    rotation = np.asarray(sitk.VersorTransform((1, 0, 0), np.radians(20)).GetMatrix()).reshape(3, 3)
    with caplog.at_level(logging.WARNING, logger="RMAMambaSegmentationLib.imaging.orientation"):
        reorientation = AxialReorientation.from_direction(rotation)
    assert reorientation.is_oblique
    assert reorientation.oblique_deg == pytest.approx(20.0, abs=1e-6)
    assert reorientation.axes == (0, 1, 2)
    assert any("oblique" in record.getMessage() for record in caplog.records)


def test_slight_scanner_tilt_is_recorded_without_a_warning(caplog):
    """CHAOS MR volumes are tilted by 0.3-2.4 degrees: recorded, logged at debug level, not warned about."""
    rotation = np.asarray(sitk.VersorTransform((0, 1, 0), np.radians(2.4)).GetMatrix()).reshape(3, 3)
    with caplog.at_level(logging.DEBUG, logger="RMAMambaSegmentationLib.imaging.orientation"):
        reorientation = AxialReorientation.from_direction(rotation)
    assert reorientation.is_oblique and reorientation.oblique_deg == pytest.approx(2.4, abs=1e-6)
    assert reorientation.axes == (0, 1, 2)
    levels = [record.levelno for record in caplog.records if "oblique" in record.getMessage()]
    assert levels == [logging.DEBUG]


def test_invalid_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        AxialReorientation.from_direction(np.zeros((3, 3)))
