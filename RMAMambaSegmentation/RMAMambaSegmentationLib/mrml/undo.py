"""Segment Editor undo: save a state before this module overwrites a segmentation the editor is working on.

The editor's undo stack lives in its Qt widget, so the library only finds out *whether* an editor is editing the
segmentation (``vtkMRMLSegmentEditorNode`` in the scene) and calls a hook supplied by the GUI layer. A failing hook
is logged and never fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Called with the segmentation node just before it is modified; the Slicer module passes one that calls
#: ``qMRMLSegmentEditorWidget.saveStateForUndo()``.
UndoHook = Callable[[object], None]


def edited_by_segment_editor(segmentation_node) -> bool:
    """True when a Segment Editor parameter node in the scene has ``segmentation_node`` selected."""
    import slicer

    scene = segmentation_node.GetScene()
    if scene is None:
        return False
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode")):
        editor_node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentEditorNode")
        if not isinstance(editor_node, slicer.vtkMRMLSegmentEditorNode):
            continue
        edited = editor_node.GetSegmentationNode()
        if edited is not None and edited.GetID() == segmentation_node.GetID():
            return True
    return False


def save_undo_state(segmentation_node, hook: UndoHook | None) -> bool:
    """Call ``hook(segmentation_node)`` when a Segment Editor edits the node; True when a state was saved."""
    if hook is None or not edited_by_segment_editor(segmentation_node):
        return False
    try:
        hook(segmentation_node)
    except Exception:  # best effort: losing an undo point must not lose the segmentation
        logger.warning("could not save a Segment Editor undo state before writing the liver", exc_info=True)
        return False
    return True


def save_editor_state(editor_widget, segmentation_node) -> bool:
    """The Slicer module's hook body: ask a Segment Editor widget (``qMRMLSegmentEditorWidget``: its
    ``segmentationNode()`` and ``saveStateForUndo()``) to save an undo state when it edits ``segmentation_node``.
    True when a state was saved."""
    if editor_widget is None:
        return False
    edited = editor_widget.segmentationNode()
    if edited is None or edited.GetID() != segmentation_node.GetID():
        return False
    editor_widget.saveStateForUndo()
    return True
