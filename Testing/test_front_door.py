"""What a newcomer reads first: the command line's help, its error lines, the Python API's messages, and the
provenance a ``.seg.nrrd`` carries to other machines."""

from __future__ import annotations

import ast
import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import PROJECT_ROOT
from RMAMambaSegmentationLib import segment_image
from RMAMambaSegmentationLib.cli import build_parser, main
from RMAMambaSegmentationLib.cli.segment_command import intensity_from_args
from RMAMambaSegmentationLib.errors import InvalidImageError
from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.training.recipes import recipe_settings

LIBRARY = PROJECT_ROOT / "RMAMambaSegmentation" / "RMAMambaSegmentationLib"


def sub_parser(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


def option(parser, flag: str):
    return next(a for a in parser._actions if flag in a.option_strings)


def words(text: str) -> str:
    return " ".join(text.split())


def shown(value: object) -> str:
    """A recipe value as the help prints it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ help texts
def test_train_help_gives_each_recipe_default_from_the_recipe_tables():
    train = sub_parser("train")
    scratch, scratch_unet, paper = (recipe_settings("scratch", "T"), recipe_settings("scratch", "UNET"),
                                    recipe_settings("paper", "T"))
    for key in scratch:
        action = next(a for a in train._actions if a.dest == key)
        assert action.default is None, key  # left unset, so the recipe fills it
        help_text = words(action.help)
        assert "default from the recipe: scratch" in help_text, key
        assert f"paper {shown(paper[key])}" in help_text, (key, help_text)
        assert shown(scratch[key]) in help_text and shown(scratch_unet[key]) in help_text, (key, help_text)
    # the augmentations not in the paper are on in the default (scratch) recipe: no "(default 0)" any more
    assert "(default 0)" not in option(train, "--gamma-p").help and "scratch 0.5" in option(train, "--gamma-p").help
    group_notes = [words(group.description or "") for group in train._action_groups]
    assert any("a value given on the command line overrides the recipe" in note for note in group_notes)


def test_segment_help_names_the_default_preset_and_separates_modality_from_preset():
    segment = sub_parser("segment")
    modality, intensity = option(segment, "--modality"), option(segment, "--intensity")
    assert modality.metavar == "{MRI,CT}" and intensity.metavar == "{MRI,MRI-tissue,CT}"
    assert "Default: the model card's preset, else MRI" in words(modality.help)
    assert "default: the model card's, MRI-tissue for the default weights; else MRI" in words(intensity.help)


@pytest.mark.parametrize("command", ["segment", "benchmark"])
def test_device_help_lists_the_apple_gpu(command):
    assert "mps" in option(sub_parser(command), "--device").help


def parsed(*argv: str):
    return build_parser().parse_args(["segment", "x.nii.gz", "-o", "out", *argv])


def test_modality_takes_modalities_and_intensity_the_preset(caplog):
    assert intensity_from_args(parsed()) is None
    assert intensity_from_args(parsed("--modality", "mr")) == "MRI"  # the card's preset for MRI
    assert intensity_from_args(parsed("--modality", "CT")) == "CT"
    assert intensity_from_args(parsed("--intensity", "mri-tissue")) == "MRI-tissue"
    assert intensity_from_args(parsed("--intensity", "MRI")) == IntensityPreset.mri()  # the percentile preset
    assert intensity_from_args(parsed("--modality", "MRI", "--intensity", "MRI-tissue")) == "MRI-tissue"
    assert intensity_from_args(parsed("--intensity", "CT", "--window", "-100", "200")) == IntensityPreset.ct(-100, 200)
    with pytest.raises(ValueError, match="--intensity CT is a preset for CT; it contradicts --modality MRI"):
        intensity_from_args(parsed("--modality", "MRI", "--intensity", "CT"))
    with pytest.raises(ValueError, match="--percentiles is for the MRI preset; it contradicts --intensity MRI-tissue"):
        intensity_from_args(parsed("--intensity", "MRI-tissue", "--percentiles", "1", "99"))
    with pytest.raises(SystemExit):
        parsed("--intensity", "PET")
    with caplog.at_level(logging.WARNING):  # the earlier spelling still works, with a word about the new one
        assert intensity_from_args(parsed("--modality", "MRI-tissue")) == "MRI-tissue"
    assert "read as --intensity MRI-tissue" in caplog.text


# ------------------------------------------------------------------ evaluate
def write_mask(path: Path, slices: int = 4) -> Path:
    mask = np.zeros((slices, 12, 12), np.uint8)
    mask[1:3, 3:9, 4:8] = 1
    sitk.WriteImage(sitk.GetImageFromArray(mask), str(path))
    return path


def test_unpaired_files_name_the_option_on_the_command_line_only(tmp_path, caplog):
    from RMAMambaSegmentationLib.evaluation.evaluate import UnpairedFilesError, evaluate

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    for case in ("a", "b"):
        write_mask(pred / f"{case}_liver.nii.gz")
        write_mask(ref / f"{case}_seg.nii.gz")
    write_mask(pred / "c_liver.nii.gz")
    with pytest.raises(UnpairedFilesError) as raised:
        evaluate(pred, ref, per_slice=False)
    assert "c_liver.nii.gz" in str(raised.value) and "--" not in str(raised.value)
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", str(pred), str(ref), "--no-per-slice"]) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "1 prediction(s) without a reference: c_liver.nii.gz" in line and "add --ignore-unpaired" in line
    assert main(["evaluate", str(pred), str(ref), "--no-per-slice", "--ignore-unpaired"]) == 0


# ------------------------------------------------------------------ Python API messages
def test_a_file_name_instead_of_an_image_says_to_read_it_first():
    for given in ("scan.nii.gz", Path("/data/scan.nrrd")):
        with pytest.raises(InvalidImageError, match=r"read it first, e\.g\. image = SimpleITK\.ReadImage\("):
            segment_image(given)


def _message_strings(tree: ast.AST):
    """String pieces of the messages a module raises or logs: exception arguments, logger and warnings calls."""
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, ast.Raise) and node.exc is not None:
            parts = [node.exc]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "debug", "info", "warning", "error", "exception", "critical", "warn"):
            parts = list(node.args)
        for part in parts:
            for leaf in ast.walk(part):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    yield leaf.lineno, leaf.value


def test_library_messages_name_no_command_line_flags():
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        relative = path.relative_to(LIBRARY)
        if relative.parts[0] == "cli" or relative == Path("worker", "server.py"):  # command lines of their own
            continue
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if re.search(r"(?<![\w-])--[a-z]", text):
                found.append(f"{relative}:{line}: {text!r}")
    assert found == []


def test_the_cpu_fall_back_warning_is_given_once_per_process(caplog):
    from RMAMambaSegmentationLib.runtime.devices import resolve_device

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing falls back")
    with caplog.at_level(logging.DEBUG, logger="RMAMambaSegmentationLib.runtime.devices"):
        for _ in range(3):
            assert resolve_device("cuda") == torch.device("cpu")
    levels = [r.levelno for r in caplog.records if "CUDA was asked for" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


# ------------------------------------------------------------------ benchmark
def test_benchmark_says_it_times_the_slow_reference_rows_and_shows_progress(monkeypatch, capsys):
    from RMAMambaSegmentationLib.benchmark import speed

    timed = []
    monkeypatch.setattr(speed, "matmul_gflops", lambda device: 100.0)
    monkeypatch.setattr(speed, "build_model", lambda name: torch.nn.Identity())
    monkeypatch.setattr(torch.nn.Identity, "set_scan_backend", lambda self, scan: timed.append(scan), raising=False)
    monkeypatch.setattr(speed, "seconds_per_call", lambda call, device, repeats=3: 0.01)
    argv = ["benchmark", "--variants", "T", "--batch", "1", "--size", "32", "--repeats", "1", "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "includes the sequential-scan reference rows, the slow part; --no-reference skips them" in err
    progress = [line for line in err.splitlines() if " timing " in line]
    assert [re.sub(r"^\[\s*\d+ s\] ", "", line) for line in progress] == [
        "timing RMA-Mamba-T batch 1 scan auto ...",
        "timing RMA-Mamba-T batch 1 scan reference (sequential reference, slow; --no-reference skips it) ...",
    ]
    assert timed == ["auto", "reference"]
    assert main([*argv, "--no-reference"]) == 0
    err = capsys.readouterr().err
    assert "reference" not in err and "timing RMA-Mamba-T batch 1 scan auto ..." in err
    assert option(sub_parser("benchmark"), "--no-reference").help.startswith("skip the sequential-scan reference")


# ------------------------------------------------------------------ provenance in .seg.nrrd
def test_seg_nrrd_records_the_weights_file_name_and_sha256_not_a_local_path(tiny_t_weights, tmp_path,
                                                                          one_torch_thread):
    from RMAMambaSegmentationLib.batch.segment_files import segment_files
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256

    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(0, 800, (3, 40, 40)).astype(np.int16))
    image.SetSpacing((1.5, 1.5, 4.0))
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(source))
    rows = segment_files([source], tmp_path / "out", weights=str(tiny_t_weights), device="cpu", overlay=False)
    assert rows[0]["status"] == "ok", rows[0]["message"]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "out" / "case.seg.nrrd"))
    reader.ReadImageInformation()
    header = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    tags = dict(item.split(":", 1) for item in header["Segment0_Tags"].split("|") if item)
    assert tags["RMAMamba.WeightsFile"] == "rmamamba_t_tiny.pt"
    assert tags["RMAMamba.WeightsSHA256"] == file_sha256(tiny_t_weights)
    assert not any(str(tiny_t_weights.parent) in value for value in header.values())


def test_provenance_names_weights_by_file_name_on_every_platform():
    from RMAMambaSegmentationLib.inference.provenance import weights_file_name

    assert weights_file_name("/home/me/weights/rmamamba_t.pt") == "rmamamba_t.pt"
    assert weights_file_name(Path("relative/dir/w.pth")) == "w.pth"
    assert weights_file_name(r"C:\Users\me\w.pt") == "w.pt"
    assert weights_file_name(None) is None and weights_file_name("") is None


def test_benchmark_progress_writes_one_flushed_line_per_configuration():
    """The benchmark's progress writes where it is told (stderr by default), one flushed line per configuration."""
    from RMAMambaSegmentationLib.cli.benchmark_command import Progress

    stream = io.StringIO()
    progress = Progress(stream)
    progress("SRMA-Mamba 32x32x16 batch 1 scan reference")
    assert stream.getvalue().endswith("timing SRMA-Mamba 32x32x16 batch 1 scan reference (sequential reference, "
                                      "slow; --no-reference skips it) ...\n")
