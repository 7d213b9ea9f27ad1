"""Shared fixtures. Heavy resources (the Docker engine, built sample assets) are session-scoped."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- built sample assets, shared by the appliance and end-to-end tests ------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def _public_tmp_dir(prefix: str) -> Path:
    """A new directory under the system temp dir that every user can read (pytest's own is private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def boot_counter_project() -> Iterator[Path]:
    """A copy of sample-apps/boot-counter with its container asset built once (readable by every user).

    Treat it as read-only: copy it before changing anything in it.
    """
    import io

    from rich.console import Console

    try:
        from emulator.build import build_container, ensure_base_image
        from emulator.project import Project

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here: the tests that need the asset cannot run
        pytest.skip(f"cannot build the boot-counter asset: {error}")
    base = _public_tmp_dir("pe-boot-counter-")
    root = base / "boot-counter"
    shutil.copytree(REPO_ROOT / "sample-apps" / "boot-counter", root)
    build_container(
        Project(root),
        "boot_counter_code",
        root / "packages" / "123456789012-BOOT_COUNTER-1.0",
        local_image=True,
        console=Console(file=io.StringIO()),
    )
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def people_counter_project() -> Iterator[Path]:
    """A copy of sample-apps/people-counter with its container asset built once (readable by every user).

    Treat it as read-only: copy it before changing anything in it.
    """
    import io

    from rich.console import Console

    try:
        from emulator.build import ensure_base_image
        from emulator.device.run import build_missing_assets

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here: the tests that need the asset cannot run
        pytest.skip(f"cannot build the people-counter asset: {error}")
    base = _public_tmp_dir("pe-people-counter-")
    root = base / "people-counter"
    shutil.copytree(REPO_ROOT / "sample-apps" / "people-counter", root)
    build_missing_assets(root)
    yield root
    shutil.rmtree(base, ignore_errors=True)
