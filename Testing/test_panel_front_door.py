"""The panel's controller after issue 30 ("front door, second pass"): the weights box is what a run uses, the
model and its weights reach the view together, the shipped weights of each model, a failing poll, Show 3D, the
Widget's remaining decisions and translatable texts. Real MRML (slicer-core) and real worker runs."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from test_panel_controller import EXAMPLE, WORKER, run_to_end, start

from RMAMambaSegmentationLib import SegmentationLogic
from RMAMambaSegmentationLib.panel.controller import (
    PanelController,
    PanelState,
    first_input_volume,
    quality_text,
    weights_path_from_text,
)
from RMAMambaSegmentationLib.worker import protocol


@pytest.fixture
def controller():
    panel = PanelController(SegmentationLogic(workerOptions=WORKER))
    yield panel
    panel.shutdown()


def test_weights_box_text_is_what_the_run_uses():
    """Whatever the box shows is the run's weights: "" means the shipped ones, any extension in any case."""
    assert weights_path_from_text("") is None
    assert weights_path_from_text("   ") is None
    assert weights_path_from_text(None) is None
    assert weights_path_from_text("model.p") == "model.p"  # what is typed, not the last path a validator liked
    assert weights_path_from_text("  /data/X.PT ") == "/data/X.PT"
    assert weights_path_from_text('"C:\\w\\model.pth.tar"') == "C:\\w\\model.pth.tar"
    assert weights_path_from_text("'w.ckpt'") == "w.ckpt"


def test_box_text_with_blanks_and_any_extension_runs(mrml, tiny_t_weights, controller, tmp_path):
    """Item 2: ``X.PTH.TAR`` typed with blanks around is the file the label describes and the run uses."""
    import shutil

    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256
    from RMAMambaSegmentationLib.weights.model_card import model_card_path

    weights = tmp_path / "TINY.PTH.TAR"
    shutil.copy(tiny_t_weights, weights)
    shutil.copy(model_card_path(tiny_t_weights), model_card_path(weights))
    text = f"  {weights}  "
    view = controller.open(hasInput=True, weightsPath=text, variant="T", device="CPU")
    assert view.weightsPath == text and view.weightsOk
    assert view.weightsText == "RMA-Mamba-T weights (TINY.PTH.TAR); licence: test licence"
    assert start(controller, mrml.load_volume(EXAMPLE), text), controller.takeErrorDialog()
    run_to_end(controller)
    assert controller.view().state is PanelState.DONE
    assert controller.outputNode.GetAttribute("RMAMamba.WeightsSHA256") == file_sha256(weights)


def test_empty_box_runs_the_weights_shipped_for_the_model(mrml, controller):
    """Items 2 and 4: an emptied box with the U-Net chosen shows and runs the shipped U-Net weights."""
    from RMAMambaSegmentationLib.weights.checkpoints import file_sha256
    from RMAMambaSegmentationLib.weights.location import bundled_weights_path

    view = controller.open(hasInput=True, weightsPath="", variant="UNET", device="CPU")
    assert view.weightsOk and view.weightsPath == ""
    assert view.weightsText.startswith("Default U-Net (2D baseline) weights (unet_chaos_t2spir.pt)")
    assert start(controller, mrml.load_volume(EXAMPLE), "", variant="UNET"), controller.takeErrorDialog()
    run_to_end(controller)
    assert controller.view().state is PanelState.DONE
    shipped = file_sha256(bundled_weights_path("UNET"))
    assert controller.outputNode.GetAttribute("RMAMamba.WeightsSHA256") == shipped


def test_model_switch_shows_the_model_with_its_own_weights(tiny_t_weights, tmp_path, controller):
    """Item 3: the parameter node's model and weights path reach the view in one call, so the view never pairs
    the new weights with the old model (what showed "Variant mismatch" and snapped the model back)."""
    s_weights = tmp_path / "s.pt"
    s_weights.write_bytes(b"not read by the panel")
    (tmp_path / "s.json").write_text(json.dumps({"variant": "S", "licence": "CC0"}), encoding="utf-8")
    before = controller.open(hasInput=True, weightsPath=str(tiny_t_weights), variant="T", device="auto")
    assert before.weightsOk and before.weightsPath == str(tiny_t_weights)
    after = controller.parametersChanged(hasInput=True, weightsPath=str(s_weights), variant="S", device="auto")
    assert after.weightsOk and after.weightsPath == str(s_weights)
    assert after.weightsText == "RMA-Mamba-S weights (s.pt); licence: CC0"
    mixed = controller.parametersChanged(hasInput=True, weightsPath=str(s_weights), variant="T", device="auto")
    assert not mixed.weightsOk and mixed.weightsText.startswith("Variant mismatch")


def test_remembered_weights_are_shown_on_first_open(tiny_t_weights, controller):
    """Item 5: the path the panel opens with is the one shown in the box and described by the label."""
    view = controller.open(hasInput=False, weightsPath=str(tiny_t_weights), variant="T", device="auto")
    assert view.weightsPath == str(tiny_t_weights)
    assert view.weightsOk and not view.weightsText.startswith("Default")


def test_a_failing_poll_ends_the_run(mrml, tiny_t_weights, controller):
    """Item 8: an error while reading the run (here a malformed reply of the worker) ends it once, as a failure,
    with the worker stopped; poll() says it ended, so the panel's timer stops."""
    volume = mrml.load_volume(EXAMPLE)
    nodes = mrml.node_ids()
    controller.inputChanged(True)
    assert start(controller, volume, tiny_t_weights)
    run = controller.run
    pid = run.processId
    run._worker._replies.put({"type": protocol.PROGRESS, "message": "a reply without its fraction"})
    assert controller.poll() is True
    view = controller.view()
    assert view.state is PanelState.FAILED and view.status.startswith("Failed after")
    assert "fraction" in controller.takeErrorDialog()
    assert controller.run is None and run.done and view.applyEnabled
    assert controller.poll() is False  # nothing left to poll
    assert mrml.node_ids() == nodes
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.02)


def test_show_3d_only_with_something_to_show(mrml, tiny_t_weights, controller):
    """Item 8: Show 3D is disabled without a segmentation, with an empty one and during a run."""
    assert not controller.view().show3DEnabled
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert not controller.outputChanged(empty).show3DEnabled
    controller.inputChanged(True)
    assert start(controller, mrml.load_volume(EXAMPLE), tiny_t_weights, segmentationNode=empty)
    assert not controller.view().show3DEnabled
    run_to_end(controller)
    assert controller.outputNode is empty and controller.view().show3DEnabled
    assert not controller.outputChanged(None).show3DEnabled


def test_replace_question_and_first_input_volume(mrml, controller):
    """The Widget's remaining decisions, on real nodes: which volume to propose, when to ask before replacing."""
    import numpy as np

    from RMAMambaSegmentationLib.mrml.segment_writer import write_liver_mask

    assert first_input_volume(mrml.scene) is None
    mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    assert first_input_volume(mrml.scene) is None  # a label map is not proposed as input
    volume = mrml.load_volume(EXAMPLE)
    assert first_input_volume(mrml.scene) is volume

    output = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Mine")
    assert controller.replaceQuestion(None) is None
    assert controller.replaceQuestion(output) is None
    output.GetSegmentation().AddEmptySegment("", "Tumour", (1.0, 1.0, 0.0))
    assert controller.replaceQuestion(output) is None
    mask = np.zeros(tuple(reversed(volume.GetImageData().GetDimensions())), dtype=np.uint8)
    mask[1:3, 10:20, 10:20] = 1
    write_liver_mask(output, volume, mask)
    assert controller.replaceQuestion(output) == (
        '"Mine" already has a Liver segment. Replace it (its other segments are kept)?')


def test_user_texts_go_through_slicer_translation(monkeypatch, controller):
    """Item 8: without Slicer's translation (slicer-core) texts stay as written; with it, each goes through
    ``slicer.i18n.translate`` in the controller file's context, as Slicer's ``tr`` does."""
    import types

    import RMAMambaSegmentationLib.panel.controller as panel

    assert panel._("Cancelling...") == "Cancelling..."
    contexts = []

    def translate(context, text):
        contexts.append(context)
        return f"<{text}>"

    i18n = types.ModuleType("slicer.i18n")
    i18n.translate = translate
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.setattr(panel, "_translator", [])
    assert controller.inputChanged(False).applyToolTip == "<Select an input volume first.>"
    assert quality_text({"quality": {"status": "ok", "reasons": []}}) == "<Quality: ok>"
    assert set(contexts) == {"controller"}


def test_every_user_text_of_the_controller_is_translatable():
    """Item 8, statically: each sentence the controller shows is a literal inside ``_(...)`` (what Slicer's
    translation tools extract); only docstrings, log messages and the error texts of others are left out."""
    import ast
    import inspect

    import RMAMambaSegmentationLib.panel.controller as panel

    tree = ast.parse(inspect.getsource(panel))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None:
            skipped.add(id(node.body[0].value))
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name == "_" or name.startswith("logger."):
                skipped.update(id(child) for child in ast.walk(node))
    sentences = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in skipped and " " in node.value.strip()
                 and any(c.isalpha() for c in node.value)]
    assert sentences == []
    translated = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "_"]
    assert len(translated) >= 10
