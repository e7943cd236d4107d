"""What the panel shows and allows, decided without Qt (the module's Widget only binds signals to it).

States: ``idle`` -> ``running`` -> (``cancelling`` ->) ``done`` / ``failed`` / back to ``idle`` after a cancel.
:meth:`PanelController.view` returns everything the Widget puts on screen: the status line, the progress, the
buttons' enabled state, the weights (and their licence) and device labels, the run's warnings and quality verdict.

Nothing here imports PyTorch or reads a checkpoint: the weights label comes from the model card (cached by path,
size and modification time) and the device label from the choice itself; the network runs in the worker process
(:meth:`SegmentationLogic.start`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from RMAMambaSegmentationLib.inference.options import RunOptions
from RMAMambaSegmentationLib.panel.runtime_info import describe_device_choice, describe_weights_file
from RMAMambaSegmentationLib.runtime.devices import device_from_choice

logger = logging.getLogger(__name__)


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
    weightsText: str  # noqa: N815
    weightsOk: bool  # noqa: N815
    deviceText: str  # noqa: N815
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
    return f"Quality: {status}" + (f" ({'; '.join(reasons)})" if reasons else "")


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
        self._hasInput = False
        self._weights = describe_weights_file(None)
        self._deviceText = describe_device_choice("auto")
        self._lastDevice = ""
        self._lastWeights = ""
        self._started = 0.0
        self._errorDialog: str | None = None

    # ---------------------------------------------------------------- panel inputs (cheap, GUI thread)
    def open(self, *, hasInput: bool, weightsPath: str | None, variant: str | None, device: str) -> PanelView:
        """Panel shown / parameter node (re)connected."""
        self._hasInput = bool(hasInput)
        self.weightsChanged(weightsPath, variant)
        return self.deviceChanged(device)

    def inputChanged(self, hasInput: bool) -> PanelView:
        self._hasInput = bool(hasInput)
        return self.view()

    def weightsChanged(self, path: str | None, variant: str | None) -> PanelView:
        """A new weights path or model choice: read the model card only (no checkpoint, no hash, no torch)."""
        self._weights = describe_weights_file(path or None, variant)
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
        options = RunOptions(weights=weightsPath or None, device=device_from_choice(device), variant=variant,
                             intensity=intensity, postprocess=postprocess, probability_map=probabilityMap)
        self.warnings, self.quality, self.outputNode = [], "", None
        try:
            self.run = self.logic.start(volumeNode, options=options, segmentationNode=segmentationNode,
                                        replace=replace)
        except Exception as error:
            self._fail(f"Cannot start: {error}", str(error))
            return False
        self.state = PanelState.RUNNING
        self._started = self.clock()
        self.progress = 0
        self.status = "Starting the segmentation worker..."
        return True

    def poll(self) -> bool:
        """Timer tick: read progress; when the run ended, write its result (main thread). True when it ended."""
        run = self.run
        if run is None:
            return False
        elapsed = self.clock() - self._started
        for event in run.poll():
            self.progress = round(100 * event.fraction)
            if self.state is PanelState.RUNNING:
                self.status = f"{event.message} ({elapsed:.0f} s)"
        if not run.done:
            return False
        self.run = None
        self._finish(run, elapsed)
        return True

    def _finish(self, run, elapsed: float) -> None:
        if run.cancelled:  # decided by the run's own flag: no exception class comparison across a Reload
            self.state = PanelState.IDLE
            self.status = f"Cancelled after {elapsed:.0f} s: nothing was changed."
            return
        try:
            node = run.finish()
        except Exception as error:
            self._fail(f"Failed after {elapsed:.0f} s: nothing was changed. {error}", str(error))
            return
        provenance = run.provenance
        self.outputNode = node
        self.state = PanelState.DONE
        self.progress = 100
        self.warnings = [str(w) for w in (_value(provenance, "warnings") or [])]
        self.quality = quality_text(provenance)
        self._lastDevice = str(_value(provenance, "device", "") or "")
        self._lastWeights = str(_value(provenance, "weights_sha256", "") or "")
        volume_ml = node.GetAttribute("RMAMamba.LiverVolumeMl")
        self.status = f"Done in {elapsed:.1f} s on {self._lastDevice}: liver volume {volume_ml} mL."
        if self.warnings:
            self.status += f" {len(self.warnings)} warning(s) below."

    def _fail(self, status: str, dialog: str) -> None:
        self.state = PanelState.FAILED
        self.status = status
        self._errorDialog = dialog

    def cancel(self) -> PanelView:
        """Cancel button: the worker is killed at once; the next poll reports the cancel."""
        if self.run is not None and self.state is PanelState.RUNNING:
            self.state = PanelState.CANCELLING
            self.status = "Cancelling..."
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

    def takeErrorDialog(self) -> str | None:
        """The error to show in a dialog, once (None when there is none)."""
        message, self._errorDialog = self._errorDialog, None
        return message

    # ---------------------------------------------------------------- what the Widget shows
    def view(self) -> PanelView:
        busy = self.state in (PanelState.RUNNING, PanelState.CANCELLING)
        device = self._deviceText
        if self._lastDevice and not busy:
            device += f"; last run on {self._lastDevice}"
        return PanelView(
            state=self.state,
            status=self.status,
            progress=self.progress,
            progressVisible=busy,
            applyEnabled=self._hasInput and not busy,
            applyToolTip=(
                "Segment the liver of the input volume." if self._hasInput else "Select an input volume first."
            ),
            cancelEnabled=self.state is PanelState.RUNNING,
            optionsEnabled=not busy,
            weightsText=self._weights.message + (
                f" (last run: sha256 {self._lastWeights[:12]}...)" if self._lastWeights and not busy else ""
            ),
            weightsOk=self._weights.ok,
            deviceText=device,
            warnings=list(self.warnings),
            quality=self.quality,
        )
