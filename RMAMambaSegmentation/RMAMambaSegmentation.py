"""3D Slicer module: liver segmentation with RMA-Mamba (default weights: T2-weighted MRI).

Thin by design: the work is done by ``RMAMambaSegmentationLib.SegmentationLogic`` (Qt-free, tested headless; the
panel's runs go to a worker process), the panel's decisions by ``RMAMambaSegmentationLib.panel.controller``; this
file holds the panel (Widget: binds signals, renders the controller's view), the console/scripting wrapper (Logic)
and the in-Slicer self-test (Test).
Nothing heavy is imported at Slicer start-up: PyTorch is checked (and, with the user's consent, installed through
the PyTorch extension) only when a segmentation is asked for.
"""

import html
import logging
import os
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

#: The library's ``registry.panel_choices()`` and ``devices.DEVICE_CHOICES``, spelled out so that nothing of the
#: library loads at Slicer start-up (Testing/test_module_ui.py checks they match).
MODEL_CHOICES = ["RMA-Mamba-T", "RMA-Mamba-S", "SRMA-Mamba", "U-Net (2D baseline)"]
DEVICE_CHOICES = ["auto", "CPU", "CUDA GPU", "Apple GPU"]
INTENSITY_CHOICES = ["MRI", "CT"]
#: QSettings keys: per-user preferences that are not scene state.
SETTINGS_WEIGHTS_KEY = "RMAMambaSegmentation/WeightsPath/{variant}"
TORCH_REQUIREMENT = ">=2.1"
POLL_INTERVAL_MS = 100


def variantOf(modelChoice: str) -> str:
    """``"RMA-Mamba-T"`` -> ``"T"``, ``"SRMA-Mamba"`` -> ``"SRMA"``, ``"U-Net (2D baseline)"`` -> ``"UNET"``."""
    from RMAMambaSegmentationLib.registry import variant_of_choice

    return variant_of_choice(modelChoice)


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
            "Segments the liver in abdominal volumes with the RMA-Mamba networks (2D, slice by slice; SRMA-Mamba in "
            "3D windows). The default weights shipped with the extension are for <b>T2-weighted MRI</b> only "
            "(trained on CHAOS T2-SPIR); other MRI sequences and CT need other weights: the authors' checkpoints or "
            "your own trained with <code>rmamamba train</code>. Every result carries a quality verdict "
            "(<i>ok</i> or <i>check</i>) and warnings when the scan does not match the weights. "
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
    """The panel: binds Qt signals to the Qt-free ``PanelController`` and shows its ``view()``; nothing else.

    The network runs in a worker process (``SegmentationLogic.start``); a QTimer polls the run.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.controller = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._connectingGui = False

    def setup(self) -> None:
        from RMAMambaSegmentationLib.panel.controller import PanelController

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RMAMambaSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = RMAMambaSegmentationLogic()
        self.logic.undoHook = saveSegmentEditorUndoState
        self.controller = PanelController(self.logic.core)
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", lambda checked: self.render(self.controller.cancel()))
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsPathChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)
        # the label follows the text the signal carries (the parameter node may be updated after this slot)
        self.ui.deviceComboBox.connect(
            "currentTextChanged(QString)", lambda text: self.render(self.controller.deviceChanged(text))
        )
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self.controller is not None:
            self.controller.shutdown()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._timer.stop()
        self.controller.abandon()  # kills the worker's run without waiting; nothing is written
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer reload: end the worker, then drop every library module so they are all imported afresh."""
        from RMAMambaSegmentationLib.panel.reload import unload_library

        if self._timer is not None:
            self._timer.stop()
        if self.controller is not None:
            self.controller.shutdown()
        unload_library()
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._connectingGui = True  # filling the combo boxes must not reset the scene's weights path
            try:
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            finally:
                self._connectingGui = False
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.ui.weightsPathLineEdit.blockSignals(True)
            self.ui.weightsPathLineEdit.currentPath = self._parameterNode.weightsPath
            self.ui.weightsPathLineEdit.blockSignals(False)
            params = self._parameterNode
            self.render(self.controller.open(hasInput=bool(params.inputVolume), weightsPath=params.weightsPath,
                                             variant=variantOf(params.model), device=params.device))

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.render(self.controller.inputChanged(bool(self._parameterNode and self._parameterNode.inputVolume)))

    # ------------------------------------------------------------------ what is shown
    def render(self, view) -> None:
        """Copy the controller's view to the widgets; show its error once, in a dialog."""
        self.ui.statusLabel.text = view.status
        self.ui.progressBar.value = view.progress
        self.ui.progressBar.setVisible(view.progressVisible)
        self.ui.applyButton.enabled = view.applyEnabled
        self.ui.applyButton.toolTip = view.applyToolTip
        self.ui.cancelButton.enabled = view.cancelEnabled
        for widget in (self.ui.inputsCollapsibleButton, self.ui.optionsCollapsibleButton,
                       self.ui.outputsCollapsibleButton):
            widget.enabled = view.optionsEnabled
        colour = "green" if view.weightsOk else "red"
        self.ui.weightsStatusLabel.text = f'<span style="color:{colour}">{html.escape(view.weightsText)}</span>'
        self.ui.deviceInfoLabel.text = view.deviceText
        lines = [f"Warning: {w}" for w in view.warnings] + ([view.quality] if view.quality else [])
        self.ui.warningsLabel.text = "<br>".join(html.escape(line) for line in lines)
        message = self.controller.takeErrorDialog()
        if message:
            slicer.util.errorDisplay(_("Liver segmentation: nothing was changed.") + "\n\n" + message)

    def onOutputChanged(self, node) -> None:
        """Slicer's Show 3D button acts on the chosen output segmentation (the surface is built when asked)."""
        self.ui.show3DButton.setSegmentationNode(node)
        self.ui.show3DButton.enabled = node is not None

    @staticmethod
    def rememberedWeights(modelChoice: str) -> str:
        return str(qt.QSettings().value(SETTINGS_WEIGHTS_KEY.format(variant=variantOf(modelChoice)), "") or "")

    def onModelChanged(self, index: int) -> None:
        """Another model: show the weights file last used with it (this slot may run before the binding's)."""
        if not self._parameterNode or self._connectingGui or index < 0:
            return
        model = self.ui.modelComboBox.currentText
        remembered = self.rememberedWeights(model)
        self._parameterNode.weightsPath = remembered
        self.ui.weightsPathLineEdit.currentPath = remembered
        self.render(self.controller.weightsChanged(remembered, variantOf(model)))

    def onWeightsPathChanged(self, path: str) -> None:
        if not self._parameterNode:
            return
        self._parameterNode.weightsPath = path
        model = self.ui.modelComboBox.currentText
        qt.QSettings().setValue(SETTINGS_WEIGHTS_KEY.format(variant=variantOf(model)), path)
        self.render(self.controller.weightsChanged(path, variantOf(model)))

    # ------------------------------------------------------------------ run
    def onApplyButton(self) -> None:
        """Check PyTorch and the output, ask before replacing a Liver segment, then start the run in the worker."""
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
        if self.controller.apply(
            params.inputVolume,
            weightsPath=params.weightsPath or None,
            device=self.ui.deviceComboBox.currentText,
            variant=variantOf(params.model),
            intensity=params.intensityPreset,
            postprocess=params.postprocess,
            probabilityMap=params.probabilityMap,
            segmentationNode=output,
            replace=replace,
        ):
            self._timer.start()
        self.render(self.controller.view())

    def onPoll(self) -> None:
        """Every 100 ms while a run goes on: show its progress; when it ends, show the result."""
        if self.controller.poll():
            self._timer.stop()
            node = self.controller.outputNode
            if node is not None:
                self._parameterNode.outputSegmentation = node  # the selector, then the Show 3D button, follow
                slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=False)
        self.render(self.controller.view())


def saveSegmentEditorUndoState(segmentationNode) -> None:
    """Undo hook: the Segment Editor module's widget saves a state (only called when an editor edits the node)."""
    from RMAMambaSegmentationLib.mrml.undo import save_editor_state

    editorModule = getattr(slicer.modules, "segmenteditor", None)
    editorWidget = editorModule.widgetRepresentation().self().editor if editorModule is not None else None
    save_editor_state(editorWidget, segmentationNode)


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
        from RMAMambaSegmentationLib.panel.runtime_info import torch_available

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
        cases), ``progress``, ``cancel``... (see ``RMAMambaSegmentationLib.batch.segment_files.segment_files``).
        Returns the summary rows (dicts).
        """
        self.setupPythonRequirements(interactive=False)
        return self.core.segmentFiles(paths, outputFolder, **options)

    def start(self, volumeNode, **kwargs):
        """Non-blocking run in the worker process: see ``RMAMambaSegmentationLib.SegmentationLogic.start``.

        Returns a run: ``run.poll()``, ``run.done``, ``run.cancel()``, ``run.finish()`` (main thread).
        """
        self.setupPythonRequirements(interactive=False)
        return self.core.start(volumeNode, **kwargs)

    def shutdown(self) -> None:
        """End the worker process (it also exits by itself after a few idle minutes)."""
        if self._core is not None:
            self._core.shutdown()


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

        import numpy as np
        import torch

        from RMAMambaSegmentationLib.errors import VariantMismatchError
        from RMAMambaSegmentationLib.network.build import build_model
        from RMAMambaSegmentationLib.weights.checkpoints import file_sha256, save_checkpoint
        from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

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

            self.delayDisplay("The same weights in the worker process (PythonSlicer), as the panel runs them")
            run = logic.start(volume, weights=weights, variant="T", device="cpu")
            deadline = time.monotonic() + 300
            while not run.done and time.monotonic() < deadline:
                slicer.app.processEvents()
                time.sleep(0.05)
            fromWorker = run.finish()
            logic.shutdown()
            self.assertTrue(np.array_equal(self.exportedMask(fromWorker, volume), self.exportedMask(seg, volume)))
        logging.info("self-test segmentation: %s mL", seg.GetAttribute("RMAMamba.LiverVolumeMl"))
        self.delayDisplay("Test passed")
