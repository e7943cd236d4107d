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

Two ways to run:

* :meth:`SegmentationLogic.segment` -- blocking, in this process (console, scripts, batch).
* :meth:`SegmentationLogic.start` -- returns a :class:`~.segmentation_run.SegmentationRun` at once; the network
  runs in a worker process (:mod:`RMAMambaSegmentationLib.worker`) that keeps the loaded model between runs. The
  panel polls ``run.poll()`` from a timer and calls ``run.finish()`` (main thread) to write the result::

      run = logic.start(volume, weights="rmamamba_t.pt", device="auto")
      while not run.done:
          events = run.poll()          # new progress events
      seg = run.finish()               # or SegmentationCancelledError / WorkerStoppedError, scene unchanged
      logic.shutdown()                 # ends the worker (else it exits after a few idle minutes)

Both validate everything first (:meth:`SegmentationLogic.prepare`: raises before any change) and write the result
in one short main-thread step (:meth:`SegmentationLogic.apply`: on error the scene is restored). The options of a
run are one :class:`~RMAMambaSegmentationLib.inference.options.RunOptions`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from RMAMambaSegmentationLib.callbacks import CancelCheck, ProgressCallback
from RMAMambaSegmentationLib.errors import InvalidImageError, SegmentationCancelledError, WeightsNotFoundError
from RMAMambaSegmentationLib.inference import provenance
from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.mrml.probability_volume import add_probability_volume
from RMAMambaSegmentationLib.mrml.scene_check import check_segmentations_ready
from RMAMambaSegmentationLib.mrml.segment_writer import (
    SegmentationWriteError,
    create_segmentation_node,
    place_beside,
    prepare_existing_segmentation,
    write_liver_mask,
)
from RMAMambaSegmentationLib.mrml.segmentation_run import WRITE_SHARE, SegmentationRun
from RMAMambaSegmentationLib.mrml.terminology import find_liver_segment_id
from RMAMambaSegmentationLib.mrml.undo import UndoHook, save_undo_state
from RMAMambaSegmentationLib.mrml.volume_node import ijk_to_ras, lps_geometry, validate_volume_node, volume_array
from RMAMambaSegmentationLib.registry import normalise_variant
from RMAMambaSegmentationLib.weights import location as weights_location
from RMAMambaSegmentationLib.weights.cache import ModelCache

logger = logging.getLogger(__name__)


#: Node reference from the segmentation node to its optional probability volume.
PROBABILITY_REFERENCE_ROLE = "RMAMambaProbability"


@dataclass
class SegmentationJob:
    """Everything :meth:`SegmentationLogic.compute` and :meth:`~SegmentationLogic.apply` need, fixed at prepare time."""

    volume_node: Any
    array: np.ndarray
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    options: RunOptions
    segmentation_node: Any = None
    replace: bool = False
    model: Any = None

    @property
    def weights(self) -> Path | None:
        return self.options.weights_path


def _resolve_weights(weights: str | Path | None, variant: str | None = None) -> Path:
    """The weights file to load: ``weights`` or the ones shipped for ``variant`` (default RMA-Mamba-T, or the
    U-Net baseline's); WeightsNotFoundError when it does not exist."""
    if weights is None or str(weights).strip() == "":
        path = weights_location.bundled_weights_path(variant)  # torch-free
        if not path.is_file():
            raise WeightsNotFoundError(
                f"no default weights are installed ({path} does not exist); choose a weights file in the panel, "
                "or pass weights=... from the console"
            )
        return path
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

    def __init__(self, *, undoHook: UndoHook | None = None, modelCache: ModelCache | None = None,
                 workerOptions: dict[str, Any] | None = None) -> None:
        self.undoHook = undoHook
        #: Networks loaded by the blocking :meth:`segment` (runs started with :meth:`start` use the worker's cache).
        self.modelCache = modelCache if modelCache is not None else ModelCache()
        #: Keywords for :class:`~RMAMambaSegmentationLib.worker.client.WorkerProcess` (``python``,
        #: ``idle_timeout_s``, ``env``): tests and scripts only.
        self.workerOptions = dict(workerOptions or {})
        self._worker = None
        self._run = None
        #: The quality verdict (``QualityVerdict``: status, reasons, measures, hint) of the last result written into
        #: the scene by :meth:`segment` or a finished :meth:`start` run; None before any.
        self.lastVerdict = None

    # ---------------------------------------------------------------- blocking API
    def segment(
        self,
        volumeNode,
        *,
        segmentationNode=None,
        replace: bool = False,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        model: Any = None,
        options: RunOptions | None = None,
        **optionKeywords: Any,
    ):
        """Segment the liver of ``volumeNode`` in this process and return the ``vtkMRMLSegmentationNode`` holding it.

        Args:
            volumeNode: a 3D ``vtkMRMLScalarVolumeNode`` (abdominal MRI or CT) in a scene.
            segmentationNode: write into this node instead of a new one (its other segments are kept).
            replace: allow replacing the existing "Liver" segment of ``segmentationNode``.
            progress: ``progress(fraction, message)`` callback.
            cancel: returns True to stop; checked between batches of slices. The scene is then left unchanged.
            model: a ready ``torch.nn.Module`` (or ``PreparedModel``) to use instead of loading ``weights``.
            options: all the run options as one :class:`RunOptions`; the option keywords below apply on top of it
                (:meth:`RunOptions.build`, which also takes their library spellings, e.g. ``probability_map``).
            weights: RMA-Mamba checkpoint file; None = the default weights installed with the extension.
            device: ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``/``"gpu"``.
            variant: ``"T"``/``"S"``/``"SRMA"``/``"UNET"`` to check the weights' variant (None = accept any);
                ``"UNET"`` without ``weights`` selects the shipped U-Net baseline weights.
            intensity: ``"MRI"`` or ``"CT"`` (the card's preset for that modality) or ``"MRI-tissue"``; None = the
                weights' model card, else MRI.
            postprocess: keep the largest 3D component and fill holes.
            probabilityMap: also add a float volume with the liver probability (0-1).
            batchSize: slices per network call (None = automatic).
            Any other :class:`RunOptions` field (``window_size``, ``overlap``, ``strict``, ``compile``) by its name;
            an unknown keyword is a TypeError.

        Returns:
            The segmentation node, with one "Liver" segment (SNOMED CT 10200004) and ``RMAMamba.*`` provenance
            attributes.

        Raises:
            InvalidImageError: no volume, not a 3D scalar volume, or voxels that cannot be segmented.
            WeightsNotFoundError / CheckpointError / VariantMismatchError: the weights cannot be used.
            SegmentExistsError: ``segmentationNode`` already has a Liver segment and ``replace`` is False.
            SegmentationCancelledError: ``cancel()`` returned True (nothing was changed).
            SegmentationWriteError: Slicer refused the write (nothing was changed); its SceneSetupError: a bare
                headless scene without the Segmentations module logic (checked before the network runs).
        """
        options = RunOptions.build(options, **optionKeywords)
        job = self.prepare(volumeNode, options=options, segmentationNode=segmentationNode, replace=replace,
                           model=model)
        result = self.compute(job, progress=progress, cancel=cancel)
        if cancel is not None and cancel():
            raise SegmentationCancelledError("segmentation cancelled; the scene was not changed")
        return self.apply(job, result, progress=progress)

    # ---------------------------------------------------------------- non-blocking API (worker process)
    def start(
        self,
        volumeNode,
        *,
        segmentationNode=None,
        replace: bool = False,
        progress: ProgressCallback | None = None,
        options: RunOptions | None = None,
        **optionKeywords: Any,
    ):
        """Start segmenting ``volumeNode`` in the worker process and return a ``SegmentationRun`` at once.

        Same options as :meth:`segment` (a network object cannot be sent: use a weights file). Every check of
        :meth:`segment` that needs no network runs here and raises before anything changes; the voxels are written
        to a temporary folder for the worker. ``progress(fraction, message)``, when given, is called by
        ``run.poll()`` on the caller's thread. Then: ``run.poll()``, ``run.done``, ``run.cancel()``,
        ``run.finish()`` (writes the result; main thread).
        """
        if "model" in optionKeywords:
            raise TypeError("a network object (model=...) cannot be sent to the worker process: pass weights=... "
                            "or use segment()")
        if self._run is not None and not self._run.done:
            raise RuntimeError("a segmentation is already running: cancel it or wait for it to finish")
        options = RunOptions.build(options, **optionKeywords)
        job = self.prepare(volumeNode, options=options, segmentationNode=segmentationNode, replace=replace,
                           copy=False)
        self._run = SegmentationRun(job, self._ensure_worker(), write=self.apply, on_worker_gone=self._forget_worker,
                                    progress=progress, restart=self._ensure_worker)
        return self._run

    def _ensure_worker(self):
        from RMAMambaSegmentationLib.worker.client import WorkerProcess

        if self._worker is None or not self._worker.alive:
            self._worker = WorkerProcess(**self.workerOptions)
        return self._worker

    def _forget_worker(self, worker) -> None:
        """A run's worker was killed or stopped: the next run starts a new one."""
        if self._worker is worker:
            self._worker = None

    @property
    def workerProcessId(self) -> int | None:
        """The pid of the running worker process, or None."""
        return self._worker.pid if self._worker is not None and self._worker.alive else None

    def shutdown(self, wait: float = 0.0) -> None:
        """End the worker process (a running run is cancelled); never blocks longer than ``wait`` seconds."""
        if self._run is not None and not self._run.done:
            self._run.cancel()
        self._run = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(wait_s=wait)

    def segmentFiles(self, paths: Iterable[str | Path], outputFolder: str | Path, **options) -> list[dict]:
        """Segment image files (NIfTI, NRRD, MHA, DICOM folders) without loading them into the scene.

        Writes one ``<case>.seg.nrrd`` per input and a CSV summary in ``outputFolder``, continues after a failed
        case, and returns the summary rows (dicts). ``options`` are those of
        ``RMAMambaSegmentationLib.batch.segment_files.segment_files`` (``weights``, ``device``, ``intensity``, ...).

        Usage: ``SegmentationLogic().segmentFiles(["a.nii.gz", "b.nrrd"], "out", weights=w)``
        """
        from RMAMambaSegmentationLib.batch.segment_files import segment_files

        return segment_files([str(p) for p in paths], str(outputFolder), **options)

    # ---------------------------------------------------------------- step 1: main thread
    def prepare(self, volumeNode, *, options: RunOptions | None = None, segmentationNode=None, replace: bool = False,
                model: Any = None, copy: bool = True) -> SegmentationJob:
        """Check the inputs and take the voxels (main thread); raises :meth:`segment`'s errors before any change.

        ``copy=False`` keeps a view of the node's voxels (the worker path writes them to a file at once).
        """
        from RMAMambaSegmentationLib.imaging.validation import validate_array

        validate_volume_node(volumeNode)
        check_segmentations_ready()  # a bare headless scene: say so now, not after the network ran
        options = (options if options is not None else RunOptions()).checked()  # device labels normalised too
        if model is None:
            weights_path: Path | None = _resolve_weights(options.weights, options.variant)
        else:
            weights_path = options.weights_path
        options = RunOptions.build(options, weights=None if weights_path is None else str(weights_path))
        if segmentationNode is not None:
            prepare_existing_segmentation(segmentationNode, volumeNode, replace=replace)
        array = volume_array(volumeNode, copy=copy)
        validate_array(array)
        spacing, _origin, direction = lps_geometry(ijk_to_ras(volumeNode))
        return SegmentationJob(
            volume_node=volumeNode,
            array=array,
            spacing=spacing,
            direction=direction,
            options=options,
            segmentation_node=segmentationNode,
            replace=bool(replace),
            model=model,
        )

    # ---------------------------------------------------------------- step 2: this process, no MRML
    def compute(self, job: SegmentationJob, *, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None):
        """Run the network on the job's voxels in this process; returns an ``ArraySegmentation``.

        Touches no MRML node. Raises SegmentationCancelledError when ``cancel()`` turns True (checked between
        batches), and the weights errors of :meth:`segment`.
        """
        from RMAMambaSegmentationLib.inference.pipeline import segment_array

        options = job.options
        if job.model is not None:
            model = job.model
        else:
            model = self.modelCache.get(job.weights, variant=options.variant, device=options.device)
            options = RunOptions.build(options, weights=None)

        def scaled(fraction: float, message: str) -> None:
            if progress is not None:
                progress((1.0 - WRITE_SHARE) * fraction, message)

        return segment_array(job.array, spacing=job.spacing, direction=job.direction, options=options, model=model,
                             progress=scaled, cancel=cancel)

    # ---------------------------------------------------------------- step 3: main thread
    def apply(self, job: SegmentationJob, result, *, progress: ProgressCallback | None = None):
        """Write ``result`` (mask, optional probability, liver volume, provenance) into the scene (main thread) and
        return the segmentation node.

        Either everything is written (Liver segment, provenance, optional probability volume) or, on error, the
        nodes created here are removed and a replaced Liver segment is restored. The 3D surface is not built here
        (Slicer's "Show 3D" button builds it when the user asks).
        """
        volume = job.volume_node
        if volume.GetScene() is None:
            raise InvalidImageError(f'the input volume "{volume.GetName()}" was removed from the scene during the run')
        if progress is not None:
            progress(1.0 - WRITE_SHARE, "writing the Liver segment")
        scene = volume.GetScene()
        created: list[Any] = []
        restore = None
        try:
            if job.options.probability_map:
                if result.probability is None:
                    raise SegmentationWriteError("the run did not return the probability map that was asked for")
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
        if job.options.probability_map:
            node.SetNodeReferenceID(PROBABILITY_REFERENCE_ROLE, created[0].GetID())
        self._record_provenance(node, segment_id, job, result)
        self.lastVerdict = provenance.quality_verdict(result.provenance)
        for new_node in created:
            place_beside(new_node, volume)
        logger.info("liver segmented in %s: %.1f mL (%s)", volume.GetName(), result.volume_ml, node.GetName())
        for warning in getattr(result.provenance, "warnings", None) or ():
            logger.warning("%s: %s", volume.GetName(), warning)
        if progress is not None:
            progress(1.0, f"done: liver {result.volume_ml:.1f} mL")
        return node

    @staticmethod
    def _record_provenance(node, segment_id: str, job: SegmentationJob, result) -> None:
        info = result.provenance
        values = provenance.result_values(info, result.volume_ml, job.volume_node.GetName(), job.weights)
        variant = info.variant or job.options.variant
        values[provenance.MODEL_VARIANT] = _segment_label(variant) if variant else "unknown"
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
