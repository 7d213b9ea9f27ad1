"""Fixtures of the end-to-end tests: the SDK probe built once per session, one device state for them all."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _e2e_helpers import APPS_DIR, PROBE_ASSET, PROBE_PACKAGE, public_tmp_dir, write_mode_graphs


@pytest.fixture(scope="session")
def sdk_probe_project() -> Iterator[Path]:
    """A copy of ``apps/sdk-probe`` with its container asset built once, plus a graph per probe mode.

    Treat it as read-only.
    """
    from rich.console import Console

    try:
        from emulator.builder import build_container, ensure_base_image
        from emulator.project import Project

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here: the tests that need the asset cannot run
        pytest.skip(f"cannot build the SDK probe asset: {error}")
    base = public_tmp_dir("pe-e2e-probe-")
    root = base / "sdk-probe"
    shutil.copytree(APPS_DIR / "sdk-probe", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "assets").mkdir(exist_ok=True)
    build_container(
        Project(root),
        PROBE_ASSET,
        root / "packages" / PROBE_PACKAGE,
        local_image=True,
        console=Console(file=io.StringIO()),
    )
    write_mode_graphs(root)
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_state_dir() -> Iterator[Path]:
    """One device state directory for the session: root filesystems unpacked once; each test its own app."""
    path = public_tmp_dir("pe-e2e-state-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
