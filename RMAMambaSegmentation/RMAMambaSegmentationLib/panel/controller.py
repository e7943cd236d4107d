"""What the panel shows and allows, decided without Qt (the module's Widget only binds signals to it).

States: ``idle`` -> ``running`` -> (``cancelling`` ->) ``done`` / ``failed`` / back to ``idle`` after a cancel.
:meth:`PanelController.view` returns everything the Widget puts on screen: the status line, the progress, the
buttons' enabled state, the weights path the box shows (the one a run uses) with its label (variant, licence), the
device label, the Show 3D button, the run's warnings and quality verdict. User texts go through :func:`_` (Slicer's
translation when it is there).

Nothing here imports PyTorch or reads a checkpoint: the weights label comes from the model card (cached by path,
size and modification time) and the device label from the choice itself; the network runs in the worker process
(:meth:`SegmentationLogic.start`).
"""

from __future__ import annotations

import enum
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.panel.runtime_info import describe_device_choice, describe_weights_file
from RMAMambaSegmentationLib.runtime.devices import device_from_choice

logger = logging.getLogger(__name__)
_translator: list[Callable[[str, str], str] | None] = []


def _(text: str) -> str:
    """``text`` translated by Slicer (``slicer.i18n.translate``, in the calling file's context, as ``slicer.i18n.tr``
    does) when Slicer's translation is there; ``text`` itself otherwise (tests, the slicer-core wheel)."""
    if not _translator:
        try:
            from slicer.i18n import translate
        except ImportError:
            translate = None
        _translator.append(translate)
    translate = _translator[0]
    if translate is None:
        return text
    return translate(Path(sys._getframe(1).f_code.co_filename).stem, text)


def weights_path_from_text(text: str | None) -> str | None:
    """The weights file named by the text of the panel's box: None (the shipped weights) when it is empty, else
    the text without surrounding blanks and quotes. Any name and extension is taken as it is (``X.PT``,
    ``model.pth.tar``): the run checks the file itself."""
    path = (text or "").strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1].strip()
    return path or None


class PanelState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"


@dataclass
class PanelView:
    """Everything the Widget shows; it copies these values to its widgets and nothing else."""

    state: PanelState
    status: str
    progress: int
    progressVisible: bool  # noqa: N815  (Qt-side names)
    applyEnabled: bool  # noqa: N815
    applyToolTip: str  # noqa: N815
    cancelEnabled: bool  # noqa: N815
    optionsEnabled: bool  # noqa: N815
    weightsPath: str  # noqa: N815  (the text the weights box shows: "" = the shipped weights)
    weightsText: str  # noqa: N815
    weightsOk: bool  # noqa: N815
    deviceText: str  # noqa: N815
    show3DEnabled: bool  # noqa: N815  (only with a segmentation that has something to show)
    warnings: list[str] = field(default_factory=list)
    quality: str = ""


def _value(record: Any, name: str, default: Any = None) -> Any:
    """``record.name`` for a dataclass / record, ``record[name]`` for a dict."""
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def quality_text(provenance: Any) -> str:
    """"Quality: <status> (<reasons>)" from ``provenance.quality`` when the run recorded one, else ""."""
    quality = _value(provenance, "quality")
    if quality is None:
        return ""
    status = _value(quality, "status", "")
    reasons = [str(r) for r in (_value(quality, "reasons") or [])]
    hint = str(_value(quality, "hint", "") or "")
    text = _("Quality: {status}").format(status=status)
    text += f" ({'; '.join(reasons)})" if reasons else ""
    return text + (f". {hint[:1].upper()}{hint[1:]}" if hint else "")


def first_input_volume(scene):
    """The first scalar volume of ``scene`` that is not a label map (what the panel proposes as input), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
    return None


def _has_segments(segmentationNode) -> bool:
    """True when ``segmentationNode`` exists and holds at least one segment (something the 3D view can show)."""
    if segmentationNode is None:
        return False
    segmentation = segmentationNode.GetSegmentation()
    return segmentation is not None and segmentation.GetNumberOfSegments() > 0


class PanelController:
    """The panel's state machine around a ``SegmentationLogic`` (anything with ``start`` and ``shutdown``).

    ``clock`` gives seconds (tests pass their own).
    """

    def __init__(self, logic, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.logic = logic
        self.clock = clock
        self.state = PanelState.IDLE
        self.run = None
        self.status = ""
        self.progress = 0
        self.warnings: list[str] = []
        self.quality = ""
        self.outputNode = None
        self._shownOutput = None
        self._hasInput = False
        self._weightsPath = ""
        self._weights = describe_weights_file(None)
        self._deviceText = describe_device_choice("auto")
        self._lastDevice = ""
        self._lastWeights = ""
        self._started = 0.0
        self._errorDialog: str | None = None

    # ---------------------------------------------------------------- panel inputs (cheap, GUI thread)
    def open(self, *, hasInput: bool, weightsPath: str | None, variant: str | None, device: str) -> PanelView:
        """Panel shown / parameter node (re)connected."""
        return self.parametersChanged(hasInput=hasInput, weightsPath=weightsPath, variant=variant, device=device)

    def parametersChanged(self, *, hasInput: bool, weightsPath: str | None, variant: str | None,
                          device: str) -> PanelView:
        """The parameter node changed (one call with all its values, so the view never mixes a model with the
        weights path of another one)."""
        self._hasInput = bool(hasInput)
        self.weightsChanged(weightsPath, variant)
        return self.deviceChanged(device)

    def inputChanged(self, hasInput: bool) -> PanelView:
        self._hasInput = bool(hasInput)
        return self.view()

    def weightsChanged(self, path: str | None, variant: str | None) -> PanelView:
        """A new weights path (the box's text, "" = the shipped weights) or model choice: read the model card only
        (no checkpoint, no hash, no torch)."""
        self._weightsPath = path or ""
        self._weights = describe_weights_file(weights_path_from_text(path), variant)
        return self.view()

    def outputChanged(self, node) -> PanelView:
        """Another output segmentation chosen (None: a new one will be created)."""
        self._shownOutput = node
        return self.view()

    def deviceChanged(self, choice: str) -> PanelView:
        """The device combo box changed: the label follows the new choice given by the signal itself."""
        self._deviceText = describe_device_choice(choice)
        return self.view()

    # ---------------------------------------------------------------- run
    def apply(self, volumeNode, *, weightsPath: str | None, device: str, variant: str | None,
              intensity: str | None, postprocess: bool, probabilityMap: bool, segmentationNode=None,
              replace: bool = False) -> bool:
        """Start a run in the worker; False (state ``failed``, an error to show) when the inputs are refused."""
        if self.state in (PanelState.RUNNING, PanelState.CANCELLING):
            return False
        options = RunOptions(weights=weights_path_from_text(weightsPath), device=device_from_choice(device),
                             variant=variant, intensity=intensity, postprocess=postprocess,
                             probability_map=probabilityMap)
        self.warnings, self.quality, self.outputNode = [], "", None
        try:
            self.run = self.logic.start(volumeNode, options=options, segmentationNode=segmentationNode,
                                        replace=replace)
        except Exception as error:
            self._fail(_("Cannot start: {error}").format(error=error), str(error))
            return False
        self.state = PanelState.RUNNING
        self._started = self.clock()
        self.progress = 0
        self.status = _("Starting the segmentation worker...")
        return True

    def poll(self) -> bool:
        """Timer tick: read progress; when the run ended, write its result (main thread). True when it ended.

        An error while reading the run ends it (the worker is stopped, nothing is written): the timer must stop."""
        run = self.run
        if run is None:
            return False
        elapsed = self.clock() - self._started
        try:
            for event in run.poll():
                self.progress = round(100 * event.fraction)
                if self.state is PanelState.RUNNING:
                    self.status = f"{event.message} ({elapsed:.0f} s)"
            ended = run.done
        except Exception as error:
            logger.exception("reading the segmentation run failed")
            self.run = None
            try:
                run.cancel()  # stop the worker; the scene is not touched
            except Exception:
                logger.exception("stopping the failed run failed")
            self._fail(_("Failed after {seconds:.0f} s: nothing was changed. {error}").format(
                seconds=elapsed, error=error), str(error))
            return True
        if not ended:
            return False
        self.run = None
        self._finish(run, elapsed)
        return True

    def _finish(self, run, elapsed: float) -> None:
        if run.cancelled:  # decided by the run's own flag: no exception class comparison across a Reload
            self.state = PanelState.IDLE
            self.status = _("Cancelled after {seconds:.0f} s: nothing was changed.").format(seconds=elapsed)
            return
        try:
            node = run.finish()
        except Exception as error:
            self._fail(_("Failed after {seconds:.0f} s: nothing was changed. {error}").format(
                seconds=elapsed, error=error), str(error))
            return
        provenance = run.provenance
        self.outputNode = self._shownOutput = node
        self.state = PanelState.DONE
        self.progress = 100
        self.warnings = [str(w) for w in (_value(provenance, "warnings") or [])]
        self.quality = quality_text(provenance)
        self._lastDevice = str(_value(provenance, "device", "") or "")
        self._lastWeights = str(_value(provenance, "weights_sha256", "") or "")
        volume_ml = node.GetAttribute("RMAMamba.LiverVolumeMl")
        self.status = _("Done in {seconds:.1f} s on {device}: liver volume {volume} mL.").format(
            seconds=elapsed, device=self._lastDevice, volume=volume_ml)
        if self.warnings:
            self.status += " " + _("{count} warning(s) below.").format(count=len(self.warnings))

    def _fail(self, status: str, dialog: str) -> None:
        self.state = PanelState.FAILED
        self.status = status
        self._errorDialog = dialog

    def cancel(self) -> PanelView:
        """Cancel button: the worker is killed at once; the next poll reports the cancel."""
        if self.run is not None and self.state is PanelState.RUNNING:
            self.state = PanelState.CANCELLING
            self.status = _("Cancelling...")
            self.run.cancel()
        return self.view()

    def abandon(self) -> None:
        """Scene closing or module reloading: stop the run without waiting and forget it (nothing is written)."""
        if self.run is not None:
            self.run.cancel()
            self.run = None
        self.state = PanelState.IDLE
        self.status = ""
        self.progress = 0

    def shutdown(self) -> None:
        """Module cleanup / Reload: abandon the run and end the worker process (no waiting)."""
        self.abandon()
        self.logic.shutdown()

    def replaceQuestion(self, segmentationNode) -> str | None:
        """The question to ask before a run writes into ``segmentationNode`` when it already has a Liver segment
        (the run then replaces it); None when there is nothing to replace."""
        from RMAMambaSegmentationLib.mrml.terminology import find_liver_segment_id

        if segmentationNode is None or find_liver_segment_id(segmentationNode) is None:
            return None
        return _('"{name}" already has a Liver segment. Replace it (its other segments are kept)?').format(
            name=segmentationNode.GetName())

    def takeErrorDialog(self) -> str | None:
        """The error to show in a dialog, once (None when there is none)."""
        message, self._errorDialog = self._errorDialog, None
        return message

    # ---------------------------------------------------------------- what the Widget shows
    def view(self) -> PanelView:
        busy = self.state in (PanelState.RUNNING, PanelState.CANCELLING)
        device = self._deviceText
        if self._lastDevice and not busy:
            device += "; " + _("last run on {device}").format(device=self._lastDevice)
        weightsText = self._weights.message
        if self._lastWeights and not busy:
            weightsText += " " + _("(last run: sha256 {digest}...)").format(digest=self._lastWeights[:12])
        return PanelView(
            state=self.state,
            status=self.status,
            progress=self.progress,
            progressVisible=busy,
            applyEnabled=self._hasInput and not busy,
            applyToolTip=(
                _("Segment the liver of the input volume.") if self._hasInput else _("Select an input volume first.")
            ),
            cancelEnabled=self.state is PanelState.RUNNING,
            optionsEnabled=not busy,
            weightsPath=self._weightsPath,
            weightsText=weightsText,
            weightsOk=self._weights.ok,
            deviceText=device,
            show3DEnabled=not busy and _has_segments(self._shownOutput),
            warnings=list(self.warnings),
            quality=self.quality,
        )
