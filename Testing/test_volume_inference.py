"""Whole-volume inference in patient space on the TotalSegmentator CT and MR examples.

The stand-in network returns its own input as logits, centred on the threshold: logit = input - 0.5, so that the
0.5 probability threshold falls where the normalised input crosses 0.5. (With logit = input exactly, every voxel
has a logit >= 0 and the smallest interpolation spill-over past the liver edge would count as liver.) Fed a
volume whose intensities are the reference liver mask, it must give that mask back through the whole pipeline:
reorientation, intensity mapping, resizing to 256x256 and back, threshold, post-processing, and back to the input's
array order and geometry.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TOTALSEG
from RMAMambaSegmentationLib import SegmentationResult, segment_image
from RMAMambaSegmentationLib.errors import (
    CheckpointError,
    InvalidImageError,
    SegmentationCancelledError,
    WeightsNotFoundError,
)
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.imaging.orientation import LPS_TO_RAS, AxialReorientation
from RMAMambaSegmentationLib.inference.pipeline import segment_array
from RMAMambaSegmentationLib.mrml.volume_node import lps_geometry
from RMAMambaSegmentationLib.network.build import build_model
from RMAMambaSegmentationLib.runtime.devices import auto_batch_size, resolve_device
from RMAMambaSegmentationLib.weights.model_card import ModelCard, read_model_card, write_model_card
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

CASES = {"CT": ("example_ct_sm.nii.gz", "example_seg.nii.gz"), "MR": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz")}
LIVER = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class EchoLogits(torch.nn.Module):
    """Stand-in network: its input (first channel) as logits, centred on the threshold; records input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
        return x[:, :1] - 0.5


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.fixture(scope="module", params=sorted(CASES))
def liver_volume(request) -> tuple[str, sitk.Image, np.ndarray]:
    """(modality, float32 image whose voxels are the reference liver mask 0/1, that mask)."""
    labels = sitk.ReadImage(str(TOTALSEG / CASES[request.param][1]))
    mask = (sitk.GetArrayFromImage(labels) == LIVER).astype(np.uint8)
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.CopyInformation(labels)
    return request.param, image, mask


def test_echo_model_returns_the_reference_liver_in_the_input_geometry(liver_volume):
    _, image, reference = liver_volume
    result = segment_image(image, model=EchoLogits(), device="cpu", intensity="MRI")
    assert isinstance(result, SegmentationResult)
    assert _geometry(result.mask) == _geometry(image)
    assert _geometry(result.probability) == _geometry(image)
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    assert result.probability.GetPixelID() == sitk.sitkFloat32
    mask = sitk.GetArrayFromImage(result.mask)
    assert set(np.unique(mask)) <= {0, 1}
    assert _dice(mask, reference) >= 0.97
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    assert result.volume_ml == pytest.approx(np.count_nonzero(mask) * voxel_ml)
    probability = sitk.GetArrayFromImage(result.probability)
    assert probability.min() >= 0.0 and probability.max() <= 1.0


def test_without_postprocessing_the_echo_is_exact(liver_volume):
    """Threshold only: the resize to 256x256 and back loses nothing on these volumes."""
    _, image, reference = liver_volume
    result = segment_image(image, model=EchoLogits(), device="cpu", postprocess=False, intensity="MRI")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask), reference)


def _reordered_copy(image: sitk.Image, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> sitk.Image:
    """The same patient-space content with array axes permuted (new index axis a = old axis perm[a]) and flipped."""
    array = sitk.GetArrayFromImage(image)  # (k, j, i)
    size = image.GetSize()
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    old_axes_kji = [2 - perm[a] for a in (2, 1, 0)]
    new = np.transpose(array, old_axes_kji)
    start_index = [0, 0, 0]
    new_direction = np.zeros((3, 3))
    for a in range(3):
        sign = 1.0
        if flips[a]:
            new = np.flip(new, axis=2 - a)
            start_index[perm[a]] = size[perm[a]] - 1
            sign = -1.0
        new_direction[:, a] = sign * direction[:, perm[a]]
    copy = sitk.GetImageFromArray(np.ascontiguousarray(new))
    copy.SetSpacing([image.GetSpacing()[perm[a]] for a in range(3)])
    copy.SetDirection(new_direction.ravel().tolist())
    copy.SetOrigin(image.TransformIndexToPhysicalPoint(start_index))
    return copy


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` resampled onto ``reference``'s grid (nearest neighbour; the grids coincide, so it is exact)."""
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor))


FLIPS = [(False, False, False), (True, False, False), (False, True, True), (True, True, False), (False, False, True),
         (True, True, True)]
REORDERINGS = [
    (perm, flips)
    for perm, flips in zip(itertools.permutations(range(3)), FLIPS)
]
assert len(REORDERINGS) == len(FLIPS) == 6


@pytest.mark.parametrize(("perm", "flips"), REORDERINGS)
def test_permuted_and_flipped_copies_give_the_same_mask_in_patient_space(liver_volume, perm, flips):
    _, image, _ = liver_volume
    copy = _reordered_copy(image, perm, flips)
    assert copy.GetDirection() != image.GetDirection() or perm == (0, 1, 2)
    np.testing.assert_array_equal(_on_grid(copy, image), sitk.GetArrayFromImage(image))  # same content
    expected = sitk.GetArrayFromImage(segment_image(image, model=EchoLogits(), device="cpu").mask)
    result = segment_image(copy, model=EchoLogits(), device="cpu")
    assert _geometry(result.mask) == _geometry(copy)
    np.testing.assert_array_equal(_on_grid(result.mask, image), expected)


class InputSpy(EchoLogits):
    """EchoLogits that also keeps the first channel of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x[:, 0].clone())
        return super().forward(x)


@pytest.mark.parametrize("modality", sorted(CASES))
def test_slices_reach_the_network_in_radiological_orientation(modality):
    """The CT (i -> patient right) and MR (i -> left) reference livers both reach the network on the image left,
    and slices arrive inferior to superior."""
    labels = sitk.ReadImage(str(TOTALSEG / CASES[modality][1]))
    liver = sitk.Cast(sitk.Equal(labels, LIVER), sitk.sitkFloat32)
    spy = InputSpy()
    segment_image(liver, model=spy, device="cpu", batch_size=64)
    seen = torch.cat(spy.inputs)
    columns = torch.nonzero(seen > 0.5)[:, 2].float()
    assert columns.mean() < 128
    # both fixtures store k inferior -> superior, so the slice with most liver must keep its index
    per_slice = (seen > 0.5).sum(dim=(1, 2))
    k_of_largest = int(per_slice.argmax())
    z_index = np.argmax((sitk.GetArrayViewFromImage(labels) == LIVER).sum(axis=(1, 2)))
    assert k_of_largest == z_index


def test_batch_size_does_not_change_the_result(liver_volume):
    _, image, _ = liver_volume
    model = EchoLogits()
    one = segment_image(image, model=model, device="cpu", batch_size=1, postprocess=False)
    assert {shape[0] for shape in model.shapes} == {1}
    model.shapes.clear()
    seven = segment_image(image, model=model, device="cpu", batch_size=7, postprocess=False)
    assert max(shape[0] for shape in model.shapes) == 7
    assert all(shape[1:] == (3, 256, 256) for shape in model.shapes)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one.probability), sitk.GetArrayFromImage(seven.probability))


def test_progress_and_cancel_between_batches():
    _, image, _ = _volume("MR")
    reports: list[tuple[float, str]] = []
    segment_image(image, model=EchoLogits(), device="cpu", batch_size=4,
                  progress=lambda f, m: reports.append((f, m)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any(m == "slices 20/20" for _, m in reports) and reports[-1][1].startswith("done")

    calls = []
    model = EchoLogits()
    with pytest.raises(SegmentationCancelledError):
        segment_image(image, model=model, device="cpu", batch_size=4, cancel=lambda: calls.append(1) or len(calls) > 2)
    assert len(model.shapes) == 1  # stopped after one batch


def _volume(modality: str) -> tuple[str, sitk.Image, np.ndarray]:
    labels = sitk.ReadImage(str(TOTALSEG / CASES[modality][1]))
    mask = (sitk.GetArrayFromImage(labels) == LIVER).astype(np.uint8)
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.CopyInformation(labels)
    return modality, image, mask


def test_array_entry_point_with_an_mrml_matrix_matches_segment_image():
    """What the Slicer logic does: (k, j, i) array + IJK-to-RAS matrix, no SimpleITK image."""
    _, image, _ = _volume("CT")
    ijk_to_ras = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    ijk_to_ras[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    spacing, _origin, lps_direction = lps_geometry(ijk_to_ras)
    np.testing.assert_allclose(spacing, image.GetSpacing())
    np.testing.assert_allclose(np.reshape(lps_direction, (3, 3)), direction)
    array = sitk.GetArrayFromImage(image)
    result = segment_array(array, spacing=spacing, direction=lps_direction, model=EchoLogits(), device="cpu")
    expected = segment_image(image, model=EchoLogits(), device="cpu")
    np.testing.assert_array_equal(result.mask, sitk.GetArrayFromImage(expected.mask))
    assert result.mask.shape == array.shape and result.volume_ml == pytest.approx(expected.volume_ml)


def test_oblique_volume_keeps_its_geometry_and_warns(caplog):
    _, image, reference = _volume("MR")
    rotation = np.asarray(sitk.VersorTransform((0, 0, 1), np.radians(15)).GetMatrix()).reshape(3, 3)
    oblique = sitk.Image(image)
    oblique.SetDirection((rotation @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    with caplog.at_level(logging.WARNING):
        result = segment_image(oblique, model=EchoLogits(), device="cpu", postprocess=False)
    assert any("oblique" in record.getMessage() for record in caplog.records)
    assert _geometry(result.mask) == _geometry(oblique)
    assert result.provenance.oblique_deg == pytest.approx(15.0, abs=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask), reference)


def test_model_card_sets_the_intensity_preset_and_input_size(tmp_path):
    """A CT window from the card: HU 100 maps to 0.625 > 0.5 (liver), HU 0 to 0.375 (not)."""
    array = np.zeros((3, 40, 50), np.int16)
    array[:, 10:30, 10:40] = 100
    image = sitk.GetImageFromArray(array)
    weights = tmp_path / "ct.pt"
    weights.write_bytes(b"stand-in")
    write_model_card(weights, ModelCard(intensity=IntensityPreset.ct(), input_size=(64, 96)))
    model = EchoLogits()
    result = segment_image(image, model=model, weights=weights, device="cpu", postprocess=False)
    assert result.provenance.intensity.name == "CT"
    assert model.shapes[0][2:] == (64, 96)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask), (array == 100).astype(np.uint8))
    assert result.weights_sha256 is not None and len(result.weights_sha256) == 64
    # an explicit preset wins over the card: MRI percentiles of this volume put HU 0 at 0 and HU 100 at 1
    explicit = segment_image(image, model=EchoLogits(), weights=weights, device="cpu", intensity="MRI")
    assert explicit.provenance.intensity.name == "MRI"


def test_real_network_on_a_small_volume_is_deterministic_on_cpu():
    """The real RMA-Mamba-T (seeded init) at a 64x64 input size (set by a card), twice: identical results."""
    torch.manual_seed(0)
    network = build_model("T")
    prepared = PreparedModel(network, torch.device("cpu"), card=ModelCard(input_size=(64, 64)))
    _, image, _ = _volume("MR")
    small = image[20:84, 10:74, 8:12]
    first = segment_image(small, model=prepared, batch_size=2)
    second = segment_image(small, model=prepared, batch_size=2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first.probability),
                                  sitk.GetArrayFromImage(second.probability))
    assert _geometry(first.mask) == _geometry(small)
    assert first.provenance.variant == "T"


# --- bad inputs ----------------------------------------------------------------------------------------------------


def _bad_images() -> dict[str, sitk.Image]:
    good = sitk.GetArrayFromImage(sitk.ReadImage(str(TOTALSEG / "example_mr_sm.nii.gz")))[:4].astype(np.float32)
    nan = good.copy()
    nan[1, 2, 3] = np.nan
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    return {
        "2D": sitk.GetImageFromArray(good[0]),
        "4D": sitk.JoinSeries([sitk.GetImageFromArray(good), sitk.GetImageFromArray(good)]),
        "RGB": sitk.GetImageFromArray(np.stack([good] * 3, axis=-1).astype(np.uint8), isVector=True),
        "NaN": sitk.GetImageFromArray(nan),
        "Inf": sitk.GetImageFromArray(inf),
        "constant": sitk.GetImageFromArray(np.full((4, 30, 30), 7, np.int16)),
        "single slice": sitk.GetImageFromArray(good[:1]),
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [("2D", "2D"), ("4D", "4D"), ("RGB", "components"), ("NaN", "NaN or infinite"), ("Inf", "NaN or infinite"),
     ("constant", "constant"), ("single slice", "single slice")],
)
def test_bad_images_are_refused_before_the_network_runs(kind, message):
    model = EchoLogits()
    with pytest.raises(InvalidImageError, match=message):
        segment_image(_bad_images()[kind], model=model, device="cpu")
    assert model.shapes == []


def test_bad_weights_are_refused(tmp_path):
    _, image, _ = _volume("MR")
    backbone = tmp_path / "vmamba.pth"
    torch.save({"model": {"patch_embed.0.weight": torch.zeros(2, 3), "layers.0.blocks.0.norm.weight": torch.ones(2)}},
               backbone)
    with pytest.raises(CheckpointError, match="VMamba backbone"):
        segment_image(image, weights=backbone, device="cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: it is a text file"):
        segment_image(image, weights=garbage, device="cpu")
    with pytest.raises(WeightsNotFoundError):
        segment_image(image, weights=tmp_path / "missing.pt", device="cpu")


def test_devices_fall_back_to_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert auto_batch_size(torch.device("cpu")) >= 1
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("quantum")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device("cuda") == torch.device("cpu")


def test_a_loaded_model_brings_its_weights_provenance(tmp_path):
    """A module from ``load_model`` passed as ``model=`` keeps its file's sha256 and model card (Slicer's path)."""
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256, load_model, save_checkpoint

    torch.manual_seed(1)
    weights = save_checkpoint(tmp_path / "t.pt", build_model("T"))
    write_model_card(weights, ModelCard(variant="T", intensity=IntensityPreset.ct(), input_size=(64, 64)))
    _, image, _ = _volume("MR")
    result = segment_image(image[20:84, 10:74, 8:10], model=load_model(weights), device="cpu")
    assert result.weights_sha256 == file_sha256(weights)
    assert result.provenance.weights_path == str(weights)
    assert result.provenance.intensity.name == "CT" and result.provenance.variant == "T"


class NextSliceLogits(torch.nn.Module):
    """Stand-in 2.5D network: the third channel (the next slice) as logits, centred on the threshold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 2:3] - 0.5


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_context_card_feeds_each_slice_with_its_neighbours(tmp_path, batch_size):
    """With ``context_slices`` 1 in the card, channel 2 holds the next axial slice (the last slice stands in
    beyond the volume), whatever the batch boundaries."""
    _, image, reference = _volume("MR")
    weights = tmp_path / "context.pt"
    weights.write_bytes(b"stand-in")
    write_model_card(weights, ModelCard(context_slices=1))
    result = segment_image(image, model=NextSliceLogits(), weights=weights, device="cpu", batch_size=batch_size,
                           postprocess=False)
    orientation = AxialReorientation.from_image(image)
    axial = orientation.to_axial(reference)
    shifted = axial[np.minimum(np.arange(1, axial.shape[0] + 1), axial.shape[0] - 1)]
    expected = orientation.from_axial(shifted)
    assert result.provenance.context_slices == 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask), expected)
    assert not np.array_equal(expected, reference)


def test_model_card_context_slices_round_trip_and_validation(tmp_path):
    weights = tmp_path / "w.pt"
    write_model_card(weights, ModelCard(context_slices=1))
    assert read_model_card(weights).context_slices == 1
    assert ModelCard.from_dict({}).context_slices == 0  # cards written before the field existed
    with pytest.raises(ValueError, match="context_slices"):
        ModelCard.from_dict({"context_slices": 2})
