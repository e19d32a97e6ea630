"""The package's rooms and their import rules (docs/ARCHITECTURE.md), checked on the source.

Every import counts, also one inside a function: a rule that holds only at module level would
let a lazy import carry pyspark into the operator.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "iceberg_offload"
ROOMS = ("core", "adapters", "operator", "job", "local")
THIRD_PARTY_ALLOWED_IN_CORE = {"croniter"}
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every module name `module` imports, anywhere in its source (relative imports resolved)."""
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            # `from iceberg_offload.core import watermark` imports the module core.watermark
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return frozenset(names)


def closure(module: str) -> set[str]:
    """`module` and every module of the package it reaches through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        todo.extend(imports_of(current))
    return seen


def external(modules: set[str]) -> set[str]:
    """Top-level names of what these modules import from outside the package."""
    return {name.split(".")[0] for m in modules for name in imports_of(m) if not name.startswith("iceberg_offload")}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def in_room(name: str) -> list[str]:
    return sorted(m for m in MODULES if room(m) == name)


def test_every_module_lives_in_a_room() -> None:
    loose = sorted(m for m in MODULES if room(m) is None and m not in ("iceberg_offload", "iceberg_offload.cli"))
    assert loose == [], "modules outside core/adapters/operator/job/local"


@pytest.mark.parametrize("module", in_room("core"))
def test_core_imports_only_the_standard_library_and_itself(module: str) -> None:
    outside = {name for name in imports_of(module) if name.startswith("iceberg_offload") and room(name) != "core"}
    assert outside == set(), f"{module} imports another room"
    foreign = {n for n in external({module}) if n not in sys.stdlib_module_names} - THIRD_PARTY_ALLOWED_IN_CORE
    assert foreign == set(), f"{module} imports third-party packages"


@pytest.mark.parametrize("module", in_room("operator"))
def test_the_operator_never_reaches_pyspark(module: str) -> None:
    reached = closure(module)
    assert not {m for m in reached if room(m) in ("job", "local")}, f"{module} reaches the Spark job or local engines"
    assert "pyspark" not in external(reached)


@pytest.mark.parametrize("module", in_room("job"))
def test_the_job_never_imports_kubernetes(module: str) -> None:
    reached = closure(module)
    assert not {m for m in reached if room(m) == "operator"}, f"{module} reaches the operator"
    assert not external(reached) & {"kopf", "kubernetes"}


@pytest.mark.parametrize("module", in_room("adapters"))
def test_adapters_use_neither_spark_nor_kubernetes(module: str) -> None:
    reached = closure(module)
    assert {room(m) for m in reached} <= {"core", "adapters", None}
    assert not external(reached) & {"pyspark", "kopf", "kubernetes"}


def test_the_rule_checker_sees_lazy_imports() -> None:
    # cli imports the Spark job only inside a function; the checker must still see it.
    assert any(room(m) == "job" for m in imports_of("iceberg_offload.cli"))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_a_big_room(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by job"


MAX_FUNCTION_LINES = 60


def _long_functions(module: str) -> list[str]:
    tree = ast.parse(MODULES[module].read_text())
    return [
        f"{node.name} ({(node.end_lineno or node.lineno) - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_does_too_many_jobs(module: str) -> None:
    assert _long_functions(module) == [], f"{module}: split these by what they do"


ARCHITECTURE = PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_architecture_document_names_every_module(module: str) -> None:
    path = MODULES[module].relative_to(PACKAGE)
    if path.name in ("__init__.py", "__main__.py"):
        if len(path.parts) > 2:  # a subpackage of a room: named by its folder
            assert f"`{path.parent.as_posix()}/`" in ARCHITECTURE.read_text()
        return
    assert f"`{path.as_posix()}`" in ARCHITECTURE.read_text(), f"docs/ARCHITECTURE.md does not name {path}"
