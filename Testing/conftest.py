"""Shared fixtures: paths to the shared test data, and a real headless MRML scene (slicer-core wheel).

The shared data (CHAOS and TotalSegmentator volumes, the official network's reference tensors, the specification)
lives in ``../shared`` beside the project, or wherever ``RMAMAMBA_SHARED`` points. Without it (a plain clone of the
public repository) every test that reads it is skipped with one reason, :data:`NEEDS_SHARED`, and the others run:
see :mod:`shared_data` for how those tests are found.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Environment variable naming the shared test data folder (default: ``../shared`` beside the project).
SHARED_VARIABLE = "RMAMAMBA_SHARED"
SHARED = Path(os.environ.get(SHARED_VARIABLE) or PROJECT_ROOT.parent / "shared")
FIXTURES = SHARED / "fixtures"
TOTALSEG = FIXTURES / "totalsegmentator_examples"
OFFICIAL = FIXTURES / "official_equivalence"
SPEC = SHARED / "spec"
DATA = SHARED / "data"
#: Whether the shared data is there; without it the tests that read it are skipped.
HAS_SHARED = SHARED.is_dir()
#: The one reason a test is skipped for lack of the shared data.
NEEDS_SHARED = f"needs ../shared (the project's shared test data), or {SHARED_VARIABLE} set to its folder"

# The library is importable from the source tree even when the project was not pip-installed.
_LIB_PARENT = str(PROJECT_ROOT / "RMAMambaSegmentation")
if _LIB_PARENT not in sys.path:
    sys.path.insert(0, _LIB_PARENT)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"needs_shared: the test reads the shared test data ({NEEDS_SHARED})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the shared data, skip every test that reads it (marked, or found by :mod:`shared_data`)."""
    if HAS_SHARED:
        return
    from shared_data import uses_shared

    skip = pytest.mark.skip(reason=NEEDS_SHARED)
    for item in items:
        if item.get_closest_marker("needs_shared") is not None or uses_shared(item, SHARED):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Safety net without the shared data: a test that failed on a path inside the missing folder is reported as
    skipped with :data:`NEEDS_SHARED` (the collection-time check missed how it reaches the data)."""
    outcome = yield
    report = outcome.get_result()
    if HAS_SHARED or not report.failed or call.excinfo is None:
        return
    if str(SHARED) in str(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], f"Skipped: {NEEDS_SHARED}")


@pytest.fixture(autouse=True)
def fresh_device_warnings(monkeypatch) -> None:
    """Each test starts as a new process would: the once-per-process device fall-back warnings not yet given."""
    from RMAMambaSegmentationLib.runtime import devices

    monkeypatch.setattr(devices, "_WARNED", set())


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared test data folder (``../shared``, or ``$RMAMAMBA_SHARED``); the test is skipped without it."""
    if not HAS_SHARED:
        pytest.skip(NEEDS_SHARED)
    return SHARED


class HeadlessMRML:
    """A real MRML scene wired like Slicer's application wires it, without Qt."""

    def __init__(self) -> None:
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        colors = self.app_logic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.app_logic.SetModuleLogic("Colors", colors)
        self.app_logic.SetSliceLogics(vtkCollection())
        self.app_logic.SetViewLogics(vtkCollection())
        self.logics = {}  # SetModuleLogic keeps no Python reference: keep them alive here
        for name, cls in (
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
            ("Data", slicer.vtkSlicerDataModuleLogic),
        ):
            logic = cls()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    def load_volume(self, path: Path, labelmap: bool = False):
        """Load a volume file into the scene as Slicer's Add Data does."""
        node = self.logics["Volumes"].AddArchetypeVolume(str(path), Path(path).name.split(".")[0], int(labelmap), None)
        if node is None:
            raise RuntimeError(f"cannot read {path}")
        return node

    def node_ids(self) -> set[str]:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}


@pytest.fixture
def mrml() -> HeadlessMRML:
    """A fresh headless scene; the test is skipped where slicer-core does not install (Python 3.9: no wheel)."""
    pytest.importorskip("slicer", reason="needs the slicer-core wheel (none for this Python)")
    headless = HeadlessMRML()
    yield headless
    headless.scene.Clear(True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's network-heavy tests, restored afterwards: on a shared 2-core machine two
    OpenMP threads competing with other processes made the network up to 30x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def official_seeded_state_dict(variant: str = "T", seed: int = 0) -> dict:
    """An RMA-Mamba state dict filled by the official fixtures' weight recipe (``seeded_weights.py``)."""
    import importlib.util

    import torch

    from RMAMambaSegmentationLib import build_model

    spec = importlib.util.spec_from_file_location("seeded_weights", OFFICIAL / "seeded_weights.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with torch.device("meta"):
        skeleton = build_model(variant)
    shapes = [(key, tuple(tensor.shape)) for key, tensor in skeleton.state_dict().items()]
    state = recipe.seeded_state_dict(shapes, seed=seed)
    if (variant, seed) == ("T", 0):  # the weights the official reference tensors were computed with
        assert recipe.state_dict_digest(state) == "350d4f94c571b030a1c01d85f869dfefa32ae082c86ae7f07239b7a506ff7ea0"
    return {key: torch.as_tensor(value) for key, value in state.items()}


def exported_segment(segmentation_node, volume_node, segment_id: str):
    """A segment exported on the volume's exact grid, as Slicer's Segmentations logic does it:
    ``(mask (k, j, i) bool, image-to-world 4x4)``."""
    import numpy as np
    import slicer
    import vtk
    from vtk.util import numpy_support

    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, volume_node, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged
    )
    matrix = vtk.vtkMatrix4x4()
    merged.GetImageToWorldMatrix(matrix)
    shape = tuple(reversed(merged.GetDimensions()))
    mask = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(shape) != 0
    return mask, np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture(scope="session")
def tiny_t_weights(tmp_path_factory) -> Path:
    """RMA-Mamba-T with seeded random weights (float16 file) and a model card asking for 64x64 inputs: the real
    network, fast enough for the worker-process tests."""
    import torch

    from RMAMambaSegmentationLib.network.build import build_model
    from RMAMambaSegmentationLib.weights.checkpoints import save_checkpoint
    from RMAMambaSegmentationLib.weights.model_card import ModelCard, write_model_card

    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("weights") / "rmamamba_t_tiny.pt"
    save_checkpoint(path, build_model("T"), half=True)
    write_model_card(path, ModelCard(variant="T", input_size=(64, 64), licence="test licence"))
    return path


#: The module's bundled MR example (the self-test data; it ships with the project, not in ../shared).
MODULE_EXAMPLE = PROJECT_ROOT / "RMAMambaSegmentation" / "Resources" / "Testing" / "example_mr_sm.nii.gz"
#: Worker-process options of the tests: one thread, so two test workers never oversubscribe the cores.
TEST_WORKER_OPTIONS = {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}


@pytest.fixture(scope="session")
def long_volume(tmp_path_factory) -> Path:
    """The module's MR example repeated 8 times along its slices (160 slices): a run still computing when stopped."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(MODULE_EXAMPLE))
    tiled = sitk.JoinSeries([image[:, :, k % image.GetDepth()] for k in range(8 * image.GetDepth())])
    tiled.SetSpacing(image.GetSpacing())
    tiled.SetDirection(image.GetDirection())
    tiled.SetOrigin(image.GetOrigin())
    path = tmp_path_factory.mktemp("volumes") / "mr_long.nrrd"
    sitk.WriteImage(tiled, str(path))
    return path


@pytest.fixture
def logic():
    """A SegmentationLogic whose worker runs with the tests' options; shut down after the test."""
    from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic

    core = SegmentationLogic(workerOptions=TEST_WORKER_OPTIONS)
    yield core
    core.shutdown(wait=5.0)
