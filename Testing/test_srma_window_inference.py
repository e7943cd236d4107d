"""SRMA-Mamba's 3D sliding-window inference: windows, Gaussian blending, padding, progress/cancel, and the same
mask in patient space for permuted or flipped copies of a real MR volume."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from srma_seeded import seeded_srma

from conftest import DATA
from RMAMambaSegmentationLib import registry, segment_image
from RMAMambaSegmentationLib.errors import SegmentationCancelledError
from RMAMambaSegmentationLib.imaging.orientation import AxialReorientation
from RMAMambaSegmentationLib.inference.windows import (
    from_network_axes,
    predict_logits,
    to_network_axes,
    window_starts,
    zscore_nonzero,
)
from RMAMambaSegmentationLib.weights.model_card import ModelCard

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHAOS_19 = DATA / "chaos_mr_t2spir" / "images" / "chaos_mr_t2spir_19_image.nii.gz"
SMALL_WINDOW = (32, 32, 16)


class ConstantLogits(torch.nn.Module):
    """Returns the same logit everywhere and counts its calls."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value, self.calls = value, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full_like(x, self.value)


def test_window_starts_cover_each_axis() -> None:
    assert window_starts(100, 32, 0.25) == [0, 24, 48, 68]
    assert window_starts(64, 32, 0.0) == [0, 32]
    assert window_starts(32, 32, 0.25) == [0]
    assert window_starts(224 * 2, 224, 0.25) == [0, 168, 224]


@pytest.mark.parametrize("shape", [(40, 50, 20), (10, 20, 8), (32, 32, 16)])
def test_gaussian_blend_of_a_constant_is_that_constant(shape) -> None:
    """Weights normalise exactly, whether the volume needs several windows, padding, or exactly one window."""
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    model = ConstantLogits(2.5)
    logits = predict_logits(volume, model, torch.device("cpu"), window=SMALL_WINDOW, overlap=0.25)
    assert logits.shape == shape and logits.dtype == np.float32
    np.testing.assert_allclose(logits, 2.5, rtol=1e-5)
    expected = np.prod([len(window_starts(max(shape[a], SMALL_WINDOW[a]), SMALL_WINDOW[a], 0.25)) for a in range(3)])
    assert model.calls == expected


def test_progress_per_window_and_cancel_between_windows() -> None:
    volume = np.ones((64, 64, 16), dtype=np.float32)
    messages = []
    predict_logits(volume, ConstantLogits(0.0), torch.device("cpu"), window=SMALL_WINDOW, overlap=0.0,
                   progress=lambda fraction, message: messages.append(message))
    assert messages == [f"windows {n}/4" for n in range(1, 5)]
    model = ConstantLogits(0.0)
    with pytest.raises(SegmentationCancelledError):
        predict_logits(volume, model, torch.device("cpu"), window=SMALL_WINDOW, overlap=0.0,
                       cancel=lambda: model.calls >= 2)
    assert model.calls == 2


def test_zscore_over_nonzero_voxels() -> None:
    volume = np.array([[[0.0, 2.0], [4.0, 0.0]], [[6.0, 8.0], [0.0, 0.0]]], dtype=np.float32)
    normalised, mean, std = zscore_nonzero(volume)
    values = np.array([2.0, 4.0, 6.0, 8.0])
    assert mean == pytest.approx(values.mean()) and std == pytest.approx(values.std())
    assert np.all(normalised[volume == 0] == 0)
    np.testing.assert_allclose(normalised[volume != 0], (values - values.mean()) / values.std(), rtol=1e-6)


def test_network_axes_point_to_left_posterior_superior() -> None:
    """(k, j, i) array of an RAS-stored image (direction diag(-1, -1, 1)) -> network (i->L, j->P, k->S)."""
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (k, j, i)
    reorientation = AxialReorientation.from_direction(np.diag([-1.0, -1.0, 1.0]))
    volume = to_network_axes(array, reorientation)
    assert volume.shape == (4, 3, 2)
    assert volume[0, 0, 0] == array[0, -1, -1]  # the most right-anterior-inferior voxel comes first
    assert np.array_equal(from_network_axes(volume, reorientation), array)


def test_registry_entry_and_card_overrides() -> None:
    entry = registry.entry("srma-mamba")
    assert (entry.inference, entry.channels, entry.window, entry.overlap) == ("window-3d", 1, (224, 224, 64), 0.25)
    assert registry.entry("RMA-Mamba-S").inference == "slice-2d"
    card = ModelCard(variant="SRMA", inference="window-3d", window=(64, 64, 32), overlap=0.5, threshold=0.4)
    custom = registry.entry_for("SRMA", card)
    assert (custom.window, custom.overlap, custom.threshold) == ((64, 64, 32), 0.5, 0.4)
    assert registry.entry_for(None, ModelCard.from_dict(card.to_dict())) == custom
    with pytest.raises(ValueError, match="multiples of 16"):
        entry.with_overrides(window=(30, 32, 16))
    with pytest.raises(ValueError, match="unknown model"):
        registry.entry("U")


def _crop_of_chaos_19() -> sitk.Image:
    image = sitk.ReadImage(str(CHAOS_19), sitk.sitkFloat32)
    return image[64:128, 100:148, 4:28]  # i x j x k = 64 x 48 x 24 voxels over the liver


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return seeded_srma(0)


@pytest.mark.parametrize("copy_of", ["permuted", "flipped", "permuted_and_flipped"])
def test_permuted_or_flipped_copies_give_the_same_mask(model, copy_of: str) -> None:
    original = _crop_of_chaos_19()
    copy = original
    if "permuted" in copy_of:
        copy = sitk.PermuteAxes(copy, [2, 0, 1])
    if "flipped" in copy_of:
        copy = sitk.Flip(copy, [True, False, True])
    back = sitk.Resample(copy, original, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))  # same voxels, same places
    assert sitk.GetArrayFromImage(copy).shape != sitk.GetArrayFromImage(original).shape or "flipped" in copy_of

    options = {"model": model, "device": "cpu", "window_size": SMALL_WINDOW, "overlap": 0.25, "postprocess": False}
    reference = segment_image(original, **options)
    result = segment_image(copy, **options)
    mask = sitk.GetArrayFromImage(reference.mask)
    assert 0.01 < mask.mean() < 0.99  # a real decision on this volume, not a constant
    mask_back = sitk.Resample(result.mask, original, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(mask_back), mask)
    probability_back = sitk.Resample(result.probability, original, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(probability_back), sitk.GetArrayFromImage(reference.probability))
    assert result.volume_ml == pytest.approx(reference.volume_ml)
    assert result.provenance.variant == "SRMA"


class FailsOnceOutOfMemory(torch.nn.Module):
    """Raises torch's out-of-memory error on its first call, then returns a position-dependent logit."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x * 2.0 - 1.0


def test_out_of_memory_repeats_the_window_with_what_the_handler_returns() -> None:
    volume = np.random.default_rng(1).random((40, 40, 20), dtype=np.float32)
    expected = predict_logits(volume, FailsOnceOutOfMemory().requires_grad_(False), torch.device("cpu"),
                              window=SMALL_WINDOW, overlap=0.25, on_out_of_memory=lambda b, e: (1, torch.device("cpu")))
    handled = []
    model = FailsOnceOutOfMemory()
    logits = predict_logits(volume, model, torch.device("cpu"), window=SMALL_WINDOW, overlap=0.25,
                            on_out_of_memory=lambda batch, error: handled.append((batch, str(error))) or (1, "cpu"))
    assert handled == [(1, "CUDA out of memory. Tried to allocate 2.00 GiB")]
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_allclose(logits, volume * 2.0 - 1.0, rtol=1e-5, atol=1e-6)  # blend of x itself
    with pytest.raises(torch.OutOfMemoryError):  # without a handler the error propagates
        predict_logits(volume, FailsOnceOutOfMemory(), torch.device("cpu"), window=SMALL_WINDOW, overlap=0.25)
