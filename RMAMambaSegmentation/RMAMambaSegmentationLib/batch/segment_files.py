"""Segment many files into one output folder: the core of ``rmamamba segment`` and of the Slicer ``segmentFiles``.

For an input named NAME (file name without its image ending, or the DICOM folder's name) the outputs are:

* ``NAME_liver.nii.gz`` -- the uint8 0/1 mask in the input's grid (``NAME_liver.nrrd`` with ``mask_format="nrrd"``);
* ``NAME.seg.nrrd`` -- the same mask as a Slicer segmentation with one segment "Liver";
* ``NAME_probability.nii.gz`` -- float32 liver probability (only with ``probability_map=True``);
* ``NAME_overlay.png`` -- the mid-liver axial slice with the liver tinted (unless ``overlay=False``);
* one row per case in ``summary.csv`` (``summary_shard-I-of-N.csv`` for a shard, so that array jobs writing
  into one folder never write the same file).

Every case's files are written under temporary names and renamed at the end, so a failed or cancelled case leaves
nothing behind. A case whose outputs all exist is skipped (status ``skipped``) unless ``overwrite=True``; its earlier
summary row is kept, so re-running a partly finished batch resumes it. A case that has some outputs but lacks one
now asked for (``probability_map=True``, another mask format) is segmented again and only the missing files are
written (the row's message says which were kept). A bad input gets status ``error`` with a one-line message and
the other cases still run. Every ``ok`` row has a ``quality`` (``ok`` or ``check: reasons``, see :mod:`quality`) and
the verdict's measures (:data:`QUALITY_COLUMNS`); mismatches between the scan and the weights are in its ``message``,
and so is the hint of a ``check`` verdict (what probably went wrong) when no warning explains it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import SimpleITK as sitk
import torch

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import InputFileError, RMAMambaError, SegmentationCancelledError
from RMAMambaSegmentationLib.files.image_io import InputCase, expand_inputs, read_case
from RMAMambaSegmentationLib.files.overlay import write_overlay_png
from RMAMambaSegmentationLib.files.seg_nrrd import write_liver_seg_nrrd
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.inference.pipeline import prepare_run_model, segment_image
from RMAMambaSegmentationLib.inference.provenance import result_values
from RMAMambaSegmentationLib.inference.result import SegmentationResult
from RMAMambaSegmentationLib.inference.run_control import check_cancel
from RMAMambaSegmentationLib.weights.prepared_model import PreparedModel

logger = logging.getLogger(__name__)

MASK_FORMATS = ("nii.gz", "nrrd")
#: The quality verdict's measures, one column each (:mod:`quality`; ``liver_ml`` has its own column).
QUALITY_COLUMNS = ("uncertain_share", "outside_share", "components", "extent_mm", "liver_slices")
SUMMARY_COLUMNS = (
    "case", "status", "message", "quality", "liver_ml", "slices", "size", "spacing_mm", "device", "variant",
    "intensity", "weights_sha256", "seconds", "input", "mask", "segmentation", "probability", "overlay",
    *QUALITY_COLUMNS,
)  # fmt: skip
OK, SKIPPED, ERROR = "ok", "skipped", "error"
T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with 1 <= I <= N (shard I of N; ``1/4`` ... ``4/4``)."""
    try:
        index_text, count_text = str(text).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as error:
        raise ValueError(f"invalid shard {text!r}: expected I/N such as 2/8") from error
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"invalid shard {text!r}: I must be between 1 and N (e.g. 1/{max(count, 1)})")
    return index, count


def select_shard(cases: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Cases ``I-1, I-1+N, I-1+2N, ...`` of the list (every case for ``None``): shards split it without overlap."""
    if shard is None:
        return list(cases)
    index, count = shard
    return list(cases[index - 1 :: count])


def summary_path(output_dir: str | os.PathLike, shard: tuple[int, int] | None = None) -> Path:
    """``summary.csv``, or ``summary_shard-I-of-N.csv`` for a shard."""
    name = "summary.csv" if shard is None else f"summary_shard-{shard[0]}-of-{shard[1]}.csv"
    return Path(output_dir) / name


def case_outputs(
    name: str, output_dir: str | os.PathLike, *, mask_format: str = "nii.gz", probability_map: bool = False,
    overlay: bool = True,
) -> dict[str, Path]:
    """The files written for case ``name``, keyed by summary column."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {mask_format!r}: use one of {', '.join(MASK_FORMATS)}")
    folder = Path(output_dir)
    outputs = {"mask": folder / f"{name}_liver.{mask_format}", "segmentation": folder / f"{name}.seg.nrrd"}
    if probability_map:
        outputs["probability"] = folder / f"{name}_probability.{mask_format}"
    if overlay:
        outputs["overlay"] = folder / f"{name}_overlay.png"
    return outputs


def _temporary(path: Path, token: str) -> Path:
    """A hidden name in the same folder that keeps the file ending (the writers choose the format by it)."""
    return path.with_name(f".part-{token}-{path.name}")


def write_case_outputs(image: sitk.Image, result: SegmentationResult, outputs: dict[str, Path],
                       name: str | None = None) -> None:
    """Write the outputs of one case atomically (all files appear together, or none does); ``outputs`` may be a
    subset of :func:`case_outputs`. The ``.seg.nrrd`` carries the provenance tags the panel writes (``name``: the
    source volume's name)."""
    token = uuid.uuid4().hex[:8]
    temporaries = {key: _temporary(path, token) for key, path in outputs.items()}
    try:
        if "mask" in temporaries:
            sitk.WriteImage(result.mask, str(temporaries["mask"]), useCompression=True)
        if "segmentation" in temporaries:
            tags = result_values(result.provenance, result.volume_ml, name)
            write_liver_seg_nrrd(result.mask, temporaries["segmentation"], tags)
        if "probability" in temporaries:
            sitk.WriteImage(result.probability, str(temporaries["probability"]), useCompression=True)
        if "overlay" in temporaries:
            write_overlay_png(
                temporaries["overlay"],
                sitk.GetArrayViewFromImage(image),
                sitk.GetArrayViewFromImage(result.mask),
                spacing=image.GetSpacing(),
                direction=image.GetDirection(),
                bounds=result.provenance.intensity_bounds,
                check=result.provenance.quality is not None and not result.provenance.quality.ok,
            )
        for key, path in outputs.items():
            os.replace(temporaries[key], path)
    finally:
        for temporary in temporaries.values():
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _ok_row(case: InputCase, image: sitk.Image, result: SegmentationResult, outputs: dict[str, Path],
            seconds: float, note: str = "") -> dict[str, Any]:
    provenance = result.provenance
    lo, hi = provenance.intensity_bounds
    quality = provenance.quality  # a check no warning explains (a foreign MR scan passes the scan checks): its hint
    explained = bool(provenance.warnings) or quality is None or quality.ok
    hint = [quality.hint] if not explained and getattr(quality, "hint", "") else []
    row = {
        "case": case.name,
        "status": OK,
        "message": "; ".join(provenance.warnings + hint + ([note] if note else [])),
        "quality": provenance.quality.summary() if provenance.quality is not None else "",
        "liver_ml": round(result.volume_ml, 3),
        "slices": provenance.n_slices,
        "size": "x".join(str(s) for s in image.GetSize()),
        "spacing_mm": "x".join(f"{s:.6g}" for s in image.GetSpacing()),
        "device": provenance.device,
        "variant": provenance.variant or "",
        "intensity": f"{provenance.intensity.label} [{lo:.6g}, {hi:.6g}]",
        "weights_sha256": provenance.weights_sha256 or "",
        "seconds": round(seconds, 3),
        "input": str(case.path),
    }
    row.update({key: str(path) for key, path in outputs.items()})
    measures = provenance.quality.measures if provenance.quality is not None else {}
    row.update({key: round(float(measures[key]), 6) for key in QUALITY_COLUMNS if key in measures})
    return row


def _other_row(case: InputCase, status: str, message: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"case": case.name, "status": status, "message": message, "seconds": round(seconds, 3),
            "input": str(case.path)}


def read_summary(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of an existing summary CSV (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_summary(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Write the summary CSV atomically (columns :data:`SUMMARY_COLUMNS`)."""
    path = Path(path)
    temporary = _temporary(path, uuid.uuid4().hex[:8])
    try:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: row.get(key, "") for key in SUMMARY_COLUMNS})
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return path


def _merge_summary(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier rows, replaced by this run's rows for the same case (a skipped case keeps its earlier row)."""
    merged: dict[str, dict[str, Any]] = {row["case"]: row for row in read_summary(path)}
    for row in rows:
        if row["status"] == SKIPPED and row["case"] in merged:
            continue
        merged[row["case"]] = row
    return list(merged.values())


def _duplicate_names(cases: Sequence[InputCase]) -> dict[int, str]:
    """Position -> message for every case whose name was already used by an earlier case."""
    first: dict[str, InputCase] = {}
    duplicates = {}
    for position, case in enumerate(cases):
        if case.name in first:
            duplicates[position] = (f"{case.path}: another input has the same name {case.name!r} "
                                    f"({first[case.name].path}); rename one of them")
        else:
            first[case.name] = case
    return duplicates


def _selected_cases(paths: Sequence[str | os.PathLike],
                    shard: tuple[int, int] | None) -> tuple[list[InputCase], list[int], dict[int, str]]:
    """All input cases, the positions this shard runs, and the error of each duplicated name (InputFileError when
    none of ``paths`` exists or no input is found in them)."""
    missing = [str(p) for p in paths if not Path(p).expanduser().exists()]
    if paths and len(missing) == len(paths):  # one missing among others becomes that case's error row
        raise InputFileError(f"input not found: {', '.join(missing)}")
    all_cases = expand_inputs(list(paths))
    if not all_cases:
        raise InputFileError(f"no input images found in {', '.join(str(p) for p in paths) or 'the arguments'}")
    return all_cases, select_shard(range(len(all_cases)), shard), _duplicate_names(all_cases)


def segment_files(
    paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    options: RunOptions | None = None,
    model: torch.nn.Module | PreparedModel | str | None = None,
    mask_format: str = "nii.gz",
    overlay: bool = True,
    overwrite: bool = False,
    shard: tuple[int, int] | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    **keywords: Any,
) -> list[dict[str, Any]]:
    """Segment every input and write its outputs into ``output_dir``; returns this run's summary rows.

    ``paths``: image files (NIfTI, NRRD, MHA/MHD), DICOM series folders, folders of those, or text files listing
    them one per line. ``options`` (:class:`RunOptions`) and/or keywords on top of it (``weights``, ``device``,
    ``variant``, ``batch_size``, ``postprocess``, ``intensity``, ``window_size``, ``overlap``, ``strict``,
    ``compile``, ``probability`` = ``probability_map``: also write the probability image) are those of
    :func:`segment_image`; ``model`` (a module, ``PreparedModel`` or registry name) replaces the weights. The model
    is prepared once for the whole batch. ``shard``: ``(I, N)`` or ``"I/N"`` to process only shard I of N.
    ``strict``: a scan that does not match the weights' model card is an error (else a warning in the row's
    message). ``progress(fraction, message)`` covers the whole batch; ``cancel()`` is checked between cases and
    between slice batches.

    Each row has the keys of :data:`SUMMARY_COLUMNS` (status ``ok``, ``skipped`` or ``error`` with a one-line
    message). Raises ValueError for bad options, CheckpointError / WeightsNotFoundError before anything is written
    when the weights are unusable, InputFileError when none of ``paths`` exists or no input is found in them (both
    before the weights are loaded and before ``output_dir`` is created), SegmentationCancelledError when cancelled
    (finished cases keep their outputs and summary rows).
    """
    options = RunOptions.build(options, **keywords).checked()
    if isinstance(shard, str):
        shard = parse_shard(shard)
    output_dir = Path(output_dir)
    case_outputs("check", output_dir, mask_format=mask_format)  # refuse a bad format before any work
    all_cases, positions, duplicates = _selected_cases(paths, shard)
    if not positions:
        logger.info("shard %s/%s has no case (%d inputs)", *shard, len(all_cases))  # type: ignore[misc]
        return []
    prepared = prepare_run_model(options, model)
    # The prepared model stays where it is from now on (on the CPU once CUDA ran out of memory).
    case_options = RunOptions.build(options, device="auto")
    if output_dir.exists() and not output_dir.is_dir():
        raise InputFileError(f"output folder {output_dir} exists and is not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    try:
        for number, position in enumerate(positions):
            case = all_cases[position]
            case_progress = _case_progress(progress, number, len(positions), case.name)
            check_cancel(cancel, "batch cancelled; finished cases keep their outputs")
            outputs = case_outputs(case.name, output_dir, mask_format=mask_format,
                                   probability_map=options.probability_map, overlay=overlay)
            if position in duplicates:
                row = _other_row(case, ERROR, duplicates[position])
            else:
                row = _run_case(case, outputs, prepared, case_options, overwrite=overwrite, progress=case_progress,
                                cancel=cancel)
            if row["status"] == ERROR:
                logger.error("%s: %s", case.name, row["message"])
            elif row["status"] == SKIPPED:
                logger.warning("%s: %s", case.name, row["message"])
            rows.append(row)
            case_progress(1.0, row["status"] if row["status"] != OK else f"{row['liver_ml']:.1f} mL")
    finally:
        if rows:
            write_summary(summary_path(output_dir, shard), _merge_summary(summary_path(output_dir, shard), rows))
    return rows


def _case_progress(progress: ProgressCallback | None, number: int, total: int,
                   name: str) -> Callable[[float, str], None]:
    """Case ``number``'s own 0-1 progress, reported as its share of the whole batch."""
    label = f"case {number + 1}/{total} {name}"

    def case_progress(fraction: float, message: str) -> None:
        if progress is not None:
            progress((number + fraction) / total, f"{label}: {message}")

    return case_progress


def _run_case(
    case: InputCase,
    outputs: dict[str, Path],
    prepared: PreparedModel,
    options: RunOptions,
    *,
    overwrite: bool,
    progress: Callable[[float, str], None],
    cancel: CancelCheck | None,
) -> dict[str, Any]:
    """Segment one case and write its outputs; the row says how it went (cancellation propagates)."""
    existing = [path.name for path in outputs.values() if path.exists()]
    to_write, note = outputs, ""
    if existing and not overwrite:
        to_write = {key: path for key, path in outputs.items() if not path.exists()}
        if not to_write:
            return _other_row(case, SKIPPED,
                              f"outputs already exist ({', '.join(existing)}); the overwrite option replaces them")
        note = (f"wrote the missing {', '.join(p.name for p in to_write.values())}; kept the existing "
                f"{', '.join(existing)} (the overwrite option replaces them)")
    started = time.perf_counter()
    try:
        progress(0.0, "reading")
        image = read_case(case)
        result = segment_image(image, options=options, model=prepared, progress=progress, cancel=cancel)
        progress(1.0, "writing")
        write_case_outputs(image, result, to_write, case.name)
    except SegmentationCancelledError:
        raise
    except RMAMambaError as error:
        return _other_row(case, ERROR, _one_line(error), time.perf_counter() - started)
    except Exception as error:  # a batch goes on after any failure of one case
        logger.debug("%s failed", case.name, exc_info=True)
        return _other_row(case, ERROR, f"{type(error).__name__}: {_one_line(error)}", time.perf_counter() - started)
    if note:
        logger.warning("%s: %s", case.name, note)
    return _ok_row(case, image, result, outputs, time.perf_counter() - started, note)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


__all__ = [
    "MASK_FORMATS",
    "QUALITY_COLUMNS",
    "SUMMARY_COLUMNS",
    "case_outputs",
    "parse_shard",
    "read_summary",
    "segment_files",
    "select_shard",
    "summary_path",
    "write_case_outputs",
    "write_summary",
]
