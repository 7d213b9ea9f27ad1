"""``runtime/`` is a leaf: of ``emulator`` it imports only ``emulator.errors`` (DESIGN.md, house rules).

Every module under ``runtime/`` is parsed and every import in it is checked: at module level, inside
functions and ``if TYPE_CHECKING:`` blocks, absolute and relative (resolved against the module's package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"
ALLOWED = "emulator.errors"


def module_name(path: Path) -> str:
    """The dotted name of a file of the checkout (``runtime/bridge/__init__.py`` is ``runtime.bridge``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute name)`` of everything a module imports.

    Args:
        source: the module's code.
        module: its dotted name, to resolve relative imports.
        is_package: True for a package's ``__init__``.

    Returns:
        One entry per imported module, and for ``from X import y`` one for ``X.y`` too (``y`` may be a
        submodule), in file order.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = str(node.module)
            # ``from emulator import errors`` names only emulator.errors, not all of emulator.
            if base != "emulator":
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
            if base == "emulator" and any(alias.name == "*" for alias in node.names):
                found.append((node.lineno, base))
    return found


def forbidden(name: str) -> bool:
    """True for ``emulator`` and any module of it but ``emulator.errors`` (and names in it)."""
    if name != "emulator" and not name.startswith("emulator."):
        return False
    return not (name == ALLOWED or name.startswith(ALLOWED + "."))


def violations(root: Path) -> list[str]:
    """``file:line: module`` for each import of ``emulator`` other than ``emulator.errors`` under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        imports = imported_modules(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
        found += [f"{path.relative_to(ROOT)}:{line}: {name}" for line, name in imports if forbidden(name)]
    return found


def test_runtime_imports_of_emulator_only_its_errors() -> None:
    assert violations(RUNTIME) == []


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from emulator.manifests import Port\n", ["emulator.manifests", "emulator.manifests.Port"]),
        ("import emulator.project\n", ["emulator.project"]),
        ("import emulator\n", ["emulator"]),
        ("def f():\n    from emulator.plan import AppPlan\n", ["emulator.plan", "emulator.plan.AppPlan"]),
        ("if TYPE_CHECKING:\n    from emulator import manifests\n", ["emulator.manifests"]),
        ("from emulator import *\n", ["emulator"]),
        ("from ... import emulator\n", []),  # beyond the top: not the emulator package
        ("from emulator import errors\n", []),
        ("from emulator.errors import ModelError\n", []),
        ("import emulator.errors as errors\n", []),
        ("from ..models import ModelHost\n", []),
    ],
)
def test_every_kind_of_import_is_seen(source: str, caught: list[str]) -> None:
    imports = imported_modules(source, "runtime.bridge.probe")
    assert [name for _, name in imports if forbidden(name)] == caught


def test_relative_imports_resolve_against_the_package() -> None:
    source = "from ..models import ModelHost\nfrom . import calls\n"
    assert [name for _, name in imported_modules(source, "runtime.bridge.probe")] == [
        "runtime.models",
        "runtime.models.ModelHost",
        "runtime.bridge",
        "runtime.bridge.calls",
    ]
    assert [
        name for _, name in imported_modules("from . import frames\n", "runtime.bridge", is_package=True)
    ] == [
        "runtime.bridge",
        "runtime.bridge.frames",
    ]
