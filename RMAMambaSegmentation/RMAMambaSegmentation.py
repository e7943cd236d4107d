"""3D Slicer module: liver segmentation in abdominal MRI and CT with RMA-Mamba.

Thin by design: the work is done by ``RMAMambaSegmentationLib.SegmentationLogic`` (Qt-free, tested headless); this
file holds the panel (Widget), the console/scripting wrapper (Logic) and the in-Slicer self-test (Test).
Nothing heavy is imported at Slicer start-up: PyTorch is checked (and, with the user's consent, installed through
the PyTorch extension) only when a segmentation is asked for.
"""

import importlib
import logging
import os
import sys
import time
from typing import Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODEL_CHOICES = ["RMA-Mamba-T", "RMA-Mamba-S", "U-Net (baseline)"]
DEVICE_CHOICES = ["auto", "CPU", "GPU"]
INTENSITY_CHOICES = ["MRI", "CT"]
#: QSettings keys: per-user preferences that are not scene state.
SETTINGS_WEIGHTS_KEY = "RMAMambaSegmentation/WeightsPath/{variant}"
TORCH_REQUIREMENT = ">=2.1"
POLL_INTERVAL_MS = 100


def variantOf(modelChoice: str) -> str:
    """``"RMA-Mamba-T"`` -> ``"T"``; ``"U-Net (baseline)"`` -> ``"UNET"``."""
    if modelChoice.startswith("U-Net"):
        return "UNET"
    return modelChoice.rsplit("-", 1)[-1].upper()


#
# Module
#


class RMAMambaSegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Liver Segmentation (RMA-Mamba)")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["RMAMambaSegmentation contributors"]
        self.parent.helpText = _(
            "Segments the liver in abdominal MRI or CT volumes with the RMA-Mamba network (2D, slice by slice). "
            "Choose the input volume, the model and its weights file, then click <b>Segment liver</b>. "
            "The result is a segmentation with one <i>Liver</i> segment, ready for Segment Editor. "
            "Console use: <code>slicer.modules.rmamambasegmentation.widgetRepresentation().self().logic</code> or "
            "<code>RMAMambaSegmentation.RMAMambaSegmentationLogic().segment(volumeNode, weights=path)</code>. "
            "Research use only, not for clinical decisions."
        )
        self.parent.acknowledgementText = _(
            "RMA-Mamba: Zeng et al., 'Reverse Mamba Attention Network for liver segmentation'. "
            "Extension structure follows SlicerTotalSegmentator, SlicerMONAIAuto3DSeg and SlicerNNUnet."
        )


#
# Parameter node
#


@parameterNodeWrapper
class RMAMambaSegmentationParameterNode:  # Slicer's camelCase names, bound to the .ui's SlicerParameterName
    """Panel state, saved with the scene."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode  # noqa: N815
    model: Annotated[str, Choice(MODEL_CHOICES)] = MODEL_CHOICES[0]
    weightsPath: str = ""  # noqa: N815
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    intensityPreset: Annotated[str, Choice(INTENSITY_CHOICES)] = "MRI"  # noqa: N815
    postprocess: bool = True
    probabilityMap: bool = False  # noqa: N815
    outputSegmentation: slicer.vtkMRMLSegmentationNode  # noqa: N815


#
# Widget
#


class RMAMambaSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the widgets to the parameter node and turns one click into one logic call."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._task = None
        self._startTime = 0.0
        self._timer = None
        self._connectingGui = False
        self._weightsStatusKey = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RMAMambaSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = RMAMambaSegmentationLogic()
        self.logic.undoHook = saveSegmentEditorUndoState
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsPathChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.progressBar.setVisible(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRunningTask()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRunningTask()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer reload: also reload the library's submodules (``importlib``, not the removed ``imp``)."""
        self.cancelRunningTask()
        for name in sorted((n for n in sys.modules if n.startswith("RMAMambaSegmentationLib")), reverse=True):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume
        if not self._parameterNode.weightsPath:
            self._parameterNode.weightsPath = self.rememberedWeights(self._parameterNode.model)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._connectingGui = True  # filling the combo boxes must not reset the scene's weights path
            try:
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            finally:
                self._connectingGui = False
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.ui.weightsPathLineEdit.blockSignals(True)
            self.ui.weightsPathLineEdit.currentPath = self._parameterNode.weightsPath
            self.ui.weightsPathLineEdit.blockSignals(False)
            self.updateWeightsStatus()
            self.updateButtons()

    # ------------------------------------------------------------------ panel state
    def updateButtons(self, caller=None, event=None) -> None:
        running = self._task is not None
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready and not running
        self.ui.applyButton.toolTip = _("Segment the liver of the input volume.") if ready else _(
            "Select an input volume first."
        )
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setVisible(running)
        for widget in (self.ui.inputsCollapsibleButton, self.ui.optionsCollapsibleButton,
                       self.ui.outputsCollapsibleButton):
            widget.enabled = not running

    @staticmethod
    def rememberedWeights(modelChoice: str) -> str:
        return str(qt.QSettings().value(SETTINGS_WEIGHTS_KEY.format(variant=variantOf(modelChoice)), "") or "")

    def onModelChanged(self, index: int) -> None:
        """Another model: show the weights file last used with it (this slot may run before the binding's)."""
        if not self._parameterNode or self._connectingGui or index < 0:
            return
        remembered = self.rememberedWeights(self.ui.modelComboBox.currentText)
        self._parameterNode.weightsPath = remembered
        self.ui.weightsPathLineEdit.currentPath = remembered
        self.updateWeightsStatus()

    def onWeightsPathChanged(self, path: str) -> None:
        if not self._parameterNode:
            return
        self._parameterNode.weightsPath = path
        key = SETTINGS_WEIGHTS_KEY.format(variant=variantOf(self.ui.modelComboBox.currentText))
        qt.QSettings().setValue(key, path)
        self.updateWeightsStatus()

    def updateWeightsStatus(self) -> None:
        """Say which variant the weights file holds, or why it cannot be used (reads the file safely)."""
        from RMAMambaSegmentationLib.mrml.runtime_info import torch_available

        if not self._parameterNode:
            return
        if not torch_available():
            self.ui.weightsStatusLabel.text = _(
                "PyTorch is not installed yet: it is installed (after asking) when you click Segment liver."
            )
            self.ui.deviceInfoLabel.text = ""
            return
        from RMAMambaSegmentationLib.mrml.runtime_info import inspect_weights

        path = self._parameterNode.weightsPath or None
        variant = variantOf(self.ui.modelComboBox.currentText or self._parameterNode.model)
        key = (path, variant, os.path.getmtime(path) if path and os.path.isfile(path) else None)
        if key == self._weightsStatusKey:
            return
        self._weightsStatusKey = key
        with slicer.util.tryWithErrorDisplay(_("Could not read the weights file."), waitCursor=True):
            status = inspect_weights(path, variant)
            colour = "green" if status.ok else "red"
            self.ui.weightsStatusLabel.text = f'<span style="color:{colour}">{status.message}</span>'
        self.updateDeviceInfo()

    def updateDeviceInfo(self, index=None) -> None:
        from RMAMambaSegmentationLib.mrml.runtime_info import describe_device, normalize_device, torch_available

        if self._parameterNode and torch_available():
            self.ui.deviceInfoLabel.text = describe_device(normalize_device(self._parameterNode.device))

    # ------------------------------------------------------------------ run
    def onApplyButton(self) -> None:
        """Check dependencies and inputs, ask before replacing a Liver segment, then start the background run."""
        if self._task is not None:
            return
        params = self._parameterNode
        if not self.logic.setupPythonRequirements(interactive=True):
            self.ui.statusLabel.text = _("PyTorch is needed to segment. Nothing was changed.")
            return
        from RMAMambaSegmentationLib.mrml.terminology import find_liver_segment_id

        replace = False
        output = params.outputSegmentation
        if output is not None and find_liver_segment_id(output) is not None:
            question = _('"{name}" already has a Liver segment. Replace it (its other segments are kept)?').format(
                name=output.GetName()
            )
            if not slicer.util.confirmYesNoDisplay(question, windowTitle=_("Replace the Liver segment?")):
                return
            replace = True
        with slicer.util.tryWithErrorDisplay(_("Cannot start the segmentation."), waitCursor=True):
            self._job = self.logic.prepare(
                params.inputVolume,
                weights=params.weightsPath or None,
                device=params.device,
                segmentationNode=output,
                replace=replace,
                variant=variantOf(params.model),
                intensity=params.intensityPreset,
                postprocess=params.postprocess,
                probabilityMap=params.probabilityMap,
            )
            self.startTask()

    def startTask(self) -> None:
        from RMAMambaSegmentationLib.mrml.background import BackgroundTask

        job = self._job
        self._task = BackgroundTask(lambda progress, cancel: self.logic.compute(job, progress=progress, cancel=cancel))
        self._startTime = time.monotonic()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Loading the model...")
        self.updateButtons()
        self._task.start()
        self._timer.start()

    def onPoll(self) -> None:
        """Main thread, every 100 ms: show progress; when the worker is done, write the result into the scene."""
        task = self._task
        if task is None:
            self._timer.stop()
            return
        elapsed = time.monotonic() - self._startTime
        for event in task.poll():
            self.ui.progressBar.value = round(100 * event.fraction)
            self.ui.statusLabel.text = f"{event.message} ({elapsed:.0f} s)"
        if not task.done:
            return
        self._timer.stop()
        job, self._task, self._job = self._job, None, None
        try:
            self.finishRun(job, task, elapsed)
        finally:
            self.updateButtons()

    def finishRun(self, job, task, elapsed: float) -> None:
        from RMAMambaSegmentationLib.errors import SegmentationCancelledError

        if isinstance(task.error, SegmentationCancelledError):
            self.ui.statusLabel.text = _("Cancelled after {seconds:.0f} s: nothing was changed.").format(
                seconds=elapsed
            )
            return
        with slicer.util.tryWithErrorDisplay(_("Liver segmentation failed; the scene was left as it was."),
                                             waitCursor=True):
            try:
                node = self.logic.apply(job, task.result())
            except Exception:
                self.ui.statusLabel.text = _("Failed: see the error message. Nothing was changed.")
                raise
            self._parameterNode.outputSegmentation = node
            slicer.util.setSliceViewerLayers(background=job.volume_node, fit=False)
            volumeMl = node.GetAttribute("RMAMamba.LiverVolumeMl")
            device = node.GetAttribute("RMAMamba.Device")
            self.ui.statusLabel.text = _("Done in {seconds:.1f} s on {device}: liver volume {ml} mL.").format(
                seconds=time.monotonic() - self._startTime, device=device, ml=volumeMl
            )

    def onCancelButton(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.cancelButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling after the current batch of slices...")

    def cancelRunningTask(self) -> None:
        """Stop a running inference and forget it (scene close, reload, module cleanup): nothing is written."""
        if self._task is not None:
            self._task.cancel()
            self._task.wait(30.0)
            self._task, self._job = None, None
        if self._timer is not None:
            self._timer.stop()


def saveSegmentEditorUndoState(segmentationNode) -> None:
    """Undo hook: ask the Segment Editor module's widget to save a state (only called when it edits the node)."""
    editorModule = getattr(slicer.modules, "segmenteditor", None)
    if editorModule is None:
        return
    editorWidget = editorModule.widgetRepresentation().self().editor
    if editorWidget.segmentationNode() is segmentationNode:
        editorWidget.saveStateForUndo()


#
# Logic
#


class RMAMambaSegmentationLogic(ScriptedLoadableModuleLogic):
    """Console and scripting entry point; a thin wrapper around ``RMAMambaSegmentationLib.SegmentationLogic``.

    Example (Slicer's Python console)::

        import RMAMambaSegmentation
        logic = RMAMambaSegmentation.RMAMambaSegmentationLogic()
        seg = logic.segment(getNode("MRI"), weights="rmamamba_t.pt", device="auto", intensity="MRI")
        rows = logic.segmentFiles(["case1.nii.gz", "dicom_case2"], "out", weights="w.pt")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.undoHook = None
        self._core = None

    def getParameterNode(self):
        return RMAMambaSegmentationParameterNode(super().getParameterNode())

    @property
    def core(self):
        """The library's ``SegmentationLogic`` (created on first use; keeps the loaded model between runs)."""
        if self._core is None:
            from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic

            self._core = SegmentationLogic(undoHook=lambda node: self.undoHook and self.undoHook(node))
        return self._core

    @staticmethod
    def setupPythonRequirements(interactive: bool = False) -> bool:
        """Make sure PyTorch is importable. Returns True when it is.

        PyTorch comes from the PyTorch extension (PyTorchUtils), which picks the build that fits the GPU driver.
        ``interactive=True`` asks the user before installing; otherwise nothing is installed and a RuntimeError
        says what to do. ``mamba-ssm`` (optional CUDA kernels) is never installed automatically.
        """
        from RMAMambaSegmentationLib.mrml.runtime_info import torch_available

        if torch_available():
            return True
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            message = _(
                "This module needs PyTorch, provided by the 'PyTorch' extension. Install it from the Extensions "
                "Manager (View > Extensions Manager, search 'PyTorch'), restart Slicer, then try again."
            )
            if interactive:
                slicer.util.errorDisplay(message)
                return False
            raise RuntimeError(message) from error
        if not interactive:
            raise RuntimeError(
                "PyTorch is not installed. Install it with "
                "PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True), or click 'Segment liver' in "
                "the module panel (it asks before installing)."
            )
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT
        )
        if torch is None:
            slicer.util.errorDisplay(_("PyTorch was not installed, so the liver cannot be segmented."))
            return False
        return True

    def segment(self, volumeNode, **kwargs):
        """Blocking segmentation, no dialogs: see ``RMAMambaSegmentationLib.SegmentationLogic.segment``.

        Keyword arguments: ``weights``, ``device``, ``segmentationNode``, ``replace``, ``progress``, ``cancel``,
        ``variant``, ``intensity``, ``postprocess``, ``probabilityMap``, ``batchSize``, ``model``.
        Returns the ``vtkMRMLSegmentationNode``; raises on any error (the scene is then unchanged).
        """
        self.setupPythonRequirements(interactive=False)
        return self.core.segment(volumeNode, **kwargs)

    def segmentFiles(self, paths, outputFolder, **options) -> list:
        """Segment files without loading them into the scene; writes ``.seg.nrrd``, masks and ``summary.csv``.

        Options: ``weights``, ``device``, ``intensity``, ``probability``, ``overwrite`` (resume skips finished
        cases), ``progress``, ``cancel``... (see ``RMAMambaSegmentationLib.volume.batch.segment_files``).
        Returns the summary rows (dicts).
        """
        self.setupPythonRequirements(interactive=False)
        return self.core.segmentFiles(paths, outputFolder, **options)

    def prepare(self, volumeNode, **kwargs):
        """Step 1 of a non-blocking run (main thread): validate and copy the voxels."""
        return self.core.prepare(volumeNode, **kwargs)

    def compute(self, job, **kwargs):
        """Step 2 (worker thread): the network; touches no MRML."""
        return self.core.compute(job, **kwargs)

    def apply(self, job, result):
        """Step 3 (main thread): write the Liver segment; returns the segmentation node."""
        return self.core.apply(job, result)


#
# Test
#


class RMAMambaSegmentationTest(ScriptedLoadableModuleTest):
    """End-to-end self-test in Slicer on the MR example shipped with the module, on CPU, in seconds.

    It runs the real logic (no mocks): a stand-in network for the geometry checks and the real RMA-Mamba-T with
    seeded random weights read from a file (64x64 input, for speed; the pytest suite checks the shipped weights).
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_segment_matches_library()
        self.setUp()
        self.test_rerun_and_cancel()
        self.setUp()
        self.test_weights_file()

    def exampleVolume(self):
        path = os.path.join(os.path.dirname(__file__), "Resources", "Testing", "example_mr_sm.nii.gz")
        return slicer.util.loadVolume(path)

    @staticmethod
    def standInModel(level: float = 0.5):
        import torch

        class RampModel(torch.nn.Module):
            def forward(self, x):
                ramp = torch.linspace(-1.0, 1.0, x.shape[-1]).view(1, 1, 1, -1)
                return 8.0 * (x[:, :1] - level) + ramp

        return RampModel()

    @staticmethod
    def exportedMask(segmentationNode, volumeNode):
        from RMAMambaSegmentationLib.mrml.terminology import find_liver_segment_id

        segmentIds = vtk.vtkStringArray()
        segmentIds.InsertNextValue(find_liver_segment_id(segmentationNode))
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentationNode, segmentIds, labelmap, volumeNode
        )
        mask = slicer.util.arrayFromVolume(labelmap) != 0
        slicer.mrmlScene.RemoveNode(labelmap)
        return mask

    def test_segment_matches_library(self) -> None:
        self.delayDisplay("Segment the MR example with a stand-in network")
        import numpy as np
        import SimpleITK as sitk

        from RMAMambaSegmentationLib import segment_image
        from RMAMambaSegmentationLib.mrml.terminology import LIVER_TERMINOLOGY, segment_terminology

        volume = self.exampleVolume()
        logic = RMAMambaSegmentationLogic()
        seg = logic.segment(volume, model=self.standInModel(), intensity="MRI")
        path = os.path.join(os.path.dirname(__file__), "Resources", "Testing", "example_mr_sm.nii.gz")
        expected = segment_image(sitk.ReadImage(path), model=self.standInModel(), intensity="MRI").mask
        self.assertTrue(np.array_equal(self.exportedMask(seg, volume), sitk.GetArrayFromImage(expected) != 0))
        segmentation = seg.GetSegmentation()
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
        self.assertEqual(segment.GetName(), "Liver")
        self.assertEqual(segment_terminology(segment), LIVER_TERMINOLOGY)
        self.assertIsNotNone(seg.GetAttribute("RMAMamba.WeightsSHA256"))
        self.delayDisplay("Test passed")

    def test_rerun_and_cancel(self) -> None:
        self.delayDisplay("Re-run replaces only Liver; cancel changes nothing")
        from RMAMambaSegmentationLib.errors import SegmentationCancelledError

        volume = self.exampleVolume()
        logic = RMAMambaSegmentationLogic()
        seg = logic.segment(volume, model=self.standInModel(0.4))
        other = seg.GetSegmentation().AddEmptySegment("", "Tumour", (1.0, 1.0, 0.0))
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(SegmentationCancelledError):
            logic.segment(volume, model=self.standInModel(0.6), segmentationNode=seg, replace=True,
                          batchSize=4, cancel=lambda: True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        logic.segment(volume, model=self.standInModel(0.6), segmentationNode=seg, replace=True)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 2)
        self.assertIsNotNone(seg.GetSegmentation().GetSegment(other))
        self.delayDisplay("Test passed")

    def test_weights_file(self) -> None:
        self.delayDisplay("Real RMA-Mamba-T from a weights file (seeded random weights, 64x64 input)")
        import tempfile

        import torch

        from RMAMambaSegmentationLib.checkpoints import file_sha256, save_checkpoint
        from RMAMambaSegmentationLib.errors import VariantMismatchError
        from RMAMambaSegmentationLib.network.rma_mamba import build_model
        from RMAMambaSegmentationLib.volume.model_card import ModelCard, write_model_card

        volume = self.exampleVolume()
        with tempfile.TemporaryDirectory() as folder:
            torch.manual_seed(0)
            weights = os.path.join(folder, "rmamamba_t_selftest.pt")
            save_checkpoint(weights, build_model("T"), half=True)
            write_model_card(weights, ModelCard(variant="T", input_size=(64, 64)))
            logic = RMAMambaSegmentationLogic()
            with self.assertRaises(VariantMismatchError):
                logic.segment(volume, weights=weights, variant="S", device="cpu")
            seg = logic.segment(volume, weights=weights, variant="T", device="cpu")
            self.assertEqual(seg.GetAttribute("RMAMamba.WeightsSHA256"), file_sha256(weights))
            self.assertEqual(seg.GetAttribute("RMAMamba.ModelVariant"), "RMA-Mamba-T")
        logging.info("self-test segmentation: %s mL", seg.GetAttribute("RMAMamba.LiverVolumeMl"))
        self.delayDisplay("Test passed")
