"""3D Slicer module: liver segmentation with RMA-Mamba (default weights: T2-weighted MRI).

Thin by design: the work is done by ``RMAMambaSegmentationLib.SegmentationLogic`` (Qt-free, tested headless; the
panel's runs go to a worker process), the panel's decisions by ``RMAMambaSegmentationLib.panel.controller``; this
file holds the panel (Widget: binds signals, renders the controller's view), the console wrapper (Logic) and the
in-Slicer self-test (Test). Nothing heavy is imported at start-up: PyTorch is checked (and installed, with the
user's consent) only when a segmentation is asked for.
"""

import html
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
#: QSettings key: the weights file last used with each model (a per-user preference, not scene state).
SETTINGS_WEIGHTS_KEY = "RMAMambaSegmentation/WeightsPath/{variant}"
POLL_INTERVAL_MS = 100
#: The extension's EXTENSION_HOMEPAGE (CMakeLists.txt): the project README.
DOCUMENTATION_URL = "https://github.com/rmamamba/SlicerRMAMambaSegmentation#readme"


def variantOf(modelChoice: str) -> str:
    """``"RMA-Mamba-T"`` -> ``"T"``, ``"SRMA-Mamba"`` -> ``"SRMA"``, ``"U-Net (2D baseline)"`` -> ``"UNET"``."""
    from RMAMambaSegmentationLib.registry import variant_of_choice

    return variant_of_choice(modelChoice)


class RMAMambaSegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Liver Segmentation (RMA-Mamba)")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["RMAMambaSegmentation developers (rmamamba)"]
        self.parent.helpText = _(
            "Segments the liver in abdominal volumes with the RMA-Mamba networks (2D, slice by slice; SRMA-Mamba in "
            "3D windows). The default weights shipped with the extension are for <b>T2-weighted MRI</b> only "
            "(trained on CHAOS T2-SPIR); other MRI sequences and CT need other weights (the authors' checkpoints, "
            "or weights trained as the documentation describes). Every result carries a quality verdict "
            "(<i>ok</i> or <i>check</i>) and warnings when the scan does not match the weights. "
            "Choose the input volume, the model and its weights file (empty: the weights shipped for that model), "
            "then click <b>Segment liver</b>. The result is a segmentation with one <i>Liver</i> segment, ready for "
            "Segment Editor. From Slicer's Python console: "
            "<code>RMAMambaSegmentation.RMAMambaSegmentationLogic().segment(volumeNode, weights=path)</code>. "
            'Documentation: <a href="{url}">{url}</a>. Research use only, not for clinical decisions.'
        ).format(url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _(
            "RMA-Mamba: Zeng et al., 'Reverse Mamba Attention Network for liver segmentation'. "
            "Extension structure follows SlicerTotalSegmentator, SlicerMONAIAuto3DSeg and SlicerNNUnet."
        )


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
        self._guiMapping = {}
        self._weightsBox = None
        self._timer = None
        self._connectingGui = False

    def setup(self) -> None:
        from RMAMambaSegmentationLib.panel.controller import PanelController

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RMAMambaSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # the widgets bound to the parameter node: those with a SlicerParameterName in the .ui
        self._guiMapping = {widget.property("SlicerParameterName"): widget
                            for widget in uiWidget.findChildren(qt.QWidget) if widget.property("SlicerParameterName")}

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
        # every edit of the box (typing, browsing, the history list), not only the paths its validator accepts
        self._weightsBox = self.ui.weightsPathLineEdit.findChildren(qt.QComboBox)[0]  # comboBox() is not wrapped
        self._weightsBox.connect("editTextChanged(QString)", self.onWeightsTextChanged)
        # connected before the binding, so this slot sees the parameter node's previous model
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.outputSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onOutputChanged)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self.controller is not None:
            self.controller.shutdown()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

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
        """The scene's parameter node, completed (first volume, the weights last used with its model) before the
        panel shows it, so that the box shows the weights a run will use."""
        from RMAMambaSegmentationLib.panel.controller import first_input_volume

        params = self.logic.getParameterNode()
        with slicer.util.NodeModify(params):
            volume = None if params.inputVolume else first_input_volume(slicer.mrmlScene)
            if volume is not None:
                params.inputVolume = volume
            if not params.weightsPath:
                params.weightsPath = self.rememberedWeights(params.model)
        self.setParameterNode(params)

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the panel to a parameter node, once per node: re-entering the module must not add connections
        (Slicer 5.6/5.8's ``connectGui`` returns no tag to undo them with; ``connectParametersToGui`` does)."""
        node = inputParameterNode.parameterNode if inputParameterNode is not None else None
        bound = self._parameterNode.parameterNode if self._parameterNode is not None else None
        if node is None or node is not bound:
            if self._parameterNode is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._parameterNode, self._parameterNodeGuiTag = inputParameterNode, None
            if inputParameterNode is not None:
                self._connectingGui = True  # filling the combo boxes must not reset the scene's weights path
                try:
                    self._parameterNodeGuiTag = inputParameterNode.connectParametersToGui(self._guiMapping)
                finally:
                    self._connectingGui = False
                self.addObserver(inputParameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        """Show the whole parameter node at once (model and weights path always together)."""
        params = self._parameterNode
        if params is None:
            return
        self.render(self.controller.parametersChanged(hasInput=bool(params.inputVolume), weightsPath=params.weightsPath,
                                                      variant=variantOf(params.model), device=params.device))

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
        if self.ui.weightsPathLineEdit.currentPath != view.weightsPath:
            wasBlocked = self._weightsBox.blockSignals(True)  # shown, not an edit to echo back
            self.ui.weightsPathLineEdit.currentPath = view.weightsPath
            self._weightsBox.blockSignals(wasBlocked)
        colour = "green" if view.weightsOk else "red"
        self.ui.weightsStatusLabel.text = f'<span style="color:{colour}">{html.escape(view.weightsText)}</span>'
        self.ui.deviceInfoLabel.text = view.deviceText
        self.ui.show3DButton.enabled = view.show3DEnabled
        lines = [_("Warning: {text}").format(text=w) for w in view.warnings] + ([view.quality] if view.quality else [])
        self.ui.warningsLabel.text = "<br>".join(html.escape(line) for line in lines)
        message = self.controller.takeErrorDialog()
        if message:
            slicer.util.errorDisplay(_("Liver segmentation: nothing was changed.") + "\n\n" + message)

    def onOutputChanged(self, node) -> None:
        """Slicer's Show 3D button acts on the chosen output segmentation (the surface is built when asked)."""
        self.ui.show3DButton.setSegmentationNode(node)
        self.render(self.controller.outputChanged(node))

    @staticmethod
    def rememberedWeights(modelChoice: str) -> str:
        return str(qt.QSettings().value(SETTINGS_WEIGHTS_KEY.format(variant=variantOf(modelChoice)), "") or "")

    def onModelChanged(self, index: int) -> None:
        """The user chose another model: write it with the weights file last used with it in one modification (the
        binding refreshes the panel on each; a path alone would show, and snap back to, the previous model)."""
        params = self._parameterNode
        model = self.ui.modelComboBox.currentText
        if params is None or self._connectingGui or index < 0 or params.model == model:
            return  # no node yet, the binding filling the box, or the change came from the node itself
        with slicer.util.NodeModify(params):
            params.model = model
            params.weightsPath = self.rememberedWeights(model)

    def onWeightsTextChanged(self, text: str) -> None:
        """The weights box changed: the run uses what it shows ("" = the shipped weights); remembered per model."""
        params = self._parameterNode
        if params is None or self._connectingGui:
            return
        qt.QSettings().setValue(SETTINGS_WEIGHTS_KEY.format(variant=variantOf(params.model)), text)
        params.weightsPath = text

    # ------------------------------------------------------------------ run
    def onApplyButton(self) -> None:
        """Check PyTorch and the output, ask before replacing a Liver segment, then start the run in the worker."""
        params = self._parameterNode
        if not self.logic.setupPythonRequirements(interactive=True):
            self.ui.statusLabel.text = _("PyTorch is needed to segment. Nothing was changed.")
            return
        output = params.outputSegmentation
        question = self.controller.replaceQuestion(output)
        if question and not slicer.util.confirmYesNoDisplay(question, windowTitle=_("Replace the Liver segment?")):
            return
        if self.controller.apply(
            params.inputVolume,
            weightsPath=self.ui.weightsPathLineEdit.currentPath,  # what the box shows
            device=self.ui.deviceComboBox.currentText,
            variant=variantOf(params.model),
            intensity=params.intensityPreset,
            postprocess=params.postprocess,
            probabilityMap=params.probabilityMap,
            segmentationNode=output,
            replace=question is not None,
        ):
            self._timer.start()
        self.render(self.controller.view())

    def onPoll(self) -> None:
        """Every 100 ms while a run goes on: show its progress; when it ends (or the tick fails), stop polling."""
        try:
            if self.controller.poll():
                self._timer.stop()
                node = self.controller.outputNode
                if node is not None:
                    self._parameterNode.outputSegmentation = node  # the selector, then the Show 3D button, follow
                    slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, fit=False)
        except Exception:
            self._timer.stop()  # a failing tick must not repeat every 100 ms
            raise
        finally:
            self.render(self.controller.view())


def saveSegmentEditorUndoState(segmentationNode) -> None:
    """Undo hook: the Segment Editor module's widget saves a state (only called when an editor edits the node)."""
    from RMAMambaSegmentationLib.mrml.undo import save_editor_state

    editorModule = getattr(slicer.modules, "segmenteditor", None)
    editorWidget = editorModule.widgetRepresentation().self().editor if editorModule is not None else None
    save_editor_state(editorWidget, segmentationNode)


def installTorch(arguments: list) -> None:
    """Run light-the-torch (installed first when missing) with ``arguments`` in Slicer's Python; raises if it fails."""
    import importlib.util
    import shutil

    python = shutil.which("PythonSlicer")
    if python is None:
        raise RuntimeError("PythonSlicer was not found on the PATH Slicer gives its processes")
    with slicer.util.WaitCursor():
        if importlib.util.find_spec("light_the_torch") is None:
            slicer.util.pip_install("light-the-torch>=0.5")
        process = slicer.util.launchConsoleProcess([python, "-m", "light_the_torch", *arguments])
        slicer.util.logProcessOutput(process)  # raises CalledProcessError when it fails


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
        """Make sure PyTorch (``runtime_info.TORCH_REQUIREMENT``) is installed, without importing it; True when it is.

        ``interactive=True`` asks before installing or upgrading it with light-the-torch (the build that fits the GPU
        driver, as the PyTorch extension does; torch only) and shows any failure in a dialog; otherwise nothing is
        installed and a RuntimeError says what to do. ``mamba-ssm`` (optional CUDA kernels) is never installed.
        """
        from RMAMambaSegmentationLib.panel.runtime_info import ensure_torch

        return ensure_torch(
            interactive=interactive,
            confirm=lambda question: slicer.util.confirmOkCancelDisplay(question, windowTitle=_("Install PyTorch?")),
            install=installTorch,
            show_error=lambda message: slicer.util.errorDisplay(message, windowTitle=_("PyTorch")),
        )

    def segment(self, volumeNode, **kwargs):
        """Blocking segmentation, no dialogs (``SegmentationLogic.segment``: ``weights``, ``device``, ``variant``,
        ``intensity``, ``segmentationNode``, ``replace``, ``cancel``...). Returns the ``vtkMRMLSegmentationNode``;
        raises on any error (the scene is then unchanged)."""
        self.setupPythonRequirements(interactive=False)
        return self.core.segment(volumeNode, **kwargs)

    def segmentFiles(self, paths, outputFolder, **options) -> list:
        """Segment files without loading them into the scene (``batch.segment_files.segment_files``): writes
        ``.seg.nrrd``, masks and ``summary.csv``; returns the summary rows (dicts)."""
        self.setupPythonRequirements(interactive=False)
        return self.core.segmentFiles(paths, outputFolder, **options)

    def start(self, volumeNode, **kwargs):
        """Non-blocking run in the worker process (``SegmentationLogic.start``): ``run.poll()``, ``run.done``,
        ``run.cancel()``, ``run.finish()`` (main thread)."""
        self.setupPythonRequirements(interactive=False)
        return self.core.start(volumeNode, **kwargs)

    def shutdown(self) -> None:
        """End the worker process (it also exits by itself after a few idle minutes)."""
        if self._core is not None:
            self._core.shutdown()


class RMAMambaSegmentationTest(ScriptedLoadableModuleTest):
    """End-to-end self-test in Slicer on the MR example shipped with the module, on CPU, in seconds: the module's
    Logic (no mocks) with a stand-in network and with the real RMA-Mamba-T (seeded weights), in this process and in
    the worker. The checks are ``RMAMambaSegmentationLib.panel.self_test``'s; skipped without a usable PyTorch."""

    EXAMPLE = os.path.join(os.path.dirname(__file__), "Resources", "Testing", "example_mr_sm.nii.gz")

    @staticmethod
    def skipReason():
        from RMAMambaSegmentationLib.panel.runtime_info import torch_problem

        return torch_problem()

    def setUp(self) -> None:
        reason = self.skipReason()
        if reason:
            self.skipTest(reason)  # unittest runners (CTest) report a skip
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        reason = self.skipReason()
        if reason:  # Reload and Test: a message, not a traceback
            self.delayDisplay(_("Self-test skipped: {reason}").format(reason=reason))
            return
        for test in (self.test_segment_matches_library, self.test_rerun_and_cancel, self.test_weights_file):
            self.setUp()
            test()

    def test_segment_matches_library(self) -> None:
        from RMAMambaSegmentationLib.panel.self_test import check_segment_matches_library

        self.delayDisplay("Segment the MR example with a stand-in network: the library's mask, voxel for voxel")
        check_segment_matches_library(RMAMambaSegmentationLogic(), slicer.util.loadVolume(self.EXAMPLE), self.EXAMPLE)

    def test_rerun_and_cancel(self) -> None:
        from RMAMambaSegmentationLib.panel.self_test import check_rerun_and_cancel

        self.delayDisplay("Re-run replaces only Liver; cancel changes nothing")
        check_rerun_and_cancel(RMAMambaSegmentationLogic(), slicer.util.loadVolume(self.EXAMPLE))

    def test_weights_file(self) -> None:
        from RMAMambaSegmentationLib.panel.self_test import check_weights_file

        self.delayDisplay("Real RMA-Mamba-T from a weights file, in Slicer and in the worker process (PythonSlicer)")
        check_weights_file(RMAMambaSegmentationLogic(), slicer.util.loadVolume(self.EXAMPLE),
                           idle=lambda: (slicer.app.processEvents(), time.sleep(0.05)))
        self.delayDisplay("Test passed")
