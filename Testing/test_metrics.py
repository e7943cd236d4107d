"""Metrics against hand-computed values, an independent brute-force surface distance, and SimpleITK's Hausdorff."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk

from RMAMambaSegmentationLib.evaluation import metrics


def _box(shape, lo, hi):
    mask = np.zeros(shape, dtype=bool)
    assert len(lo) == len(hi) == len(shape)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def _surface_by_loops(mask: np.ndarray) -> np.ndarray:
    """Independent surface: a voxel with a face neighbour inside the image that is background."""
    surface = np.zeros_like(mask)
    for index in zip(*np.nonzero(mask)):
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            neighbour = list(index)
            neighbour[axis] += step
            if 0 <= neighbour[axis] < mask.shape[axis] and not mask[tuple(neighbour)]:
                surface[index] = True
                break
    return surface


def _brute_force(pred, ref, spacing):
    a = np.argwhere(_surface_by_loops(pred)) * np.asarray(spacing)
    b = np.argwhere(_surface_by_loops(ref)) * np.asarray(spacing)
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([distances.min(axis=1), distances.min(axis=0)])
    return pooled.max(), np.percentile(pooled, 95), pooled.mean()


def test_overlap_scores_hand_computed():
    ref = np.zeros((2, 4, 5), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref.flat[:10] = 1  # 10 reference voxels
    pred.flat[4:12] = 7  # 8 predicted voxels (any nonzero value), 6 of them in the reference
    scores = metrics.overlap_scores(pred, ref)
    assert scores["dice"] == pytest.approx(12 / 18)
    assert scores["iou"] == pytest.approx(6 / 12)
    assert scores["recall"] == pytest.approx(0.6)
    assert scores["precision"] == pytest.approx(0.75)
    assert scores["f2"] == pytest.approx(5 * 0.75 * 0.6 / (4 * 0.75 + 0.6))  # 0.625


def test_empty_mask_rule():
    empty = np.zeros((3, 4, 4), dtype=bool)
    full = _box((3, 4, 4), (1, 1, 1), (2, 3, 3))
    both_empty = metrics.volume_scores(empty, empty, (1, 1, 1))
    assert all(both_empty[k] == 1.0 for k in metrics.OVERLAP_KEYS)
    assert all(both_empty[k] == 0.0 for k in metrics.DISTANCE_KEYS)

    false_positive = metrics.volume_scores(full, empty, (1, 1, 1))
    assert (false_positive["dice"], false_positive["iou"], false_positive["precision"]) == (0.0, 0.0, 0.0)
    assert false_positive["recall"] == 1.0 and false_positive["f2"] == 0.0
    assert all(math.isinf(false_positive[k]) for k in metrics.DISTANCE_KEYS)

    missed = metrics.volume_scores(empty, full, (1, 1, 1))
    assert (missed["dice"], missed["iou"], missed["recall"], missed["f2"]) == (0.0, 0.0, 0.0, 0.0)
    assert missed["precision"] == 1.0
    assert math.isinf(missed["hd_mm"]) and math.isinf(missed["hd95_mm"])


def test_single_voxels_anisotropic_spacing():
    pred = np.zeros((4, 5, 3), dtype=bool)
    ref = np.zeros_like(pred)
    pred[0, 0, 0] = True
    ref[2, 3, 1] = True
    spacing = (2.0, 0.5, 1.5)  # along array axes 0, 1, 2
    expected = math.sqrt((2 * 2.0) ** 2 + (3 * 0.5) ** 2 + (1 * 1.5) ** 2)
    scores = metrics.distance_scores(pred, ref, spacing)
    assert scores["hd_mm"] == pytest.approx(expected, rel=1e-6)
    assert scores["hd95_mm"] == pytest.approx(expected, rel=1e-6)
    assert scores["assd_mm"] == pytest.approx(expected, rel=1e-6)


def test_boxes_shifted_along_thick_slices():
    # Two 4-slice boxes shifted by 2 slices of 3 mm: every surface point is 6 mm or closer; the far faces are 6 mm.
    shape = (10, 10, 10)
    ref = _box(shape, (2, 2, 2), (6, 8, 8))
    pred = _box(shape, (4, 2, 2), (8, 8, 8))
    scores = metrics.volume_scores(pred, ref, (3.0, 0.5, 0.5))
    assert scores["hd_mm"] == pytest.approx(6.0, rel=1e-6)
    assert scores["dice"] == pytest.approx(2 * 2 / 8)
    assert scores["pred_ml"] == pytest.approx(4 * 6 * 6 * 3.0 * 0.25 / 1000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 12, 11)
    spacing = (2.5, 0.8, 1.1)
    # blobs: thresholded smooth noise so the masks have interiors, holes and several components
    noise = rng.random(shape)
    smooth = sum(np.roll(noise, s, axis=a) for a in range(3) for s in (-1, 0, 1))
    ref = smooth > 4.6
    pred = np.roll(ref, 1, axis=2) ^ (rng.random(shape) > 0.93)
    pred[0] = True  # touches the image border
    hd, hd95, assd = _brute_force(pred, ref, spacing)
    scores = metrics.distance_scores(pred, ref, spacing)
    assert scores["hd_mm"] == pytest.approx(hd, abs=1e-5)
    assert scores["hd95_mm"] == pytest.approx(hd95, abs=1e-5)
    assert scores["assd_mm"] == pytest.approx(assd, abs=1e-5)


def test_surface_matches_independent_definition():
    rng = np.random.default_rng(5)
    mask = rng.random((5, 7, 6)) > 0.4
    mask[:, 0, :] = True
    assert np.array_equal(metrics.surface_voxels(mask), _surface_by_loops(mask))


def _sitk_hausdorff(a: np.ndarray, b: np.ndarray, spacing) -> float:
    images = []
    for array in (a, b):
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing(tuple(reversed(spacing)))
        images.append(image)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(*images)
    return hausdorff.GetHausdorffDistance()


def test_against_simpleitk_hausdorff_disjoint_boxes():
    # For disjoint boxes, the Hausdorff distance of the voxel sets equals that of their surfaces.
    shape = (8, 20, 20)
    spacing = (4.0, 0.75, 0.75)
    ref = _box(shape, (1, 2, 3), (4, 9, 10))
    pred = _box(shape, (5, 10, 4), (8, 18, 15))
    expected = _sitk_hausdorff(pred, ref, spacing)
    assert metrics.distance_scores(pred, ref, spacing)["hd_mm"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_against_simpleitk_hausdorff_on_surfaces(seed):
    rng = np.random.default_rng(seed)
    shape = (7, 15, 13)
    spacing = (3.0, 0.7, 0.9)
    ref = _box(shape, (1, 3, 2), (6, 12, 10)) & (rng.random(shape) > 0.1)
    pred = _box(shape, (2, 1, 4), (7, 10, 12)) & (rng.random(shape) > 0.1)
    expected = _sitk_hausdorff(_surface_by_loops(pred), _surface_by_loops(ref), spacing)
    assert metrics.distance_scores(pred, ref, spacing)["hd_mm"] == pytest.approx(expected, rel=1e-6)


def test_row_hausdorff_paper_quirk():
    # Values stated (and verified with SciPy) in the architecture spec, section 11.
    truth = np.zeros((256, 256), dtype=bool)
    truth[100:150, 100:150] = True
    assert metrics.row_hausdorff_paper(truth, np.roll(truth, 10, axis=0)) == 0.0
    assert metrics.row_hausdorff_paper(truth, np.roll(truth, 10, axis=1)) == pytest.approx(math.sqrt(20))
    assert metrics.row_hausdorff_paper(truth, np.zeros_like(truth)) == pytest.approx(math.sqrt(50))


def test_slice_scores_average_empty_slices_with_equal_weight():
    ref = np.zeros((3, 6, 6), dtype=bool)
    pred = np.zeros_like(ref)
    ref[1, 0:2, 0:2] = True  # 4 voxels
    pred[1, 0:2, 0:1] = True  # 2 voxels inside -> Dice 2*2/6
    pred[2, 5, 5] = True  # false positive on an empty slice -> Dice 0
    by_slice = metrics.slice_scores(pred, ref)
    assert by_slice.n_slices == 3
    assert by_slice.scores["slice_dice"].tolist() == pytest.approx([1.0, 4 / 6, 0.0])
    assert by_slice.means()["slice_dice"] == pytest.approx((1 + 4 / 6 + 0) / 3)
    assert by_slice.means()["slice_recall"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.overlap_scores(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
