"""Training slices see the inference preprocessing; PNG slices follow the official recipe; augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TOTALSEG
from RMAMambaSegmentationLib.errors import InvalidImageError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset, normalize_intensities
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.imaging.preprocessing import slices_to_network_input
from RMAMambaSegmentationLib.training.augmentation import AugmentationConfig, augment_batch
from RMAMambaSegmentationLib.training.layouts import CaseSource
from RMAMambaSegmentationLib.training.slices import SliceSet, build_slice_set, prepare_png_case, prepare_volume_case

CASES = {
    "ct": CaseSource("ct", TOTALSEG / "example_ct_sm.nii.gz", TOTALSEG / "example_seg.nii.gz"),
    "mr": CaseSource("mr", TOTALSEG / "example_mr_sm.nii.gz", TOTALSEG / "example_seg_mr.nii.gz"),
}


@pytest.mark.parametrize(("name", "preset"), [("ct", IntensityPreset.ct()), ("mr", IntensityPreset.mri())])
def test_volume_slices_are_the_inference_input(name, preset):
    case = CASES[name]
    prepared = prepare_volume_case(case, preset=preset, size=(64, 80), label=5)
    image = sitk.ReadImage(str(case.image))
    orientation = AxialReorientation.from_image(image)
    stack = orientation.to_axial(normalize_intensities(sitk.GetArrayFromImage(image), preset))
    expected = slices_to_network_input(stack, (64, 80))[:, 0]
    assert prepared.images.dtype == torch.float16 and prepared.images.shape == expected.shape
    assert torch.allclose(prepared.images.float(), expected, atol=2.5e-4)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask)))
    liver = orientation.to_axial((labels == 5).astype(np.float32))
    expected_mask = slices_to_network_input(liver, (64, 80))[:, 0]
    assert torch.allclose(prepared.masks.float() / 255, expected_mask, atol=0.5 / 255 + 1e-6)
    soft = (prepared.masks > 0) & (prepared.masks < 255)
    assert soft.any()  # unthresholded edges, as the official targets


def test_liver_lies_on_the_image_left_for_both_orientations():
    # The CT (LPS-like) and MR (RAS-like) fixtures store opposite axis signs; after the shared reorientation the
    # liver (patient right) must be on the left of every slice, anterior part at the top half.
    for case in CASES.values():
        masks = prepare_volume_case(case, preset=IntensityPreset.mri(), size=(64, 64), label=5).masks.float()
        columns = masks.sum(dim=(0, 1))
        rows = masks.sum(dim=(0, 2))
        assert columns[:32].sum() > 3 * columns[32:].sum(), case.key
        assert rows.sum() > 0 and rows[:40].sum() > rows[40:].sum(), case.key


def test_mask_on_another_grid_is_refused(tmp_path):
    mask = sitk.ReadImage(str(TOTALSEG / "example_seg_mr.nii.gz"))
    path = tmp_path / "mr_liver.nii.gz"
    sitk.WriteImage(mask[:, :, :10], str(path))
    case = CaseSource("mr", TOTALSEG / "example_mr_sm.nii.gz", path)
    with pytest.raises(InvalidImageError, match="differs from mask size"):
        prepare_volume_case(case, preset=IntensityPreset.mri(), size=(64, 64), label=5)


def test_png_case_official_recipe(tmp_path):
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz")))[:3]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_seg_mr.nii.gz")))[:3]
    grey = np.round(255 * (image - image.min()) / (image.max() - image.min())).astype(np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index in range(3):
        rgb = sitk.GetImageFromArray(np.repeat(grey[index][..., None], 3, axis=-1), isVector=True)
        sitk.WriteImage(rgb, str(tmp_path / "images" / f"{index + 1}.png"))
        mask = np.where(labels[index] == 5, 255, 0).astype(np.uint8)
        mask[0, 0] = 100  # below 128: background
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(tmp_path / "masks" / f"{index + 1}.png"))
    prepared = prepare_png_case(CaseSource("c", tmp_path / "images", tmp_path / "masks", "png"), size=(48, 48))
    expected = slices_to_network_input(grey.astype(np.float32) / 255, (48, 48))[:, 0]
    assert torch.allclose(prepared.images.float(), expected, atol=2.5e-4)
    liver = slices_to_network_input((labels == 5).astype(np.float32), (48, 48))[:, 0]
    assert torch.allclose(prepared.masks.float() / 255, liver, atol=0.5 / 255 + 1e-6)


def test_slice_set_batches():
    slice_set = build_slice_set(list(CASES.values()), preset=IntensityPreset.mri(), size=(64, 64), label=5,
                                workers=2)
    assert len(slice_set) == 30 + 20 and slice_set.keys == ["ct", "mr"]
    assert slice_set.n_liver_slices == 50  # the fixtures have liver on every slice
    images, targets = slice_set.batch([0, 49])
    assert images.shape == (2, 3, 64, 64) and targets.shape == (2, 1, 64, 64)
    assert torch.equal(images[:, 0], images[:, 2]) and float(targets.max()) == 1.0
    assert int(slice_set.case_index[49]) == 1


def test_context_slices_take_the_neighbours_within_each_case():
    slice_set = build_slice_set(list(CASES.values()), preset=IntensityPreset.mri(), size=(64, 64), label=5)
    indices = [0, 5, 29, 30, 49]  # first and last slices of both cases, and one inside
    images, targets = slice_set.batch(indices, context_slices=1)
    single, same_targets = slice_set.batch(indices)
    assert images.shape == (5, 3, 64, 64) and torch.equal(targets, same_targets)
    assert torch.equal(images[:, 1], single[:, 1])
    stored = slice_set.images.float()
    previous = [0, 4, 28, 30, 48]  # a case's first slice stands in for its missing previous one
    following = [1, 6, 29, 31, 49]  # and its last for the missing next one (29 ends "ct", 49 ends "mr")
    assert torch.equal(images[:, 0], stored[previous]) and torch.equal(images[:, 2], stored[following])
    assert not torch.equal(images[1, 0], images[1, 2])


def _pattern(batch: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    square = ((yy > 8) & (yy < 30) & (xx > 12) & (xx < 44)).float()
    ramp = xx.float() / size
    images = (0.5 * square + 0.5 * ramp).expand(batch, 3, size, size).clone()
    return images, square.expand(batch, 1, size, size).clone()


def test_augmentation_flips_and_dropout_exactly():
    images, targets = _pattern()
    only_hflip = AugmentationConfig(rotate_p=0, hflip_p=1, vflip_p=0, dropout_p=0)
    out_images, out_targets = augment_batch(images, targets, only_hflip, torch.Generator().manual_seed(0))
    assert torch.equal(out_images, images.flip(3)) and torch.equal(out_targets, targets.flip(3))
    only_vflip = AugmentationConfig(rotate_p=0, hflip_p=0, vflip_p=1, dropout_p=0)
    out_images, _ = augment_batch(images, targets, only_vflip, torch.Generator().manual_seed(0))
    assert torch.equal(out_images, images.flip(2))
    one_hole = AugmentationConfig(rotate_p=0, hflip_p=0, vflip_p=0, dropout_p=1, holes=1, hole_fraction=0.25)
    ones = torch.ones(4, 3, 64, 64)
    out_images, out_targets = augment_batch(ones, targets, one_hole, torch.Generator().manual_seed(0))
    assert (out_images[:, 0] == 0).sum(dim=(1, 2)).tolist() == [16 * 16] * 4  # one 16x16 hole per image
    assert torch.equal(out_targets, targets)  # the target keeps its liver
    assert torch.equal(images, _pattern()[0])  # inputs untouched


def test_rotation_moves_image_and_target_together_and_is_seeded():
    images, targets = _pattern()
    rotate = AugmentationConfig(rotate_p=1, hflip_p=0, vflip_p=0, dropout_p=0)
    out_images, out_targets = augment_batch(images, targets, rotate, torch.Generator().manual_seed(1))
    again, _ = augment_batch(images, targets, rotate, torch.Generator().manual_seed(1))
    assert torch.equal(out_images, again)
    assert not torch.equal(out_targets, targets)
    assert set(out_targets.unique().tolist()) <= {0.0, 1.0}  # nearest for the target
    # The rotated square in the image (value >= 0.5 there) still coincides with the rotated target.
    inside = out_images[:, :1] >= 0.5
    agreement = (inside == (out_targets > 0.5)).float().mean()
    assert agreement > 0.97
    assert abs(out_targets.sum() - targets.sum()) / targets.sum() < 0.1  # area kept (square stays inside)


def test_gamma_raises_each_image_to_one_power_within_bounds():
    images, targets = _pattern()
    gamma = AugmentationConfig(rotate_p=0, hflip_p=0, vflip_p=0, dropout_p=0, gamma_p=1, max_gamma=1.5)
    out_images, out_targets = augment_batch(images, targets, gamma, torch.Generator().manual_seed(3))
    assert torch.equal(out_targets, targets)
    assert len(out_images) == len(images)
    for image, out in zip(images, out_images):
        exponent = math.log(out[0, 20, 20]) / math.log(image[0, 20, 20])  # one pixel gives the gamma
        assert 1 / 1.5 - 1e-6 <= exponent <= 1.5 + 1e-6 and abs(exponent - 1) > 1e-4
        torch.testing.assert_close(out, image ** exponent, rtol=1e-5, atol=1e-6)


def test_zoom_scales_image_and_target_together():
    images, targets = _pattern(batch=16)
    zoom = AugmentationConfig(rotate_p=0, hflip_p=0, vflip_p=0, dropout_p=0, scale_p=1, max_scale=1.3)
    out_images, out_targets = augment_batch(images, targets, zoom, torch.Generator().manual_seed(2))
    area_ratios = (out_targets.sum(dim=(1, 2, 3)) / targets.sum(dim=(1, 2, 3))).tolist()
    assert min(area_ratios) < 0.9 and max(area_ratios) > 1.1  # both zoom in and out occur
    assert all(1 / 1.3**2 - 0.1 <= ratio <= 1.3**2 + 0.1 for ratio in area_ratios)
    inside = out_images[:, :1] >= 0.5
    assert (inside == (out_targets > 0.5)).float().mean() > 0.97
    paper = AugmentationConfig()  # optional transforms off: the paper's random stream is unchanged
    assert paper.gamma_p == 0 and paper.scale_p == 0
    with pytest.raises(ValueError, match="max_gamma"):
        AugmentationConfig(max_gamma=0.5)


def test_shading_multiplies_each_image_by_one_smooth_bounded_field():
    size, bound = 64, 1.4
    images = torch.full((6, 3, size, size), 0.5)  # 0.5 * 1.4 stays below 1: no clipping
    targets = (torch.rand(6, 1, size, size, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    shading = AugmentationConfig(rotate_p=0, hflip_p=0, vflip_p=0, dropout_p=0, shading_p=1, max_shading=bound)
    out_images, out_targets = augment_batch(images, targets, shading, torch.Generator().manual_seed(5))
    assert torch.equal(out_targets, targets)
    log_gain = torch.log(out_images / images)
    assert log_gain.abs().max() <= math.log(bound) + 1e-5
    assert torch.equal(out_images[:, 0], out_images[:, 2])  # one field for all channels of an image
    spread = log_gain.amax(dim=(1, 2, 3)) - log_gain.amin(dim=(1, 2, 3))
    assert spread.min() > 0.05  # every image is shaded, and not uniformly
    assert not torch.allclose(log_gain[0], log_gain[1])  # each image draws its own field
    # Smooth: a 4x4 grid of control points over 64 pixels moves the log gain by at most 2 log(S) per 21 pixels.
    step = max((log_gain[..., 1:, :] - log_gain[..., :-1, :]).abs().max(),
               (log_gain[..., 1:] - log_gain[..., :-1]).abs().max())
    assert step < 2 * 2 * math.log(bound) / ((size - 1) / 3)
    with pytest.raises(ValueError, match="max_shading"):
        AugmentationConfig(max_shading=0.9)


def test_disabled_augmentation_is_identity():
    images, targets = _pattern()
    out = augment_batch(images, targets, AugmentationConfig(enabled=False), torch.Generator())
    assert out[0] is images and out[1] is targets
    with pytest.raises(ValueError, match="rotate_p"):
        AugmentationConfig(rotate_p=1.5)


def test_slice_set_needs_cases():
    with pytest.raises(ValueError):
        SliceSet([])
