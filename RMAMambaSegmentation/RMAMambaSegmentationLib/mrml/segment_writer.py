"""Write a liver mask into a Segmentation node: one short main-thread step, checked at every MRML call.

The mask is a ``(k, j, i)`` array on the input volume's voxel grid. It becomes a ``vtkOrientedImageData`` whose
image-to-world matrix is the volume's IJK-to-RAS (expressed in the segmentation's coordinate frame when the two
nodes sit under different linear transforms) and is written in one ``SetBinaryLabelmapToSegment`` call.
"""

from __future__ import annotations

import logging

import numpy as np

from RMAMambaSegmentationLib.errors import RMAMambaError
from RMAMambaSegmentationLib.mrml.terminology import (
    LIVER_COLOR,
    LIVER_SEGMENT_NAME,
    find_liver_segment_id,
    style_liver_segment,
)
from RMAMambaSegmentationLib.mrml.volume_node import ijk_to_ras, vtk_matrix

logger = logging.getLogger(__name__)


class SegmentExistsError(RMAMambaError, FileExistsError):
    """The output segmentation already has a Liver segment and replacing it was not asked for."""


class SegmentationWriteError(RMAMambaError):
    """Slicer refused to create or fill the segmentation (the scene was left as it was)."""


def volume_to_node_frame(volume_node, target_node) -> np.ndarray:
    """4x4 matrix from the volume's local RAS frame to ``target_node``'s local frame (identity when both share
    the same parent transform). Raises :class:`SegmentationWriteError` for a non-linear transform between them."""
    import slicer
    import vtk

    if volume_node.GetTransformNodeID() == target_node.GetTransformNodeID():
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        volume_node.GetParentTransformNode(), target_node.GetParentTransformNode(), matrix
    ):
        raise SegmentationWriteError(
            "the output segmentation and the input volume are under different non-linear transforms: "
            "choose 'Create new segmentation' or harden the transforms first"
        )
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def mask_to_oriented_image(mask_kji: np.ndarray, image_to_world: np.ndarray):
    """A ``vtkOrientedImageData`` (unsigned char, 0/1) holding ``mask_kji`` with the given image-to-world matrix."""
    import slicer
    from vtk.util import numpy_support

    mask = np.asarray(mask_kji)
    if mask.dtype != np.uint8 or not mask.flags.c_contiguous or (mask.size and int(mask.max()) > 1):
        mask = np.ascontiguousarray(mask != 0, dtype=np.uint8)  # a 0/1 uint8 mask (the worker's) is used as is
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*reversed(mask.shape))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix(image_to_world))
    return image


def create_segmentation_node(volume_node, name: str):
    """A new Segmentation node beside ``volume_node``: display nodes, reference geometry, same parent transform."""
    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if node is None:
        raise SegmentationWriteError("Slicer could not create a segmentation node")
    try:
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    except Exception:
        scene.RemoveNode(node)
        raise
    return node


def prepare_existing_segmentation(segmentation_node, volume_node, *, replace: bool) -> str | None:
    """Check that ``segmentation_node`` may receive the liver; returns the ID of the Liver segment to replace.

    Raises:
        SegmentExistsError: it has a Liver segment and ``replace`` is False (nothing is changed).
        SegmentationWriteError: it is in another scene than the volume.
    """
    import slicer

    if not isinstance(segmentation_node, slicer.vtkMRMLSegmentationNode):
        raise TypeError(f"segmentationNode must be a vtkMRMLSegmentationNode, got {type(segmentation_node).__name__}")
    if segmentation_node.GetScene() is not volume_node.GetScene():
        raise SegmentationWriteError("the output segmentation is not in the same scene as the input volume")
    segment_id = find_liver_segment_id(segmentation_node)
    if segment_id is not None and not replace:
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise SegmentExistsError(
            f'"{segmentation_node.GetName()}" already has a "{name}" segment: pass replace=True to replace only that '
            "segment (other segments are kept), or write into a new segmentation"
        )
    volume_to_node_frame(volume_node, segmentation_node)  # refuse non-linear transforms before any change
    return segment_id


def write_liver_mask(segmentation_node, volume_node, mask_kji: np.ndarray, segment_id: str | None = None) -> str:
    """Write ``mask_kji`` as the Liver segment (added when ``segment_id`` is None, replaced otherwise).

    Other segments are left untouched: the Liver segment is moved to its own labelmap layer before the write, so
    overlapping voxels of other segments in a shared layer are not overwritten. Returns the segment ID.
    """
    import slicer

    if mask_kji.shape != tuple(reversed(volume_node.GetImageData().GetDimensions())):
        raise SegmentationWriteError(
            f"mask shape {mask_kji.shape} does not match the volume's voxel grid "
            f"{tuple(reversed(volume_node.GetImageData().GetDimensions()))}"
        )
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    image_to_world = volume_to_node_frame(volume_node, segmentation_node) @ ijk_to_ras(volume_node)
    image = mask_to_oriented_image(mask_kji, image_to_world)

    added = segment_id is None
    if added:
        segment_id = segmentation.AddEmptySegment("", LIVER_SEGMENT_NAME, LIVER_COLOR)
        if not segment_id:
            raise SegmentationWriteError("Slicer could not add a segment (is the Segmentations module logic loaded?)")
    elif segmentation.GetNumberOfSegments() > 1:
        segmentation.SeparateSegmentLabelmap(segment_id)
    style_liver_segment(segmentation.GetSegment(segment_id))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    written = logic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, logic.MODE_REPLACE, image.GetExtent()
    )
    if not written:
        if added:
            segmentation.RemoveSegment(segment_id)
        raise SegmentationWriteError("Slicer could not write the liver mask into the segmentation")
    return segment_id


def place_beside(node, volume_node) -> None:
    """Put ``node`` in the same subject-hierarchy folder/study as ``volume_node`` (no-op when either has no item,
    as in a scene without Slicer's subject-hierarchy plugins)."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volume_node.GetScene())
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    node_item = hierarchy.GetItemByDataNode(node)
    if volume_item and node_item:
        hierarchy.SetItemParent(node_item, hierarchy.GetItemParent(volume_item))
