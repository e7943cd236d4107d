"""Which tests read the shared test data: found at collection time, from what each test's code refers to.

A test reads the shared data when its function, one of its fixtures, a parameter, or a helper of the Testing
folder they call refers to a path inside the shared folder (``TOTALSEG / "example_ct_sm.nii.gz"``,
``DATA / "chaos_mr_t2spir"``, ...) or to the ``shared_dir`` fixture. The code is not run: the names each code
object uses (``co_names``, nested functions and comprehensions included) are looked up where the code would find
them (the module's globals, the test class). Tests that reach the data in a way this misses can say so with
``@pytest.mark.needs_shared``.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path, PurePath
from typing import Any

import pytest

TESTING = Path(__file__).resolve().parent
#: Fixtures that stand for the shared folder itself.
SHARED_FIXTURES = frozenset({"shared_dir"})
#: How deep nested containers (a dict of tuples of paths) are searched.
_CONTAINER_DEPTH = 3


def inside(value: Any, shared: Path, depth: int = _CONTAINER_DEPTH) -> bool:
    """True when ``value`` is a path (or text) inside ``shared``, or a container (list, dict, dataclass, ...)
    holding one."""
    if isinstance(value, PurePath):
        return value == shared or shared in value.parents
    if isinstance(value, str):
        return str(shared) in value
    if depth > 0 and isinstance(value, (list, tuple, set, frozenset)):
        return any(inside(v, shared, depth - 1) for v in value)
    if depth > 0 and isinstance(value, dict):
        return any(inside(v, shared, depth - 1) for v in value.values())
    if depth > 0 and dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a case's paths
        return any(inside(getattr(value, f.name, None), shared, depth - 1) for f in dataclasses.fields(value))
    return False


def _is_testing_code(function: Any) -> bool:
    """A Python function written in the Testing folder (library functions never read the shared data)."""
    code = getattr(function, "__code__", None)
    return isinstance(code, types.CodeType) and Path(code.co_filename).resolve().parent == TESTING


def _code_objects(code: types.CodeType):
    """``code`` and every code object nested in it (inner functions, lambdas, comprehensions)."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


class _Search:
    """One test's search: functions already looked at are remembered (helpers call each other)."""

    def __init__(self, shared: Path, namespace: dict[str, Any] | None = None) -> None:
        self.shared = shared
        self.namespace = namespace or {}
        self.seen: set[int] = set()

    def value(self, value: Any) -> bool:
        if inside(value, self.shared):
            return True
        function = getattr(value, "__func__", value)  # methods, static methods
        if _is_testing_code(function):
            return self.function(function)
        if isinstance(value, type):  # a helper class: its methods written in the Testing folder
            members = (getattr(member, "__func__", member) for member in vars(value).values())
            return any(self.function(member) for member in members if _is_testing_code(member))
        return False

    def function(self, function: Any) -> bool:
        function = getattr(function, "__func__", function)
        if id(function) in self.seen or not _is_testing_code(function):
            return False
        self.seen.add(id(function))
        scopes = [function.__globals__, self.namespace]
        for code in _code_objects(function.__code__):
            for name in (*code.co_names, *code.co_freevars):
                if name in SHARED_FIXTURES:
                    return True
                for scope in scopes:
                    if name in scope and self.value(scope[name]):
                        return True
        return any(inside(default, self.shared) for default in function.__defaults__ or ())


def uses_shared(item: pytest.Item, shared: Path) -> bool:
    """Whether the test ``item`` reads files inside ``shared``: through its code, fixtures or parameters."""
    cls = getattr(item, "cls", None)
    search = _Search(shared, dict(vars(cls)) if cls is not None else None)
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(inside(v, shared) for v in callspec.params.values()):
        return True
    fixture_names = set(getattr(item, "fixturenames", ()))
    if fixture_names & SHARED_FIXTURES:
        return True
    function = getattr(item, "function", None)
    if function is not None and search.function(function):
        return True
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in fixture_names:
        for definition in definitions.get(name, ()):
            if search.function(definition.func):
                return True
    return False
