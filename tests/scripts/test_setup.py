"""scripts/setup installs exactly uv.lock, and refuses a pyproject.toml that the lock does not match."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    """Run scripts/setup's lock check against ``project`` (a copy of the checkout's manifests)."""
    script = f"source {ROOT / 'scripts' / 'setup'}; pe_uv; PE_ROOT={project}; pe_lock_check"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=dict(os.environ))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    wheels = ROOT / ".wheels"
    if not any(wheels.glob("*.whl")):
        pytest.skip("no .wheels/ in the checkout (scripts/setup fills it)")
    (tmp_path / ".wheels").mkdir()
    for wheel in wheels.glob("*.whl"):
        os.link(wheel, tmp_path / ".wheels" / wheel.name)
    return tmp_path


def test_the_committed_lock_matches_pyproject_wherever_the_checkout_is(project: Path) -> None:
    done = _lock_check(project)
    assert done.returncode == 0, done.stderr


def test_a_pyproject_change_without_a_refreshed_lock_fails_with_the_command_to_run(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '    "rich>=13.0",\n' in text
    pyproject.write_text(text.replace('    "rich>=13.0",\n', '    "rich>=13.0",\n    "six>=1.16",\n'))
    done = _lock_check(project)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(
        "uv.lock does not match pyproject.toml: refresh it with 'scripts/lock' (uv lock) and commit uv.lock"
    ), done.stderr


def test_the_lock_pins_every_package_and_takes_torch_from_its_cpu_build() -> None:
    lock = (ROOT / "uv.lock").read_text()
    assert 'name = "torch"\nversion = "2.13.0+cpu"\nsource = { path = ".wheels/' in lock
    assert "nvidia" not in lock and "triton" not in lock
