"""Read an MRML scalar volume node: validation, voxel array and its geometry in SimpleITK's LPS terms.

MRML works in RAS, SimpleITK in LPS: ``IJKToRAS = diag(-1, -1, 1, 1) @ [[D @ diag(spacing), origin_LPS], [0, 1]]``.
Arrays are in SimpleITK/MRML order ``(k, j, i)``. Only ``slicer`` core classes, ``vtk`` and ``numpy`` are used, so
this runs inside Slicer and with the ``slicer-core`` wheel alike.
"""

from __future__ import annotations

import numpy as np

from RMAMambaSegmentationLib.errors import InvalidImageError
from RMAMambaSegmentationLib.imaging.orientation import LPS_TO_RAS

#: Smallest size accepted along each axis: a single slice (or line) is a 2D image, not a volume.
MIN_VOXELS_PER_AXIS = 2


def ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix (spacing, directions and origin; local to any parent transform)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(array: np.ndarray):
    """A ``vtkMatrix4x4`` with the values of a 4x4 array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _describe(node) -> str:
    name = node.GetName() if hasattr(node, "GetName") else None
    return f'"{name}"' if name else "the input"


def validate_volume_node(volume_node) -> None:
    """Raise :class:`InvalidImageError` unless ``volume_node`` is a 3D single-component scalar volume in a scene."""
    import slicer

    if volume_node is None:
        raise InvalidImageError("No input volume: select the abdominal MRI or CT volume to segment.")
    if not isinstance(volume_node, slicer.vtkMRMLScalarVolumeNode):
        raise InvalidImageError(
            f"{_describe(volume_node)} is a {type(volume_node).__name__}, not a scalar volume: "
            "select an MRI or CT volume."
        )
    if isinstance(volume_node, slicer.vtkMRMLLabelMapVolumeNode):
        raise InvalidImageError(
            f"{_describe(volume_node)} is a label map: select the MRI or CT image itself, not a segmentation."
        )
    image = volume_node.GetImageData()
    if isinstance(volume_node, slicer.vtkMRMLVectorVolumeNode) or (
        image is not None and image.GetNumberOfScalarComponents() != 1
    ):
        components = image.GetNumberOfScalarComponents() if image is not None else "several"
        raise InvalidImageError(
            f"{_describe(volume_node)} is a vector/colour volume ({components} components per voxel): "
            "the liver model needs a grayscale MRI or CT volume."
        )
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InvalidImageError(f"{_describe(volume_node)} holds no voxels: load the image data first.")
    dims = image.GetDimensions()
    if min(dims) < MIN_VOXELS_PER_AXIS:
        raise InvalidImageError(
            f"{_describe(volume_node)} is a 2D image ({dims[0]} x {dims[1]} x {dims[2]} voxels): "
            "a 3D volume with several axial slices is needed."
        )
    if volume_node.GetScene() is None:
        raise InvalidImageError(f"{_describe(volume_node)} is not in a scene: add it to the MRML scene first.")
    if abs(np.linalg.det(ijk_to_ras(volume_node)[:3, :3])) < 1e-12:
        raise InvalidImageError(f"{_describe(volume_node)} has a degenerate geometry (zero spacing or direction).")


def volume_array(volume_node, copy: bool = True) -> np.ndarray:
    """The voxels as a ``(k, j, i)`` array of the node's scalar type: a copy, or with ``copy=False`` a read-only
    view of the node's image data (valid while the node keeps that image)."""
    from vtk.util import numpy_support

    image = volume_node.GetImageData()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = flat.reshape(tuple(reversed(image.GetDimensions())))
    if copy:
        return array.copy()
    array.flags.writeable = False
    return array


def lps_geometry(matrix_ijk_to_ras: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` in SimpleITK's LPS conventions for an IJK-to-RAS matrix."""
    linear = np.asarray(matrix_ijk_to_ras, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction_lps = LPS_TO_RAS @ (linear / spacing)
    origin_lps = LPS_TO_RAS @ np.asarray(matrix_ijk_to_ras, dtype=float)[:3, 3]
    return tuple(spacing.tolist()), tuple(origin_lps.tolist()), tuple(direction_lps.ravel().tolist())
