"""``check_image_file`` on every format SimpleITK writes, intact and damaged (copies of the bundled example)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib.errors import InputFileError, InvalidImageError
from RMAMambaSegmentationLib.files.image_io import read_image
from RMAMambaSegmentationLib.files.integrity import check_image_file

EXAMPLE = PROJECT_ROOT / "Resources" / "Example" / "chaos_mr_t2spir_20_image.nii.gz"
#: (file name, compressed, name of the file holding the voxels)
FORMATS = [
    ("a.nii.gz", True, "a.nii.gz"), ("a.nii", False, "a.nii"), ("a.nrrd", False, "a.nrrd"),
    ("a.nrrd", True, "a.nrrd"), ("a.mha", False, "a.mha"), ("a.mha", True, "a.mha"),
    ("a.nhdr", False, "a.raw"), ("a.nhdr", True, "a.raw.gz"), ("a.mhd", False, "a.raw"), ("a.mhd", True, "a.zraw"),
]  # fmt: skip


@pytest.fixture(scope="module")
def example() -> sitk.Image:
    return sitk.ReadImage(str(EXAMPLE))


@pytest.mark.parametrize(("name", "compressed", "data_file"), FORMATS,
                         ids=[f"{n}{'-compressed' if c else ''}" for n, c, _ in FORMATS])
def test_intact_file_passes_and_a_cut_one_fails(tmp_path, example, name, compressed, data_file):
    path = tmp_path / name
    sitk.WriteImage(example, str(path), useCompression=compressed)
    check_image_file(path)
    data = tmp_path / data_file
    content = data.read_bytes()
    data.write_bytes(content[: int(0.6 * len(content))])
    expected = "compressed data end early" if compressed else "bytes of voxel data its header announces"
    with pytest.raises(InputFileError, match=expected):
        read_image(path)


def test_corrupt_gzip_checksum_fails(tmp_path):
    content = bytearray(EXAMPLE.read_bytes())
    content[len(content) // 2] ^= 0x55
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(content))
    with pytest.raises(InputFileError, match="compressed data are corrupt"):
        read_image(path)


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nii", "nan.nrrd", "nan.mha"])
def test_nan_voxels_are_refused_in_every_format(tmp_path, example, name):
    voxels = sitk.GetArrayFromImage(example).astype(np.float32)
    voxels[3, 4, 5] = np.nan
    image = sitk.GetImageFromArray(voxels)
    image.CopyInformation(example)
    sitk.WriteImage(image, str(tmp_path / name))
    with pytest.raises(InvalidImageError, match="1 NaN or infinite voxels"):
        read_image(tmp_path / name)


def test_files_it_does_not_parse_are_left_to_simpleitk(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(b"not an image at all")
    check_image_file(text)  # SimpleITK says it cannot read it
    with pytest.raises(InputFileError, match="cannot read"):
        read_image(text)
