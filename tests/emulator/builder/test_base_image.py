"""The offline stand-in base image: built with a real engine, used as package Dockerfiles use it."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from click.testing import CliRunner
from rich.console import Console

from emulator.builder import base_image, base_rootfs
from emulator.builder.base_image import (
    BASE_IMAGE_REPOSITORY,
    LABEL_CONFIGURATION,
    LABEL_RECIPE,
    STAND_IN_REFERENCES,
    BaseImageError,
    ensure_base_image,
    recipe_key,
)
from emulator.cli import main
from emulator.errors import BuildError, EngineError

# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    try:
        engine = docker.from_env()
        engine.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine: {error}")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def image_id(client: docker.DockerClient) -> str:
    """The stand-in base image (built once if absent; a no-op when up to date)."""
    return ensure_base_image(client=client, console=Console(file=io.StringIO()))


def run_in_image(client: docker.DockerClient, image: str, command: list[str]) -> tuple[int, str]:
    """Run ``command`` in a new container from ``image`` (no network); return its exit status and output."""
    container = client.containers.create(image, command=command, network_mode="none")
    try:
        container.start()
        status = container.wait(timeout=300)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def build(client: docker.DockerClient, dockerfile: str) -> tuple[str, list[str]]:
    """Build ``dockerfile`` (host networking, as the build stage does); return the image tag and the log."""
    tag = f"pe-test-base-image-{uuid.uuid4().hex[:12]}:latest"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    log: list[str] = []
    for chunk in client.api.build(
        fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, network_mode="host", decode=True
    ):
        if "error" in chunk:
            raise AssertionError(f"build failed: {chunk['error']}\n" + "".join(log[-30:]))
        log.append(str(chunk.get("stream", "")))
    return tag, log


@pytest.fixture
def built_images(client: docker.DockerClient) -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    for tag in tags:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(tag, force=True)


# --- the image (real engine) -----------------------------------------------------------------------------


@pytest.mark.docker
def test_every_published_reference_points_at_the_one_image(
    client: docker.DockerClient, image_id: str
) -> None:
    assert set(STAND_IN_REFERENCES) == {
        "public.ecr.aws/panorama/panorama-application:latest",
        "public.ecr.aws/panorama/panorama-application:1.1.0-arm64v8",
        "public.ecr.aws/panorama/panorama-application:1.2.0-py3.8",
        "public.ecr.aws/panorama/panorama-application:1.2.1-arm64v8",
        "public.ecr.aws/panorama/panorama-application/sdkv1/python3.8/aarch64:latest",
    }
    for reference in STAND_IN_REFERENCES:
        assert client.images.get(reference).id == image_id
    labels = client.images.get(image_id).labels
    assert labels[LABEL_RECIPE] == recipe_key() and len(labels[LABEL_CONFIGURATION]) == 16
    assert labels["org.panorama-emulator.stand-in"] == "true"
    assert labels["org.panorama-emulator.python"].startswith("3.11")
    assert "bookworm" in labels["org.panorama-emulator.debian"]


@pytest.mark.docker
def test_python3_imports_cv2_and_numpy(client: docker.DockerClient, image_id: str) -> None:
    status, output = run_in_image(
        client,
        image_id,
        ["python3", "-c", "import cv2, numpy; print(cv2.__version__, numpy.zeros((2, 2)).sum())"],
    )
    assert status == 0, output
    assert output.split()[-1] == "0.0"


@pytest.mark.docker
def test_it_answers_to_the_python_names_of_the_real_images(
    client: docker.DockerClient, image_id: str
) -> None:
    script = (
        "python3.8 -c 'import sys, cv2; print(\"py38\", sys.version_info[0])' && "
        "python3.7 -c 'import numpy; print(\"py37\", numpy.__name__)' && "
        "python3.8 -m pip --version && pip3 --version && pip3.8 --version && pip3.7 --version"
    )
    status, output = run_in_image(client, image_id, ["sh", "-c", script])
    assert status == 0, output
    lines = output.splitlines()
    assert lines[:2] == ["py38 3", "py37 numpy"]
    assert len([line for line in lines if line.startswith("pip ")]) == 4
    labels = client.images.get(image_id).labels
    assert labels["org.panorama-emulator.python-names"] == "python3.8 python3.7"


@pytest.mark.docker
def test_tag_adds_a_reference_without_a_rebuild(client: docker.DockerClient, image_id: str) -> None:
    created = client.images.get(image_id).attrs["Created"]
    reference = f"pe-test/own-base-{uuid.uuid4().hex[:8]}:2.0"
    out = io.StringIO()
    try:
        again = ensure_base_image(tags=[reference], client=client, console=Console(file=out, width=300))
        assert again == image_id
        assert client.images.get(reference).id == image_id
        assert client.images.get(image_id).attrs["Created"] == created
        assert out.getvalue().strip() == (
            f"{BASE_IMAGE_REPOSITORY} is up to date ({image_id[7:19]}, recipe {recipe_key()}); "
            f"also tagged {reference}"
        )
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(reference)


@pytest.mark.docker
def test_cli_tag_of_a_digest_is_one_error_line(image_id: str) -> None:
    result = CliRunner().invoke(main, ["base-image", "--tag", "base@sha256:" + "0" * 64])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "names an image by digest" in lines[0], result.output


@pytest.mark.docker
def test_create_without_a_command_works(client: docker.DockerClient, image_id: str) -> None:
    container = client.containers.create(image_id, network_mode="none")
    try:
        assert container.attrs["Config"]["Cmd"]
        container.start()
        assert container.wait(timeout=120)["StatusCode"] == 0
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_layout_matches_the_real_base(client: docker.DockerClient, image_id: str) -> None:
    script = (
        "import os, sysconfig\n"
        "marker = os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED')\n"
        "print('marker', os.path.exists(marker))\n"
        "print('storage', os.path.isdir('/opt/aws/panorama/storage'))\n"
        "print('logs', os.path.isdir('/opt/aws/panorama/logs'))\n"
        "print('sdk', __import__('importlib.util').util.find_spec('panoramasdk') is not None)\n"
        "print('cert', 'cert = /etc/ssl/certs/ca-certificates.crt' in open('/etc/pip.conf').read())\n"
    )
    status, output = run_in_image(client, image_id, ["python3", "-c", script])
    assert status == 0, output
    assert output.split("\n")[:5] == ["marker False", "storage True", "logs True", "sdk False", "cert True"]


@pytest.mark.docker
def test_host_trust_store_is_baked_in(client: docker.DockerClient, image_id: str) -> None:
    host = Path("/etc/ssl/certs/ca-certificates.crt")
    if not host.is_file():
        pytest.skip("the host has no CA bundle")
    status, output = run_in_image(
        client, image_id, ["python3", "-c", "print(len(open('/etc/ssl/certs/ca-certificates.crt').read()))"]
    )
    assert status == 0, output
    assert int(output.split()[-1]) == len(host.read_text())


@pytest.mark.docker
def test_package_dockerfile_pip_installs_from_pypi(
    client: docker.DockerClient, image_id: str, built_images: list[str]
) -> None:
    tag, _ = build(
        client,
        f"FROM {BASE_IMAGE_REPOSITORY}:1.2.0-py3.8\n"
        "WORKDIR /panorama\n"
        "RUN python3 -m pip install --no-cache-dir six\n",
    )
    built_images.append(tag)
    status, output = run_in_image(client, tag, ["python3", "-c", "import six; print(six.__file__)"])
    assert status == 0, output
    assert "/usr/local/lib/" in output


@pytest.mark.docker
@pytest.mark.slow
def test_pip_installed_opencv_python_imports(
    client: docker.DockerClient, image_id: str, built_images: list[str]
) -> None:
    # The non-headless wheel needs libGL, GLib, SM, Xext and Xrender from the image.
    tag, _ = build(
        client, f"FROM {BASE_IMAGE_REPOSITORY}\nRUN python3 -m pip install --no-cache-dir opencv-python\n"
    )
    built_images.append(tag)
    status, output = run_in_image(
        client,
        tag,
        [
            "python3",
            "-c",
            "import cv2, importlib.metadata as m; print(m.version('opencv-python'), cv2.__file__)",
        ],
    )
    assert status == 0, output
    assert "/usr/local/lib/" in output.split()[-1]


@pytest.mark.docker
def test_second_call_is_a_no_op(client: docker.DockerClient, image_id: str) -> None:
    created = client.images.get(image_id).attrs["Created"]
    out = io.StringIO()
    again = ensure_base_image(client=client, console=Console(file=out, width=200))
    assert again == image_id
    assert client.images.get(f"{BASE_IMAGE_REPOSITORY}:latest").attrs["Created"] == created
    assert "up to date" in out.getvalue()
    assert len(out.getvalue().strip().splitlines()) == 1


@pytest.mark.docker
def test_cli_reports_up_to_date(image_id: str) -> None:
    result = CliRunner().invoke(main, ["base-image"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


# --- errors -----------------------------------------------------------------------------------------------


def test_no_engine_is_one_line_saying_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineError) as raised:
        base_image.docker_client()
    message = str(raised.value)
    assert "\n" not in message
    assert "no Docker engine answers" in message and "dockerd" in message


def test_cli_without_engine_exits_1_with_one_error_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = CliRunner().invoke(main, ["base-image"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no Docker engine answers"), result.output


def test_not_root_without_cache_says_debootstrap_needs_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(base_rootfs.os, "geteuid", lambda: 1000)
    console = Console(file=io.StringIO())
    with pytest.raises(BaseImageError) as raised:
        base_rootfs.rootfs_tarball(tmp_path, console, _quiet_progress(console))
    assert isinstance(raised.value, BuildError)
    assert "debootstrap needs root" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_debootstrap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(base_rootfs, "_DEBOOTSTRAP_FALLBACKS", (tmp_path / "debootstrap",))
    console = Console(file=io.StringIO())
    with pytest.raises(BaseImageError, match=r"apt-get install debootstrap"):
        base_rootfs._debootstrap(tmp_path / "root", "http://deb.debian.org/debian", _quiet_progress(console))
    assert not (tmp_path / "root").exists()


def test_cached_rootfs_needs_neither_root_nor_debootstrap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = recipe_key()
    (tmp_path / f"rootfs-{key}.tar.gz").write_bytes(b"")
    (tmp_path / f"rootfs-{key}.json").write_text('{"python": "3.11.2"}')
    monkeypatch.setattr(base_rootfs.os, "geteuid", lambda: 1000)
    console = Console(file=io.StringIO())
    tarball, versions = base_rootfs.rootfs_tarball(tmp_path, console, _quiet_progress(console))
    assert tarball == tmp_path / f"rootfs-{key}.tar.gz"
    assert versions == {"python": "3.11.2"}


def _quiet_progress(console: Console) -> Any:
    from rich.progress import Progress

    return Progress(console=console, disable=True)


# --- host configuration ------------------------------------------------------------------------------------


def test_mirror_from_deb822_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PANORAMA_EMULATOR_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert base_rootfs.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PANORAMA_EMULATOR_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64] http://one.example/debian bookworm main\n"
    )
    assert base_rootfs.debian_mirror(tmp_path) == "http://one.example/debian"


def test_mirror_env_override_and_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PANORAMA_EMULATOR_DEBIAN_MIRROR", raising=False)
    assert base_rootfs.debian_mirror(tmp_path) == "http://deb.debian.org/debian"
    monkeypatch.setenv("PANORAMA_EMULATOR_DEBIAN_MIRROR", "http://env.example/debian/")
    assert base_rootfs.debian_mirror(tmp_path) == "http://env.example/debian"


def test_image_pip_conf_keeps_network_settings_and_drops_host_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    conf = base_image._image_pip_conf(
        {
            "index-url": "https://pypi.example/simple",
            "extra-index-url": "file:///opt/pypi/simple https://extra.example/simple",
            "find-links": "/opt/wheels",
            "trusted-host": "pypi.example",
            "proxy": "http://proxy.example:3128",
        }
    )
    assert conf.splitlines() == [
        "[global]",
        "cert = /etc/ssl/certs/ca-certificates.crt",
        "index-url = https://pypi.example/simple",
        "extra-index-url = https://extra.example/simple",
        "trusted-host = pypi.example",
        "proxy = http://proxy.example:3128",
    ]


def test_pip_environment_wins_over_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://config.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    assert base_image._host_pip_settings()["index-url"] == "https://env.example/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    assert base_image._host_pip_settings()["index-url"] == "https://config.example/simple"


def test_trim_keeps_copyright_locale_alias_and_log_dirs(tmp_path: Path) -> None:
    for path in (
        "usr/share/doc/pkg/copyright", "usr/share/doc/pkg/changelog.gz", "usr/share/locale/locale.alias",
        "usr/share/locale/de/LC_MESSAGES/x.mo", "var/log/apt/history.log", "var/log/dpkg.log",
        "var/cache/apt/archives/x.deb", "var/cache/apt/archives/partial/.keep", "tmp/x.whl",
    ):  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    base_rootfs._trim(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "usr/share/doc/pkg/copyright",
        "usr/share/locale/locale.alias",
        "var/cache/apt/archives/partial/.keep",
    ]
    assert (tmp_path / "var/log/apt").is_dir()


def test_configuration_key_leaves_the_rootfs_recipe_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    files = base_image._configuration("parent:a", "[global]\n", None)
    key = base_image._configuration_key(files)
    assert key == base_image._configuration_key(base_image._configuration("parent:b", "[global]\n", None))
    recipe = recipe_key()
    monkeypatch.setitem(base_image.PYTHON_NAMES, "python3.6", "/usr/bin/python3")
    assert base_image._configuration_key(base_image._configuration("parent:a", "[global]\n", None)) != key
    assert recipe_key() == recipe  # new names or tags never make debootstrap run again
    monkeypatch.setattr(base_image, "BASE_IMAGE_TAGS", (*base_image.BASE_IMAGE_TAGS, "9.9"))
    assert recipe_key() == recipe


def test_recipe_key_is_stable_and_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    key = recipe_key()
    assert key == recipe_key() and len(key) == 16
    monkeypatch.setattr(base_rootfs, "DEBIAN_PACKAGES", (*base_rootfs.DEBIAN_PACKAGES, "curl"))
    assert recipe_key() != key


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PANORAMA_EMULATOR_CACHE", str(tmp_path / "c"))
    assert base_image.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PANORAMA_EMULATOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert base_image.cache_dir() == tmp_path / "x" / "panorama-emulator"
    assert os.environ.get("PANORAMA_EMULATOR_CACHE") is None
