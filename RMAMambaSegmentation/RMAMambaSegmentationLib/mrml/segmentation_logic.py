"""Segment the liver of an MRML volume node into an editable Segmentation node (no Qt, no global scene).

This is the whole job behind the Slicer panel and the Python console; the module's ``RMAMambaSegmentationLogic``
only wraps it. It works inside Slicer and, for tests and scripts, with the ``slicer-core`` wheel.

Console example (Slicer's Python console)::

    from RMAMambaSegmentationLib import SegmentationLogic
    volume = slicer.util.getNode("CT abdomen")
    logic = SegmentationLogic()
    seg = logic.segment(volume, weights="rmamamba_t.pt", device="auto", intensity="CT")
    print(seg.GetAttribute("RMAMamba.LiverVolumeMl"))
    # run again into the same node, replacing only its "Liver" segment:
    logic.segment(volume, weights="rmamamba_t.pt", segmentationNode=seg, replace=True)

A run has three steps, so that a GUI can keep its event loop free:

1. :meth:`SegmentationLogic.prepare` (main thread): validate everything, copy the voxels; raises before any change.
2. :meth:`SegmentationLogic.compute` (any thread): the network on numpy arrays; touches no MRML.
3. :meth:`SegmentationLogic.apply` (main thread): write the Liver segment (and optional probability volume) in one
   short step; on error the scene is restored.

:meth:`SegmentationLogic.segment` runs the three in a row (blocking).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..callbacks import CancelCheck, ProgressCallback
from ..errors import InvalidImageError, WeightsNotFoundError
from ..registry import normalise_variant
from ..volume.intensity import IntensityPreset
from . import provenance
from .model_cache import ModelCache
from .probability_volume import add_probability_volume
from .runtime_info import normalize_device
from .segment_writer import (
    SegmentationWriteError,
    create_segmentation_node,
    place_beside,
    prepare_existing_segmentation,
    show_closed_surface,
    write_liver_mask,
)
from .terminology import find_liver_segment_id
from .undo import UndoHook, save_undo_state
from .volume_node import ijk_to_ras, lps_geometry, validate_volume_node, volume_array

logger = logging.getLogger(__name__)


#: Node reference from the segmentation node to its optional probability volume.
PROBABILITY_REFERENCE_ROLE = "RMAMambaProbability"
#: Part of the progress bar left for writing into the scene.
_WRITE_SHARE = 0.05


@dataclass
class SegmentationJob:
    """Everything :meth:`SegmentationLogic.compute` and :meth:`~SegmentationLogic.apply` need, fixed at prepare time."""

    volume_node: Any
    array: np.ndarray
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    weights: Path | None
    variant: str | None
    device: str
    intensity: str | None
    postprocess: bool
    probability_map: bool
    batch_size: int | None
    segmentation_node: Any = None
    replace: bool = False
    model: Any = None


def _resolve_weights(weights: str | Path | None, variant: str | None = None) -> Path:
    """The weights file to load: ``weights`` or the ones shipped for ``variant`` (default RMA-Mamba-T, or the
    U-Net baseline's); WeightsNotFoundError when it does not exist."""
    if weights is None or str(weights).strip() == "":
        from ..checkpoints import default_weights_path

        return Path(default_weights_path(variant))
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file not found: {path}. Choose the RMA-Mamba weights file (.pt/.pth) in the panel, or pass "
            "weights=... from the console."
        )
    return path


def _segment_label(variant: str | None) -> str:
    if not variant:
        return "RMA-Mamba"
    name = normalise_variant(variant)
    if name == "UNET":
        return "U-Net (2D baseline)"
    return "SRMA-Mamba" if name == "SRMA" else f"RMA-Mamba-{variant}"


class SegmentationLogic:
    """Liver segmentation of MRML volume nodes with RMA-Mamba.

    Args:
        undoHook: called with the segmentation node just before an existing segmentation that a Segment Editor
            is editing gets modified (the Slicer module passes one that saves an editor undo state).
        modelCache: where loaded networks are kept between runs (a new one by default).

    Usage: ``SegmentationLogic().segment(volumeNode, weights="rmamamba_t.pt")`` returns the segmentation node.
    """

    def __init__(self, *, undoHook: UndoHook | None = None, modelCache: ModelCache | None = None) -> None:
        self.undoHook = undoHook
        self.modelCache = modelCache if modelCache is not None else ModelCache()
        #: ``ArraySegmentation`` of the last successful run (mask, probability, volume, provenance).
        self.lastResult: Any = None

    # ---------------------------------------------------------------- blocking API
    def segment(
        self,
        volumeNode,
        *,
        weights: str | Path | None = None,
        device: str = "auto",
        segmentationNode=None,
        replace: bool = False,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        variant: str | None = None,
        intensity: str | None = None,
        postprocess: bool = True,
        probabilityMap: bool = False,
        batchSize: int | None = None,
        model: Any = None,
    ):
        """Segment the liver of ``volumeNode`` and return the ``vtkMRMLSegmentationNode`` holding it.

        Args:
            volumeNode: a 3D ``vtkMRMLScalarVolumeNode`` (abdominal MRI or CT) in a scene.
            weights: RMA-Mamba checkpoint file; None = the default weights installed with the extension.
            device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``/``"gpu"``.
            segmentationNode: write into this node instead of a new one (its other segments are kept).
            replace: allow replacing the existing "Liver" segment of ``segmentationNode``.
            progress: ``progress(fraction, message)`` callback.
            cancel: returns True to stop; checked between batches of slices. The scene is then left unchanged.
            variant: ``"T"``/``"S"``/``"SRMA"``/``"UNET"`` to check the weights' variant (None = accept any);
                ``"UNET"`` without ``weights`` selects the shipped U-Net baseline weights.
            intensity: ``"MRI"`` or ``"CT"`` (the card's preset for that modality) or ``"MRI-tissue"``; None = the
                weights' model card, else MRI.
            postprocess: keep the largest 3D component and fill holes.
            probabilityMap: also add a float volume with the liver probability (0-1).
            batchSize: slices per network call (None = automatic).
            model: a ready ``torch.nn.Module`` (or ``PreparedModel``) to use instead of loading ``weights``.

        Returns:
            The segmentation node, with one "Liver" segment (SNOMED CT 10200004) and ``RMAMamba.*`` provenance
            attributes.

        Raises:
            InvalidImageError: no volume, not a 3D scalar volume, or voxels that cannot be segmented.
            WeightsNotFoundError / CheckpointError / VariantMismatchError: the weights cannot be used.
            SegmentExistsError: ``segmentationNode`` already has a Liver segment and ``replace`` is False.
            SegmentationCancelledError: ``cancel()`` returned True (nothing was changed).
            SegmentationWriteError: Slicer refused the write (nothing was changed).
        """
        job = self.prepare(
            volumeNode,
            weights=weights,
            device=device,
            segmentationNode=segmentationNode,
            replace=replace,
            variant=variant,
            intensity=intensity,
            postprocess=postprocess,
            probabilityMap=probabilityMap,
            batchSize=batchSize,
            model=model,
        )
        result = self.compute(job, progress=progress, cancel=cancel)
        if cancel is not None and cancel():
            from ..errors import SegmentationCancelledError

            raise SegmentationCancelledError("segmentation cancelled; the scene was not changed")
        return self.apply(job, result, progress=progress)

    def segmentFiles(self, paths: Iterable[str | Path], outputFolder: str | Path, **options) -> list[dict]:
        """Segment image files (NIfTI, NRRD, MHA, DICOM folders) without loading them into the scene.

        Writes one ``<case>.seg.nrrd`` per input and a CSV summary in ``outputFolder``, continues after a failed
        case, and returns the summary rows (dicts). ``options`` are those of
        ``RMAMambaSegmentationLib.volume.batch.segment_files`` (``weights``, ``device``, ``intensity``, ...).

        Usage: ``SegmentationLogic().segmentFiles(["a.nii.gz", "b.nrrd"], "out", weights=w)``
        """
        from ..volume.batch import segment_files

        return segment_files([str(p) for p in paths], str(outputFolder), **options)

    # ---------------------------------------------------------------- step 1: main thread
    def prepare(
        self,
        volumeNode,
        *,
        weights: str | Path | None = None,
        device: str = "auto",
        segmentationNode=None,
        replace: bool = False,
        variant: str | None = None,
        intensity: str | None = None,
        postprocess: bool = True,
        probabilityMap: bool = False,
        batchSize: int | None = None,
        model: Any = None,
    ) -> SegmentationJob:
        """Check the inputs and copy the voxels (main thread); raises :meth:`segment`'s errors before any change."""
        from ..volume.validation import validate_array

        validate_volume_node(volumeNode)
        if variant is not None:
            variant = normalise_variant(variant)
            if variant not in ("T", "S", "SRMA", "UNET"):
                raise ValueError(f"unknown model variant {variant!r}: use 'T', 'S', 'SRMA' or 'UNET'")
        if intensity is not None:
            IntensityPreset.from_name(intensity)  # raises "unknown intensity preset ..." before any change
        if batchSize is not None and int(batchSize) < 1:
            raise ValueError(f"batchSize must be at least 1, got {batchSize}")
        weights_path = _resolve_weights(weights, variant) if model is None else (Path(weights) if weights else None)
        if segmentationNode is not None:
            prepare_existing_segmentation(segmentationNode, volumeNode, replace=replace)
        array = volume_array(volumeNode)
        validate_array(array)
        spacing, _origin, direction = lps_geometry(ijk_to_ras(volumeNode))
        return SegmentationJob(
            volume_node=volumeNode,
            array=array,
            spacing=spacing,
            direction=direction,
            weights=weights_path,
            variant=None if variant is None else str(variant).upper(),
            device=normalize_device(device),
            intensity=intensity,
            postprocess=bool(postprocess),
            probability_map=bool(probabilityMap),
            batch_size=None if batchSize is None else int(batchSize),
            segmentation_node=segmentationNode,
            replace=bool(replace),
            model=model,
        )

    # ---------------------------------------------------------------- step 2: any thread, no MRML
    def compute(self, job: SegmentationJob, *, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None):
        """Run the network on the job's voxels; returns an ``ArraySegmentation`` (mask, probability, provenance).

        Touches no MRML node, so it may run in a worker thread. Raises SegmentationCancelledError when
        ``cancel()`` turns True (checked between batches), and the weights errors of :meth:`segment`.
        """
        from ..volume.inference import segment_array

        if job.model is not None:
            model, weights = job.model, job.weights
        else:
            model, weights = self.modelCache.get(job.weights, variant=job.variant, device=job.device), None

        def scaled(fraction: float, message: str) -> None:
            if progress is not None:
                progress((1.0 - _WRITE_SHARE) * fraction, message)

        return segment_array(
            job.array,
            spacing=job.spacing,
            direction=job.direction,
            weights=weights,
            model=model,
            device=job.device,
            batch_size=job.batch_size,
            postprocess=job.postprocess,
            progress=scaled,
            cancel=cancel,
            intensity=job.intensity,
        )

    # ---------------------------------------------------------------- step 3: main thread
    def apply(self, job: SegmentationJob, result, *, progress: ProgressCallback | None = None):
        """Write ``result`` into the scene (main thread) and return the segmentation node.

        Either everything is written (Liver segment, provenance, optional probability volume) or, on error, the
        nodes created here are removed and a replaced Liver segment is restored.
        """
        volume = job.volume_node
        if volume.GetScene() is None:
            raise InvalidImageError(f'the input volume "{volume.GetName()}" was removed from the scene during the run')
        if progress is not None:
            progress(1.0 - _WRITE_SHARE, "writing the Liver segment")
        scene = volume.GetScene()
        created: list[Any] = []
        restore = None
        try:
            if job.probability_map:
                name = f"{volume.GetName()} liver probability"
                created.append(add_probability_volume(volume, result.probability, name))
            if job.segmentation_node is None:
                node = create_segmentation_node(volume, f"{volume.GetName()} liver")
                created.append(node)
                segment_id = None
            else:
                node = job.segmentation_node
                segment_id = prepare_existing_segmentation(node, volume, replace=job.replace)
                save_undo_state(node, self.undoHook)
                restore = _SegmentBackup.take(node, segment_id)
            segment_id = write_liver_mask(node, volume, result.mask, segment_id)
        except BaseException:
            if restore is not None:
                try:
                    restore.put_back()
                except Exception:
                    logger.exception("could not restore the Liver segment of %s", node.GetName())
            for new_node in reversed(created):
                scene.RemoveNode(new_node)
            raise
        if job.probability_map:
            node.SetNodeReferenceID(PROBABILITY_REFERENCE_ROLE, created[0].GetID())
        self._record_provenance(node, segment_id, job, result)
        show_closed_surface(node)
        for new_node in created:
            place_beside(new_node, volume)
        self.lastResult = result
        logger.info("liver segmented in %s: %.1f mL (%s)", volume.GetName(), result.volume_ml, node.GetName())
        if progress is not None:
            progress(1.0, f"done: liver {result.volume_ml:.1f} mL")
        return node

    @staticmethod
    def _record_provenance(node, segment_id: str, job: SegmentationJob, result) -> None:
        from .. import __version__

        info = result.provenance
        variant = info.variant or job.variant
        values = {
            provenance.MODEL_VARIANT: _segment_label(variant) if variant else "unknown",
            provenance.WEIGHTS_SHA256: info.weights_sha256 or "unknown (model given in code)",
            provenance.WEIGHTS_FILE: info.weights_path or (str(job.weights) if job.weights else None),
            provenance.VERSION: __version__,
            provenance.DEVICE: info.device,
            provenance.DATE: provenance.now_iso(),
            provenance.INTENSITY_PRESET: info.intensity.label,
            provenance.POSTPROCESSED: "yes" if info.postprocessed else "no",
            provenance.LIVER_VOLUME_ML: f"{result.volume_ml:.2f}",
            provenance.SOURCE_VOLUME: job.volume_node.GetName(),
        }
        provenance.set_provenance(node, values)
        provenance.set_segment_provenance(node.GetSegmentation().GetSegment(segment_id), values)

    @staticmethod
    def probabilityVolume(segmentationNode):
        """The probability volume written with ``probabilityMap=True`` for this segmentation, or None."""
        return segmentationNode.GetNodeReference(PROBABILITY_REFERENCE_ROLE)

    @staticmethod
    def liverSegmentId(segmentationNode) -> str | None:
        """ID of the Liver segment in ``segmentationNode`` (by terminology, else by name), or None."""
        return find_liver_segment_id(segmentationNode)


class _SegmentBackup:
    """A deep copy of the Liver segment about to be replaced, to put back if the write fails."""

    def __init__(self, node, segment_id: str, copy, index: int) -> None:
        self.node, self.segment_id, self.copy, self.index = node, segment_id, copy, index

    @classmethod
    def take(cls, node, segment_id: str | None) -> _SegmentBackup | None:
        if segment_id is None:
            return None
        import slicer

        segmentation = node.GetSegmentation()
        copy = slicer.vtkSegment()
        copy.DeepCopy(segmentation.GetSegment(segment_id))
        return cls(node, segment_id, copy, segmentation.GetSegmentIndex(segment_id))

    def put_back(self) -> None:
        segmentation = self.node.GetSegmentation()
        if segmentation.GetSegment(self.segment_id) is not None:
            segmentation.RemoveSegment(self.segment_id)
        following = (
            segmentation.GetNthSegmentID(self.index) if self.index < segmentation.GetNumberOfSegments() else ""
        )
        if not segmentation.AddSegment(self.copy, self.segment_id, following):
            raise SegmentationWriteError(f'could not restore the previous "{self.segment_id}" segment')
