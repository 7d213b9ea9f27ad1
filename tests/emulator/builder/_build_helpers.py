"""Helpers for the build stage's tests: the sample project, snapshots of project files, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "sample-apps" / "people-counter"
SAMPLE_PACKAGE = "packages/123456789012-PEOPLE_COUNTER_CODE-1.0"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes): to show that a failed command changed nothing."""
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def run_cli(
    *args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``panorama-emulator ARGS`` in ``cwd`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", "from emulator.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_package(
    root: Path,
    folder: str = "123456789012-TINY_CODE-1.0",
    *,
    dockerfile: str = "FROM scratch\nCOPY src /panorama\n",
    interfaces: list[Any] | None = None,
) -> Path:
    """A package as `panorama-cli create-package` makes it (no asset, no interface yet), with a Dockerfile."""
    package = root / "packages" / folder
    (package / "src").mkdir(parents=True)
    (package / "src" / "app.py").write_text("print('tiny app')\n")
    (package / "Dockerfile").write_text(dockerfile)
    (package / "descriptor.json").write_text(
        json.dumps(
            {
                "runtimeDescriptor": {
                    "envelopeVersion": "2021-01-01",
                    "entry": {"path": "python3", "name": "/panorama/app.py"},
                }
            },
            indent=4,
        )
    )
    name = folder.split("-")[1]
    (package / "package.json").write_text(
        json.dumps(
            {
                "nodePackage": {
                    "envelopeVersion": "2021-01-01",
                    "name": name,
                    "version": "1.0",
                    "description": f"Default description for package {name}",
                    "assets": [],
                    "interfaces": interfaces if interfaces is not None else [],
                }
            },
            indent=4,
        )
    )
    return package
