"""Checks that a scene can hold the result before any work starts.

Inside Slicer the Segmentations module registers the segment representations ("Binary labelmap", "Closed
surface", ...) at start-up. In plain Python with the ``slicer-core`` wheel nothing does until a
``vtkSlicerSegmentationsModuleLogic`` is given a scene; without it Slicer cannot add a segment, which used to be
found only after the network had run.
"""

from __future__ import annotations

from RMAMambaSegmentationLib.mrml.segment_writer import SegmentationWriteError

#: The representation the Liver segment is written in.
BINARY_LABELMAP = "Binary labelmap"

HEADLESS_SETUP = (
    "segmentations = slicer.vtkSlicerSegmentationsModuleLogic(); segmentations.SetMRMLScene(scene) "
    "(keep a reference to it; docs/slicer.md, 'Headless')"
)


class SceneSetupError(SegmentationWriteError):
    """The scene is not set up to hold a segmentation (no Segmentations module logic); nothing was run or changed."""


def check_segmentations_ready() -> None:
    """Raise :class:`SceneSetupError` unless Slicer can create a binary-labelmap segment in this process."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if factory.ConstructRepresentationObjectByRepresentation(BINARY_LABELMAP) is not None:
        return
    raise SceneSetupError(
        "this MRML scene has no Segmentations module logic, so Slicer cannot create the Liver segment (no "
        f"'{BINARY_LABELMAP}' representation is registered). Slicer sets it up itself; in a script without the "
        f"application create it once before segmenting: {HEADLESS_SETUP}. Nothing was run or changed."
    )
