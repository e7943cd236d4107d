"""Intensity presets, network input/output resizing, model cards and mask post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from conftest import DATA, TOTALSEG
from RMAMambaSegmentationLib.errors import CheckpointError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset, apply_bounds, normalize_intensities
from RMAMambaSegmentationLib.imaging.postprocessing import fill_holes_slicewise, largest_component, postprocess_mask
from RMAMambaSegmentationLib.imaging.preprocessing import (
    context_network_input,
    resize_logits_back,
    slices_to_network_input,
)
from RMAMambaSegmentationLib.inference.scan_check import scan_warnings
from RMAMambaSegmentationLib.inference.slices import resolve_intensity
from RMAMambaSegmentationLib.weights.model_card import ModelCard, model_card_path, read_model_card, write_model_card

# --- intensities ---------------------------------------------------------------------------------------------------


def test_ct_window_maps_hounsfield_units_linearly():
    hu = np.array([-1000, -150, -50, 50, 250, 3000], dtype=np.int16)
    expected = np.array([0.0, 0.0, 0.25, 0.5, 1.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(normalize_intensities(hu, "CT"), expected, atol=1e-7)
    assert normalize_intensities(hu, "CT").dtype == np.float32


def test_mri_percentiles_on_the_real_mr_volume():
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz")))
    lo, hi = np.percentile(array, [0.5, 99.5])
    out = normalize_intensities(array, IntensityPreset.mri())
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, np.clip((array - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert IntensityPreset.mri().bounds(array) == pytest.approx((lo, hi))


def test_presets_by_name_and_round_trip():
    assert IntensityPreset.from_name("mr") == IntensityPreset.mri(0.5, 99.5)
    assert IntensityPreset.from_name("CT") == IntensityPreset.ct(-150, 250)
    custom = IntensityPreset.ct(-100, 200)
    assert IntensityPreset.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom
    with pytest.raises(ValueError, match="unknown intensity preset"):
        IntensityPreset.from_name("PET")
    with pytest.raises(ValueError, match="below"):
        IntensityPreset.ct(250, -150)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        IntensityPreset.mri(-1, 99)


def test_mri_tissue_keeps_a_dark_liver_grey_beside_a_fluid_filled_stomach():
    """CHAOS subject 36: a stomach full of fluid owns the top percentiles, so ``MRI`` maps the liver to ~0.22
    (other subjects: 0.34-0.53); ``MRI-tissue`` scales by the body's median instead and brings it back."""
    folder = DATA / "chaos_mr_t2spir"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "images" / "chaos_mr_t2spir_36_image.nii.gz")))
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "liver_masks" / "chaos_mr_t2spir_36_liver.nii.gz")))
    liver = liver.astype(bool)
    tissue = IntensityPreset.from_name("MRI-tissue")
    assert tissue == IntensityPreset.mri_tissue(0.5, 4.0) and tissue.name == "MRI" and tissue.kind == "tissue"
    assert (tissue.label, IntensityPreset.mri().label, IntensityPreset.ct().label) == ("MRI-tissue", "MRI", "CT")

    lo, top = np.percentile(array, [0.5, 99.5])
    body_median = np.median(array[array > lo + 0.05 * (top - lo)])
    assert tissue.bounds(array) == pytest.approx((lo, lo + 4.0 * (body_median - lo)))
    by_tissue = normalize_intensities(array, tissue)
    assert by_tissue.dtype == np.float32 and by_tissue.min() == 0.0 and by_tissue.max() == 1.0
    assert np.median(normalize_intensities(array, "MRI")[liver]) < 0.25
    assert 0.35 < np.median(by_tissue[liver]) < 0.5


def test_mri_tissue_presets_validate_and_round_trip():
    custom = IntensityPreset.mri_tissue(1.0, 3.0)
    assert IntensityPreset.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom
    with pytest.raises(ValueError, match="multiple must be positive"):
        IntensityPreset.mri_tissue(0.5, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        IntensityPreset.mri_tissue(100.0, 4.0)
    with pytest.raises(ValueError, match="expected one of percentile, window, tissue"):
        IntensityPreset("MRI", "zscore", 0.0, 1.0)
    np.testing.assert_array_equal(normalize_intensities(np.full((3, 4, 4), 7.0), "MRI-tissue"), np.zeros((3, 4, 4)))


def test_a_modality_name_means_the_cards_preset_and_a_preset_name_that_preset():
    tissue_card = ModelCard(intensity=IntensityPreset.mri_tissue(1.0, 3.0))
    percentile_card = ModelCard(intensity=IntensityPreset.mri(1.0, 99.0))
    assert resolve_intensity(None, tissue_card) == IntensityPreset.mri_tissue(1.0, 3.0)
    assert resolve_intensity("MRI", tissue_card) == IntensityPreset.mri_tissue(1.0, 3.0)
    assert resolve_intensity("mri-tissue", tissue_card) == IntensityPreset.mri_tissue(1.0, 3.0)
    assert resolve_intensity("MR", percentile_card) == IntensityPreset.mri(1.0, 99.0)
    assert resolve_intensity(None, None) == IntensityPreset.mri()
    # A preset other than the card's is used as asked, and the scan check says so (a warning of the run).
    mr_like = np.linspace(0.0, 900.0, 4 * 8 * 8).reshape(4, 8, 8)
    assert scan_warnings(mr_like, IntensityPreset.mri_tissue(1.0, 3.0), tissue_card) == []
    tissue = resolve_intensity("MRI-tissue", percentile_card)
    assert tissue == IntensityPreset.mri_tissue()
    (warning,) = scan_warnings(mr_like, tissue, percentile_card)
    assert warning.startswith(f"{tissue.label} intensity preset with weights trained with "
                              f"{percentile_card.intensity.label}")
    ct = resolve_intensity("CT", tissue_card)
    assert ct == IntensityPreset.ct()
    assert any(w.startswith(f"{ct.label} intensity preset with weights trained with {tissue_card.intensity.label}")
               for w in scan_warnings(mr_like, ct, tissue_card))


def test_apply_bounds_constant_range_gives_zeros():
    np.testing.assert_array_equal(apply_bounds(np.ones((2, 2)), 1.0, 1.0), np.zeros((2, 2), np.float32))


# --- network input / output ----------------------------------------------------------------------------------------


def test_slices_become_three_identical_channels_at_network_size():
    slices = np.random.default_rng(1).random((3, 91, 117)).astype(np.float32)
    tensor = slices_to_network_input(slices)
    assert tensor.shape == (3, 3, 256, 256) and tensor.dtype == torch.float32
    expected = F.interpolate(torch.from_numpy(slices)[:, None], size=(256, 256), mode="bilinear", align_corners=False)
    for channel in range(3):
        torch.testing.assert_close(tensor[:, channel : channel + 1], expected, rtol=0, atol=0)


def test_bilinear_half_pixel_resize_matches_hand_computed_values():
    """2x upsampling with half-pixel centres: [0, 1] -> [0, 0.25, 0.75, 1] (OpenCV INTER_LINEAR convention)."""
    row = slices_to_network_input(np.array([[[0.0, 1.0], [0.0, 1.0]]], dtype=np.float32), (2, 4))
    torch.testing.assert_close(row[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_logits_are_resized_back_bilinearly():
    logits = torch.randn(2, 1, 256, 256)
    back = resize_logits_back(logits, (91, 117))
    assert back.shape == (2, 1, 91, 117)
    torch.testing.assert_close(back, F.interpolate(logits, size=(91, 117), mode="bilinear", align_corners=False))
    assert resize_logits_back(logits, (256, 256)) is logits


# --- model card ----------------------------------------------------------------------------------------------------


def test_model_card_sits_beside_the_weights_and_round_trips(tmp_path):
    weights = tmp_path / "best.pt"
    assert model_card_path(weights) == tmp_path / "best.json"
    assert read_model_card(weights) is None
    card = ModelCard(variant="S", intensity=IntensityPreset.ct(-100, 300), input_size=(224, 224),
                     training={"dataset": "CHAOS CT", "epochs": 3}, licence="CC BY-NC-SA 4.0")
    write_model_card(weights, card)
    assert read_model_card(weights) == card
    data = json.loads((tmp_path / "best.json").read_text())
    assert data["intensity"] == {"name": "CT", "kind": "window", "low": -100.0, "high": 300.0}
    assert data["input_size"] == [224, 224]


def test_malformed_model_card_is_a_checkpoint_error(tmp_path):
    (tmp_path / "w.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model card"):
        read_model_card(tmp_path / "w.pt")


# --- post-processing -----------------------------------------------------------------------------------------------


def test_largest_component_keeps_only_the_biggest_blob():
    mask = np.zeros((6, 20, 20), np.uint8)
    mask[1:5, 2:10, 2:10] = 1  # 256 voxels
    mask[2:4, 14:17, 14:17] = 1  # 18 voxels
    mask[0, 19, 19] = 1
    expected = np.zeros_like(mask)
    expected[1:5, 2:10, 2:10] = 1
    np.testing.assert_array_equal(largest_component(mask), expected)
    assert not largest_component(np.zeros((3, 4, 5))).any()


def test_holes_are_filled_per_slice_but_open_cavities_are_not():
    stack = np.zeros((3, 12, 12), np.uint8)
    stack[0, 2:9, 2:9] = 1
    stack[0, 4:6, 4:6] = 0  # closed hole in slice 0: filled
    stack[1, 0:6, 0:6] = 1
    stack[1, 0:3, 0:3] = 0  # notch open to the slice border: stays
    filled = fill_holes_slicewise(stack)
    expected = stack.copy()
    expected[0, 4:6, 4:6] = 1
    np.testing.assert_array_equal(filled, expected)
    # a tunnel along the slice axis is a hole in every slice (filled), unless it opens to the slice border
    tunnel = np.ones((4, 5, 5), np.uint8)
    tunnel[:, 2, 2] = 0
    np.testing.assert_array_equal(fill_holes_slicewise(tunnel), np.ones_like(tunnel))
    tunnel[:, 0, 2] = 0
    tunnel[:, 1, 2] = 0
    np.testing.assert_array_equal(fill_holes_slicewise(tunnel), tunnel)


def test_postprocess_removes_a_stray_blob_and_fills_a_hole_in_the_reference_liver():
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_seg.nii.gz")))
    liver = (labels == 5).astype(np.uint8)
    cleaned = postprocess_mask(liver)
    assert cleaned.dtype == np.uint8 and set(np.unique(cleaned)) <= {0, 1}
    dice = 2 * np.count_nonzero(cleaned & liver) / (np.count_nonzero(cleaned) + np.count_nonzero(liver))
    assert dice > 0.99
    # a false positive far from the liver and a closed hole inside one of its slices: what post-processing is for
    noisy = liver.copy()
    k = int(np.flatnonzero(liver.any(axis=(1, 2))).mean())
    interior = [(j, i) for j, i in zip(*np.nonzero(liver[k])) if liver[k, j - 3 : j + 4, i - 3 : i + 4].all()]
    j, i = interior[len(interior) // 2]
    noisy[k, j - 1 : j + 2, i - 1 : i + 2] = 0
    far = np.argwhere(~liver.any(axis=0))[0]  # a column the liver never reaches
    stray = (slice(k - 1, k + 2), slice(far[0], far[0] + 1), slice(far[1], far[1] + 1))
    noisy[stray] = 1
    assert not np.array_equal(noisy, liver)
    out = postprocess_mask(noisy)
    assert not out[stray].any(), "the stray blob must be removed"
    assert out[k, j - 1 : j + 2, i - 1 : i + 2].all(), "the hole must be filled"
    np.testing.assert_array_equal(out, cleaned)


def test_context_input_stacks_each_slice_between_its_neighbours():
    rng = np.random.default_rng(3)
    slices = rng.random((6, 40, 30), dtype=np.float32)
    tensor = context_network_input(slices, (64, 48))
    single = slices_to_network_input(slices, (64, 48))[:, 0]
    assert tensor.shape == (4, 3, 64, 48)
    for channel in range(3):
        assert torch.equal(tensor[:, channel], single[channel:channel + 4])
    with pytest.raises(ValueError, match="N \\+ 2"):
        context_network_input(slices[:2])
