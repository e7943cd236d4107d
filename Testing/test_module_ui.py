"""The Slicer module's static parts, checked without Slicer's GUI: the .ui file, the module script's structure,
the CMake lists (packaging), icons and self-test data.

The module script imports ``qt``/``slicer.ScriptedLoadableModule`` (absent from the slicer-core wheel), so it is
read as source (AST) here; its logic is exercised through ``RMAMambaSegmentationLib`` in the test_mrml_* tests
and by its own ``RMAMambaSegmentationTest`` inside Slicer.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, TOTALSEG

MODULE_DIR = PROJECT_ROOT / "RMAMambaSegmentation"
SCRIPT = MODULE_DIR / "RMAMambaSegmentation.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "RMAMambaSegmentation.ui"
MODULE_CMAKE = MODULE_DIR / "CMakeLists.txt"
EXTENSION_CMAKE = PROJECT_ROOT / "CMakeLists.txt"
#: Widgets the parameter-node wrapper can bind, per parameter annotation kind.
BINDABLE = {"node": {"qMRMLNodeComboBox"}, "choice": {"QComboBox", "ctkComboBox"}, "bool": {"QCheckBox", "ctkCheckBox"}}


@pytest.fixture(scope="module")
def script_tree() -> ast.Module:
    return ast.parse(SCRIPT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.findtext("class") == "RMAMambaSegmentation"
    return {w.get("name"): w for w in root.iter("widget")}


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    found = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    assert found, f"class {name} missing from {SCRIPT.name}"
    return found[0]


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [entry.replace("${MODULE_NAME}", "RMAMambaSegmentation") for entry in match.group(1).split()]


def _parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Parameter-node field -> kind ("node", "choice", "bool", "str")."""
    fields = {}
    for statement in _class(tree, "RMAMambaSegmentationParameterNode").body:
        if isinstance(statement, ast.AnnAssign):
            text = ast.unparse(statement.annotation)
            kind = "node" if "vtkMRML" in text else "choice" if "Choice" in text else text
            fields[statement.target.id] = kind
    return fields


def test_every_ui_name_used_by_the_module_exists(script_tree, ui_widgets):
    used = {node.attr for node in ast.walk(script_tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert {"applyButton", "cancelButton", "progressBar", "statusLabel", "weightsPathLineEdit"} <= used
    missing = used - set(ui_widgets)
    assert not missing, f"self.ui names not in {UI_FILE.name}: {sorted(missing)}"


def test_parameter_node_bindings(script_tree, ui_widgets):
    fields = _parameter_fields(script_tree)
    bound = {}
    for name, widget in ui_widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = (name, widget.get("class"))
    # every field but the weights path (a ctkPathLineEdit handled by hand, remembered per model) is bound once
    assert set(bound) == set(fields) - {"weightsPath"}
    for field, (widget_name, widget_class) in bound.items():
        assert widget_class in BINDABLE[fields[field]], f"{widget_name} ({widget_class}) cannot bind {field}"


def test_panel_contents(ui_widgets):
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "modelComboBox": "QComboBox",
        "weightsPathLineEdit": "ctkPathLineEdit",
        "weightsStatusLabel": "QLabel",
        "deviceComboBox": "QComboBox",
        "deviceInfoLabel": "QLabel",
        "intensityPresetComboBox": "QComboBox",
        "postprocessCheckBox": "QCheckBox",
        "probabilityMapCheckBox": "QCheckBox",
        "outputSegmentationSelector": "qMRMLNodeComboBox",
        "applyButton": "QPushButton",
        "cancelButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
    }
    assert {name: ui_widgets[name].get("class") for name in expected if name in ui_widgets} == expected

    def prop(widget: str, name: str) -> ET.Element | None:
        return next((p for p in ui_widgets[widget].findall("property") if p.get("name") == name), None)

    assert prop("applyButton", "text").findtext("string") == "Segment liver"
    assert prop("outputSegmentationSelector", "noneDisplay").findtext("string") == "Create new segmentation"
    assert prop("outputSegmentationSelector", "noneEnabled").findtext("bool") == "true"
    assert [s.text for s in prop("inputVolumeSelector", "nodeTypes").iter("string")] == ["vtkMRMLScalarVolumeNode"]
    assert prop("inputVolumeSelector", "showChildNodeTypes").findtext("bool") == "false"  # no label maps


def test_module_script_structure(script_tree):
    bases = {
        "RMAMambaSegmentation": "ScriptedLoadableModule",
        "RMAMambaSegmentationWidget": "ScriptedLoadableModuleWidget",
        "RMAMambaSegmentationLogic": "ScriptedLoadableModuleLogic",
        "RMAMambaSegmentationTest": "ScriptedLoadableModuleTest",
    }
    for name, base in bases.items():
        assert base in {ast.unparse(b) for b in _class(script_tree, name).bases}
    logic_methods = {n.name for n in _class(script_tree, "RMAMambaSegmentationLogic").body
                     if isinstance(n, ast.FunctionDef)}
    assert {"segment", "segmentFiles", "setupPythonRequirements", "start", "shutdown"} <= logic_methods
    test_methods = {n.name for n in _class(script_tree, "RMAMambaSegmentationTest").body
                    if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and sum(m.startswith("test_") for m in test_methods) >= 3

    # nothing heavy at Slicer start-up: torch and the library are imported inside functions only
    top_level = set()
    for node in script_tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert not top_level & {"torch", "RMAMambaSegmentationLib", "SimpleITK", "numpy", "PyTorchUtils"}
    # the parameter-node wrapper needs real annotations, not PEP 563 strings
    assert "__future__" not in top_level


def test_widget_calls_match_the_library_signature(script_tree):
    """The panel starts runs through the controller only, with keywords its ``apply`` takes; the controller's
    options reach ``SegmentationLogic.start``, whose keywords are those of ``segment`` (less cancel/model)."""
    from RMAMambaSegmentationLib.mrml.segmentation_logic import SegmentationLogic
    from RMAMambaSegmentationLib.panel.controller import PanelController

    widget = _class(script_tree, "RMAMambaSegmentationWidget")
    calls = [node for node in ast.walk(widget) if isinstance(node, ast.Call)]
    names = {ast.unparse(node.func) for node in calls}
    assert not {"self.logic.prepare", "self.logic.compute", "self.logic.apply", "self.logic.segment"} & names
    applies = [node for node in calls if ast.unparse(node.func) == "self.controller.apply"]
    assert len(applies) == 1
    keywords = {k.arg for k in applies[0].keywords}
    accepted = set(inspect.signature(PanelController.apply).parameters) - {"self"}
    required = {name for name, p in inspect.signature(PanelController.apply).parameters.items()
                if p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert required <= keywords <= accepted
    start = set(inspect.signature(SegmentationLogic.start).parameters)
    segment = set(inspect.signature(SegmentationLogic.segment).parameters)
    assert start - {"self"} <= segment and segment - start == {"cancel", "model"}
    assert {"segmentationNode", "replace", "progress", "options"} <= start
    from RMAMambaSegmentationLib.inference.options import RunOptions

    assert RunOptions.build(weights="w.pt", device="CPU", probabilityMap=True).probability_map


def test_widget_only_renders_the_controller_view(script_tree):
    """Every field of the controller's PanelView is shown by the Widget's render(), and the timer slot polls."""
    from dataclasses import fields

    from RMAMambaSegmentationLib.panel.controller import PanelView

    render = next(n for n in ast.walk(_class(script_tree, "RMAMambaSegmentationWidget"))
                  if isinstance(n, ast.FunctionDef) and n.name == "render")
    used = {n.attr for n in ast.walk(render) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "view"}
    assert used == {f.name for f in fields(PanelView)} - {"state"}
    source = ast.unparse(_class(script_tree, "RMAMambaSegmentationWidget"))
    assert "self.controller.poll()" in source and "unload_library()" in source
    assert "importlib.reload" not in source and ".wait(" not in source  # Reload / scene close never wait


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(MODULE_DIR)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_module_cmake_lists_every_file():
    text = MODULE_CMAKE.read_text(encoding="utf-8")
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    library = _files_under(MODULE_DIR / "RMAMambaSegmentationLib")
    on_disk_scripts = {"RMAMambaSegmentation.py"} | {f for f in library if f.endswith(".py")}
    on_disk_resources = _files_under(MODULE_DIR / "Resources") | {f for f in library if not f.endswith(".py")}
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources))
    assert set(scripts) == on_disk_scripts, "update MODULE_PYTHON_SCRIPTS in RMAMambaSegmentation/CMakeLists.txt"
    assert set(resources) == on_disk_resources, "update MODULE_PYTHON_RESOURCES in RMAMambaSegmentation/CMakeLists.txt"
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"if\(BUILD_TESTING\)\s+.*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text, re.S)


def _extension_values(text: str, folder: Path) -> dict[str, str]:
    """The ``EXTENSION_*`` variables as CMake itself evaluates the meta-information block (``cmake -P``)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    block = text.split("# Extension meta-information", 1)[1].split("#---", 1)[0]
    names = sorted(set(re.findall(r"\b(EXTENSION_\w+)", block)))
    script = block + "".join(f'message("{name}=${{{name}}}")\n' for name in names)
    path = folder / "meta.cmake"
    path.write_text(script, encoding="utf-8")
    done = subprocess.run([cmake, "-P", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stderr.splitlines() if "=" in line)


def test_extension_cmake(tmp_path):
    text = EXTENSION_CMAKE.read_text(encoding="utf-8")
    values = _extension_values(text, tmp_path)
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert values["EXTENSION_DEPENDS"] == "PyTorch"
    assert values["EXTENSION_CONTRIBUTORS"] and len(values["EXTENSION_DESCRIPTION"]) > 50
    # what the default weights cover is said plainly
    description = values["EXTENSION_DESCRIPTION"]
    for words in ("T2-weighted MRI", "other MRI sequences and CT need other weights", "rmamamba train"):
        assert words in description
    # every address is the one repository's, written out in full (details: test_extension_metadata.py)
    repository = values["EXTENSION_HOMEPAGE"].split("#")[0]
    assert repository.startswith("https://github.com/")
    raw = repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    urls = [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2
    for url in urls:  # raw URLs of files that exist in the repository
        assert url.startswith(raw), url
        relative = url[len(raw):]
        assert (PROJECT_ROOT / relative).is_file(), relative
    for statement in ("project(RMAMambaSegmentation)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                      "add_subdirectory(RMAMambaSegmentation)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                      "include(${Slicer_EXTENSION_CPACK})"):
        assert statement in text


def _png_header(path: Path) -> tuple[int, int, int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


@pytest.mark.parametrize("path", ["Resources/Icons/RMAMambaSegmentation.png",
                                  "RMAMambaSegmentation/Resources/Icons/RMAMambaSegmentation.png"])
def test_icons(path):
    assert _png_header(PROJECT_ROOT / path) == (128, 128, 8, 6)  # 128x128 RGBA


def test_self_test_data_is_the_shared_example():
    shipped = MODULE_DIR / "Resources" / "Testing" / "example_mr_sm.nii.gz"
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (shipped, TOTALSEG / "example_mr_sm.nii.gz")]
    assert digest[0] == digest[1]


def test_every_library_import_of_the_module_script_resolves(script_tree):
    """The script cannot be imported here, so each ``from RMAMambaSegmentationLib... import name`` it makes (most
    inside functions, run only in Slicer) is resolved against the library: a moved or renamed name fails here."""
    import importlib

    imports = [node for node in ast.walk(script_tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("RMAMambaSegmentationLib")]
    assert imports, "the module script is expected to use the library"
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                f"line {node.lineno}: {node.module} has no {alias.name}")


def test_panel_choices_are_the_library_ones(script_tree):
    """The script spells out its model and device choices (no library import at start-up): they must be the
    registry's and the device module's."""
    from RMAMambaSegmentationLib import registry
    from RMAMambaSegmentationLib.runtime.devices import DEVICE_CHOICES

    literals = {target.id: ast.literal_eval(node.value) for node in script_tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name) and target.id.endswith("_CHOICES")}
    assert literals["MODEL_CHOICES"] == registry.panel_choices()
    assert tuple(literals["DEVICE_CHOICES"]) == tuple(DEVICE_CHOICES)


# ---------------------------------------------------------------- issue 30 (front door, second pass), issue 31


def _method(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef:
    found = [n for n in _class(tree, cls).body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{cls}.{name} missing"
    return found[0]


def _calls(node: ast.AST) -> list[str]:
    return [ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)]


def _assigned(node: ast.AST) -> list[str]:
    return [ast.unparse(target) for n in ast.walk(node) if isinstance(n, ast.Assign) for target in n.targets]


WIDGET = "RMAMambaSegmentationWidget"


def test_module_file_is_thin():
    """Issue 31: the module file binds and renders; the work lives in the library."""
    assert len(SCRIPT.read_text(encoding="utf-8").splitlines()) <= 450


def test_the_run_uses_what_the_weights_box_shows(script_tree):
    """Item 2: ctkPathLineEdit's currentPathChanged carries only text its validator accepts (not "", not
    x.pth.tar, not X.PT; "model.p" while typing): the Widget follows every edit of the box instead, and a run takes
    the box's text."""
    source = ast.unparse(_class(script_tree, WIDGET))
    assert "currentPathChanged" not in source and "editingFinished" not in source
    assert "self._weightsBox = self.ui.weightsPathLineEdit.findChildren(qt.QComboBox)[0]" in source
    connects = [[ast.unparse(a) for a in n.args] for n in ast.walk(_class(script_tree, WIDGET))
                if isinstance(n, ast.Call) and ast.unparse(n.func) == "self._weightsBox.connect"]
    assert connects == [["'editTextChanged(QString)'", "self.onWeightsTextChanged"]]
    apply = next(n for n in ast.walk(_method(script_tree, WIDGET, "onApplyButton"))
                 if isinstance(n, ast.Call) and ast.unparse(n.func) == "self.controller.apply")
    weights = next(k.value for k in apply.keywords if k.arg == "weightsPath")
    assert ast.unparse(weights) == "self.ui.weightsPathLineEdit.currentPath"
    edited = _method(script_tree, WIDGET, "onWeightsTextChanged")
    assert "params.weightsPath" in _assigned(edited)
    # the box shows the controller's weightsPath, written without echoing the edit back
    render = ast.unparse(_method(script_tree, WIDGET, "render"))
    assert "self.ui.weightsPathLineEdit.currentPath = view.weightsPath" in render
    assert "self._weightsBox.blockSignals(True)" in render


def test_model_and_its_weights_are_written_in_one_modification(script_tree):
    """Item 3: onModelChanged writes the model and its remembered weights inside one NodeModify block (a path
    written alone made the binding refresh the panel with the old model: "Variant mismatch", model snapped back)."""
    method = _method(script_tree, WIDGET, "onModelChanged")
    blocks = [n for n in ast.walk(method) if isinstance(n, ast.With)
              and any(ast.unparse(item.context_expr).startswith("slicer.util.NodeModify(") for item in n.items)]
    assert len(blocks) == 1
    inside = _assigned(blocks[0])
    assert "params.model" in inside and "params.weightsPath" in inside
    outside = [t for t in _assigned(method) if t.endswith((".model", ".weightsPath"))]
    assert sorted(outside) == sorted(inside)  # no write of either outside the block


def test_remembered_weights_are_in_the_node_before_the_panel_shows_it(script_tree):
    """Item 5: the remembered weights are written into the parameter node before it is bound and shown, and every
    change of the node shows its weights path (the label said "Default ... weights" while they were used)."""
    method = _method(script_tree, WIDGET, "initializeParameterNode")
    writes = [n.lineno for n in ast.walk(method) if isinstance(n, ast.Assign)
              and any(ast.unparse(t) == "params.weightsPath" for t in n.targets)]
    shows = [n.lineno for n in ast.walk(method) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "self.setParameterNode"]
    assert writes and shows and max(writes) < min(shows)
    modified = _method(script_tree, WIDGET, "onParameterNodeModified")
    call = next(n for n in ast.walk(modified) if isinstance(n, ast.Call)
                and ast.unparse(n.func) == "self.controller.parametersChanged")
    assert {k.arg: ast.unparse(k.value) for k in call.keywords}["weightsPath"] == "params.weightsPath"


def test_parameter_node_is_bound_once(script_tree):
    """Item 6: Slicer 5.6/5.8's connectGui returns no tag, so disconnectGui(tag) undid nothing and every entry into
    the module stacked one more set of connections. The Widget binds with connectParametersToGui (which returns the
    tag), once per node, and undoes it with that tag."""
    widget = _class(script_tree, WIDGET)
    calls = _calls(widget)
    assert not [c for c in calls if c.endswith(".connectGui")]
    connects = [n for n in ast.walk(widget) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                and ast.unparse(n.value.func).endswith(".connectParametersToGui")]
    assert len(connects) == 1 and [ast.unparse(t) for t in connects[0].targets] == ["self._parameterNodeGuiTag"]
    assert [c for c in calls if c.endswith(".connectParametersToGui")] == [ast.unparse(connects[0].value.func)]
    disconnects = [n for n in ast.walk(widget) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith(
        ".disconnectGui")]
    assert [ast.unparse(n.args[0]) for n in disconnects] == ["self._parameterNodeGuiTag"]
    # connecting happens only for a node that is not the one already bound
    binder = _method(script_tree, WIDGET, "setParameterNode")
    guard = next(n for n in ast.walk(binder) if isinstance(n, ast.If) and connects[0] in list(ast.walk(n)))
    assert "node is not bound" in ast.unparse(guard.test)
    assert "exit" not in {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}  # nothing undone on exit


def test_a_failing_poll_stops_the_timer(script_tree):
    """Item 8: any exception in the 100 ms tick stops the timer (it used to fire, and fail, ten times a second)."""
    method = _method(script_tree, WIDGET, "onPoll")
    tries = [n for n in method.body if isinstance(n, ast.Try)]
    assert len(tries) == 1 and [ast.unparse(h.type) for h in tries[0].handlers] == ["Exception"]
    handler = tries[0].handlers[0]
    assert "self._timer.stop" in _calls(handler) and isinstance(handler.body[-1], ast.Raise)


def test_show_3d_follows_the_controller(script_tree):
    """Item 8: the Show 3D button is enabled only by the controller's view (which needs a segment to show)."""
    assert [t for t in _assigned(_class(script_tree, WIDGET)) if t.startswith("self.ui.show3DButton.enabled")] == [
        "self.ui.show3DButton.enabled"]
    assert "self.ui.show3DButton.enabled = view.show3DEnabled" in ast.unparse(_method(script_tree, WIDGET, "render"))


def test_self_test_skips_without_torch(script_tree):
    """Item 8: without a usable PyTorch the self-test skips (unittest runners) or says so (Reload and Test)."""
    test = "RMAMambaSegmentationTest"
    set_up = _method(script_tree, test, "setUp")
    guard = set_up.body[1]
    assert isinstance(guard, ast.If) and _calls(guard) == ["self.skipTest"]
    assert ast.unparse(set_up.body[0]) == "reason = self.skipReason()"
    run = _method(script_tree, test, "runTest")
    guard = run.body[1]
    assert isinstance(guard, ast.If) and isinstance(guard.body[-1], ast.Return)
    assert "torch_problem" in _calls(_method(script_tree, test, "skipReason"))
    # torch is imported by the checks (panel/self_test.py), never at the top of a test method before the guard
    assert not [n for n in ast.walk(_class(script_tree, test)) if isinstance(n, ast.Import)]


def test_pytorch_setup_is_the_librarys_and_installs_torch_only(script_tree):
    """Item 7: the module delegates the check to runtime_info.ensure_torch (outdated torch detected, install
    failures shown in a dialog) and installs torch alone, never through PyTorchUtils.installTorch (which adds an
    unpinned torchvision)."""
    setup = _method(script_tree, "RMAMambaSegmentationLogic", "setupPythonRequirements")
    assert "ensure_torch" in _calls(setup)
    source = SCRIPT.read_text(encoding="utf-8")
    assert "torchvision" not in source and "PyTorchUtils" not in source
    install = next(n for n in script_tree.body if isinstance(n, ast.FunctionDef) and n.name == "installTorch")
    assert "slicer.util.logProcessOutput" in _calls(install)  # raises on a failed install: ensure_torch shows it


def test_help_text_links_the_documentation_and_names_no_shell_command(script_tree, tmp_path):
    """Item 9: the help links the project README (the extension's EXTENSION_HOMEPAGE) and gives no instruction
    that cannot be followed inside Slicer (no `rmamamba` shell command)."""
    url = next(ast.literal_eval(n.value) for n in script_tree.body if isinstance(n, ast.Assign)
               and [ast.unparse(t) for t in n.targets] == ["DOCUMENTATION_URL"])
    assert url == _extension_values(EXTENSION_CMAKE.read_text(encoding="utf-8"), tmp_path)["EXTENSION_HOMEPAGE"]
    init = _method(script_tree, "RMAMambaSegmentation", "__init__")
    help_text = next(n.value for n in ast.walk(init) if isinstance(n, ast.Assign)
                     and [ast.unparse(t) for t in n.targets] == ["self.parent.helpText"])
    text = " ".join(n.value for n in ast.walk(help_text) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    assert '<a href="{url}">' in text and ast.unparse(help_text).endswith(".format(url=DOCUMENTATION_URL)")
    assert not re.search(r"\brmamamba\s+(segment|train|evaluate|benchmark)\b", text)
