"""Optional output: the network's liver probability as a scalar volume on the input volume's grid."""

from __future__ import annotations

import numpy as np

from RMAMambaSegmentationLib.mrml.segment_writer import SegmentationWriteError
from RMAMambaSegmentationLib.mrml.volume_node import ijk_to_ras, vtk_matrix


def add_probability_volume(volume_node, probability_kji: np.ndarray, name: str):
    """A new float scalar volume node (values 0-1) with the geometry and parent transform of ``volume_node``."""
    import vtk
    from vtk.util import numpy_support

    expected = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    if probability_kji.shape != expected:
        raise SegmentationWriteError(f"probability shape {probability_kji.shape} does not match the volume {expected}")
    values = np.ascontiguousarray(probability_kji, dtype=np.float32)
    image = vtk.vtkImageData()
    image.SetDimensions(*reversed(values.shape))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(values.ravel(), deep=True))

    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    if node is None:
        raise SegmentationWriteError("Slicer could not create the probability volume node")
    try:
        node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras(volume_node)))
        node.SetAndObserveImageData(image)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(0.0, 1.0)
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    except Exception:
        scene.RemoveNode(node)
        raise
    return node
