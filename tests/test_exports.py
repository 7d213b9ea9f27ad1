"""Every package's ``__all__`` is sorted and is exactly its public names, as in httpx's export test.

A package's public names are what its namespace holds that does not start with ``_``, less its submodules
(the import system binds those); a name in ``__all__`` that a module ``__getattr__`` provides on first use
counts too. So whatever a package's ``__init__`` imports for its own use must have a ``_`` name. Every module
that has an ``__all__`` keeps it sorted, without repeats, and lists only names it has.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def declared_all(source: str) -> list[str] | None:
    """The literal ``__all__`` of a module's code, or None when it has none."""
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in statement.targets
        ):
            return list(ast.literal_eval(statement.value))
    return None


def _with_all(packages: bool) -> list[Path]:
    return [
        path
        for top in ("emulator", "runtime")
        for path in sorted((ROOT / top).rglob("*.py"))
        if (path.name == "__init__.py") == packages and declared_all(path.read_text()) is not None
    ]


PACKAGES = _with_all(packages=True)
MODULES = _with_all(packages=False)


def public_names(module: ModuleType) -> set[str]:
    """What ``module`` holds that does not start with ``_``, without its submodules.

    Args:
        module: an imported package.

    Returns:
        The names, plus the names of ``__all__`` that the package's ``__getattr__`` provides lazily.
    """
    names = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name.isidentifier()  # pytest's assertion rewriting adds @py_builtins
        and not (isinstance(value, ModuleType) and value.__name__ == f"{module.__name__}.{name}")
    }
    lazy = getattr(module, "__getattr__", None)
    if lazy is not None:
        names |= {name for name in getattr(module, "__all__", ()) if name not in vars(module) and lazy(name)}
    return names


def sort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: SCREAMING_CASE, then CamelCase, then the rest."""
    if name.isupper() and len(name) > 1:
        return 0, name
    return (1 if name[0].isupper() else 2), name


@pytest.mark.parametrize("path", PACKAGES, ids=_name)
def test_a_package_exports_exactly_its_public_names_in_order(path: Path) -> None:
    module = importlib.import_module(_name(path))
    exported = list(module.__all__)
    assert exported == sorted(exported, key=sort_key)
    assert sorted(exported) == sorted(public_names(module))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_a_module_all_is_sorted_and_names_what_it_has(path: Path) -> None:
    source = path.read_text()
    exported = declared_all(source) or []
    assert exported == sorted(exported, key=sort_key)
    assert len(set(exported)) == len(exported)
    bound: set[str] = set()
    for statement in ast.parse(source).body:
        for node in ast.walk(statement):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node is statement:
                bound.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    assert [name for name in exported if name not in bound] == []


def test_public_names_leave_out_submodules_and_count_lazy_names() -> None:
    package = ModuleType("pkg")
    package.__all__ = ["Lazy", "Thing"]  # type: ignore[attr-defined]
    package.Thing = object  # type: ignore[attr-defined]
    package.helper = ModuleType("pkg.helper")  # type: ignore[attr-defined]
    package.typing = ModuleType("typing")  # type: ignore[attr-defined]
    package.TYPE_CHECKING = False  # type: ignore[attr-defined]
    package._private = 1  # type: ignore[attr-defined]
    package.__getattr__ = lambda name: object if name == "Lazy" else None  # type: ignore[attr-defined]
    assert public_names(package) == {"Lazy", "Thing", "typing", "TYPE_CHECKING"}


def test_the_order_is_ruffs() -> None:
    names = ["node", "Port", "MOUNT_POINTS", "ModelCallError", "API", "build_argv", "Backoff"]
    assert sorted(names, key=sort_key) == [
        "API",
        "MOUNT_POINTS",
        "Backoff",
        "ModelCallError",
        "Port",
        "build_argv",
        "node",
    ]
