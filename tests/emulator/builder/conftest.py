"""Fixtures for the build stage: copies of the sample project, a tiny local image, the stand-in base image."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _build_helpers import SAMPLE


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the people-counter sample; the working directory is its root (as with panorama-cli)."""
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root)
    monkeypatch.chdir(root)
    return root


# --- real engine -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A Docker client for the running engine (the tests that need one are skipped without it)."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine: {error}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_image(docker_engine: Any) -> Iterator[str]:
    """A two-megabyte local image with a POSIX shell (the host's dash and libc), for fast real builds."""
    files = {
        "bin/sh": Path("/usr/bin/dash") if Path("/usr/bin/dash").exists() else Path("/bin/sh"),
    }
    libraries = subprocess.run(
        ["ldd", str(files["bin/sh"])], capture_output=True, text=True, check=False
    ).stdout
    for line in libraries.splitlines():
        for part in line.split():
            if part.startswith("/") and Path(part).exists():
                files[part.lstrip("/")] = Path(part)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("tmp", "opt/aws/panorama/storage"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            archive.addfile(info)
        for name, source in files.items():
            archive.add(str(source.resolve()), arcname=name)
    tag = f"pe-build-test/tiny-{uuid.uuid4().hex[:8]}:latest"
    repository, _, version = tag.rpartition(":")
    docker_engine.api.import_image_from_data(
        buffer.getvalue(), repository=repository, tag=version, changes=['CMD ["/bin/sh"]']
    )
    yield tag
    import docker.errors

    with contextlib.suppress(docker.errors.APIError):
        docker_engine.images.remove(tag, force=True)


@pytest.fixture(scope="session")
def base_image(docker_engine: Any) -> str:
    """The stand-in public.ecr.aws/panorama/panorama-application (built once if absent)."""
    from rich.console import Console

    from emulator.builder import ensure_base_image

    return ensure_base_image(client=docker_engine, console=Console(file=io.StringIO()))
