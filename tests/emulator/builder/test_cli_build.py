"""The build commands as a user runs them (a subprocess in the project root), with the real Docker engine."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _build_helpers import SAMPLE_PACKAGE, read, run_cli, snapshot, write_package

from emulator.builder.assets import BINFMT_AARCH64

MODEL_DESCRIPTOR = {
    "mlModelDescriptor": {
        "envelopeVersion": "2021-01-01",
        "framework": "PYTORCH",
        "inputs": [{"name": "data", "shape": [1, 3, 224, 224]}],
    }
}
BUILT = "Container asset for the package has been succesfully built at "


def built_path(stdout: str) -> Path:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(BUILT), stdout
    return Path(last[len(BUILT) :])


def printed_asset(stdout: str) -> Any:
    """The asset JSON printed before the closing line."""
    text = stdout[: stdout.rindex(BUILT)]
    return json.loads(text[text.rindex('\n{\n    "name"') :])


def assert_valid_asset(path: Path) -> None:
    content = path.read_bytes()
    assert path.name == hashlib.sha256(content).hexdigest() + ".tar.gz"
    gzip.decompress(content)  # complete and CRC-checked
    with tarfile.open(fileobj=io.BytesIO(content)) as archive:
        assert archive.getmembers()


def containers_of(engine: Any, image: str) -> list[Any]:
    return list(engine.containers.list(all=True, filters={"ancestor": engine.images.get(image).id}))


@pytest.mark.docker
@pytest.mark.slow
def test_sample_builds_as_panorama_cli_would(project: Path, base_image: str, docker_engine: Any) -> None:
    package_before = read(project / SAMPLE_PACKAGE / "package.json")
    graph_before = (project / "graphs/people-counter/graph.json").read_bytes()
    result = run_cli(
        "build-container", "--container-asset-name", "code", "--package-path", SAMPLE_PACKAGE, cwd=project
    )
    assert result.returncode == 0, result.stderr

    asset_path = built_path(result.stdout)
    assert asset_path.parent == project / "assets"
    assert_valid_asset(asset_path)
    with tarfile.open(asset_path) as archive:
        app = archive.extractfile("panorama/app.py")
        assert app is not None
        assert app.read() == (project / SAMPLE_PACKAGE / "src/app.py").read_bytes()
    descriptor = (project / SAMPLE_PACKAGE / "descriptor.json").read_bytes()
    descriptor_uri = hashlib.sha256(descriptor).hexdigest() + ".json"
    assert (project / "assets" / descriptor_uri).read_bytes() == descriptor

    expected = copy.deepcopy(package_before)
    asset = {
        "name": "code",
        "implementations": [
            {"type": "container", "assetUri": asset_path.name, "descriptorUri": descriptor_uri}
        ],
    }
    expected["nodePackage"]["assets"] = [asset]
    assert (project / SAMPLE_PACKAGE / "package.json").read_text() == json.dumps(expected, indent=4)
    assert printed_asset(result.stdout) == asset
    assert (project / "graphs/people-counter/graph.json").read_bytes() == graph_before
    # No registry here: one line says the local base image is used.
    assert result.stdout.count("building with the local image") == 1
    assert "Step 3/4 : RUN" in result.stdout  # the engine's output streamed
    assert containers_of(docker_engine, "code:latest") == []  # unlike panorama-cli, no container left


@pytest.mark.docker
@pytest.mark.slow
def test_rebuilds_give_new_valid_assets_and_delete_the_stale_one(
    project: Path, base_image: str, tmp_path: Path
) -> None:
    args = (
        "build-container",
        "--container-asset-name",
        "code",
        "--package-path",
        SAMPLE_PACKAGE,
        "--local-image",
    )
    first = run_cli(*args, cwd=project)
    assert first.returncode == 0, first.stderr
    first_path = built_path(first.stdout)
    kept = tmp_path / first_path.name
    shutil.copy(first_path, kept)

    second = run_cli(*args, cwd=project)
    assert second.returncode == 0, second.stderr
    second_path = built_path(second.stdout)
    assert_valid_asset(kept)
    assert_valid_asset(second_path)
    # Like panorama-cli's, a normal build is stamped with the time: every rebuild is a new asset.
    assert second_path != first_path
    assert not first_path.exists()
    assert f"Deleting old asset {first_path.name}" in second.stdout
    assets = read(project / SAMPLE_PACKAGE / "package.json")["nodePackage"]["assets"]
    assert [asset["implementations"][0]["assetUri"] for asset in assets] == [second_path.name]
    assert sorted(path.name for path in (project / "assets").iterdir()) == sorted(
        [".gitkeep", second_path.name, assets[0]["implementations"][0]["descriptorUri"]]
    )


@pytest.mark.docker
@pytest.mark.slow
def test_reproducible_builds_give_one_hash(project: Path, base_image: str) -> None:
    args = ("build-container", "--container-asset-name", "code", "--package-path", SAMPLE_PACKAGE)
    first = run_cli(*args, "--local-image", "--reproducible", cwd=project)
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, "--local-image", "--reproducible", cwd=project)
    assert second.returncode == 0, second.stderr
    assert built_path(first.stdout) == built_path(second.stdout)
    assert_valid_asset(built_path(second.stdout))
    with tarfile.open(built_path(second.stdout)) as archive:
        hostname = archive.getmember("etc/hostname")
        assert hostname.mtime == 0 and hostname.uname == ""


@pytest.mark.docker
def test_a_fresh_package_from_scratch_gets_its_interface_and_node(project: Path, docker_engine: Any) -> None:
    write_package(project)  # FROM scratch: no shell, no CMD
    graph_file = project / "graphs/people-counter/graph.json"
    graph_before = read(graph_file)
    package = "packages/123456789012-TINY_CODE-1.0"
    result = run_cli(
        "build-container",
        "--container-asset-name",
        "tiny",
        "--package-path",
        package,
        "--local-image",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    asset_path = built_path(result.stdout)
    assert_valid_asset(asset_path)
    with tarfile.open(asset_path) as archive:
        assert "panorama/app.py" in archive.getnames()
    interfaces = read(project / package / "package.json")["nodePackage"]["interfaces"]
    assert [interface["name"] for interface in interfaces] == ["tiny_interface"]
    graph_before["nodeGraph"]["nodes"].append(
        {
            "name": "tiny_node",
            "interface": "123456789012::TINY_CODE.tiny_interface",
            "overridable": False,
            "launch": "onAppStart",
        }
    )
    assert graph_file.read_text() == json.dumps(graph_before, indent=4)
    assert containers_of(docker_engine, "tiny:latest") == []
    docker_engine.images.remove("tiny:latest")


@pytest.mark.docker
def test_failing_run_step_is_one_clear_error_and_changes_nothing(project: Path, tiny_image: str) -> None:
    package = write_package(
        project, dockerfile=f"FROM {tiny_image}\nCOPY src /panorama\nRUN echo compiling && exit 3\n"
    )
    before = snapshot(project)
    result = run_cli(
        "build-container",
        "--container-asset-name",
        "tiny",
        "--package-path",
        str(package.relative_to(project)),
        "--local-image",
        cwd=project,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: packages/123456789012-TINY_CODE-1.0/Dockerfile:3: "
        "RUN echo compiling && exit 3 failed (step 3/3): "
        "The command '/bin/sh -c echo compiling && exit 3' returned a non-zero code: 3"
    ]
    assert "last lines from the engine:" in result.stderr and "  compiling" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(project) == before


@contextlib.contextmanager
def _without_qemu_aarch64() -> Iterator[None]:
    """qemu-user's aarch64 registration disabled meanwhile (root only): the kernel refuses arm64 programs."""
    if not BINFMT_AARCH64.exists():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("this host runs aarch64 programs through qemu and only root may switch that off")
    enabled = BINFMT_AARCH64.read_text().startswith("enabled")
    BINFMT_AARCH64.write_text("0")
    try:
        yield
    finally:
        if enabled:
            BINFMT_AARCH64.write_text("1")


@pytest.mark.docker
def test_an_arm64_program_without_qemu_is_explained(project: Path, docker_engine: Any) -> None:
    with _without_qemu_aarch64():
        _arm64_program_without_qemu(project, docker_engine)


def _arm64_program_without_qemu(project: Path, docker_engine: Any) -> None:
    # An ELF header for AArch64 is all the kernel looks at before refusing to run the file.
    elf = (
        b"\x7fELF\x02\x01\x01\x00"
        + bytes(8)
        + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, 0, 64, 0, 0, 64, 56, 0, 0, 0, 0)
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("bin/sh")
        info.size, info.mode = len(elf), 0o755
        archive.addfile(info, io.BytesIO(elf))
    tag = "pe-build-test/arm64-shell"
    docker_engine.api.import_image_from_data(buffer.getvalue(), repository=tag, tag="latest")
    try:
        package = write_package(project, dockerfile=f"FROM {tag}\nRUN true\n")
        before = snapshot(project)
        result = run_cli(
            "build-container",
            "--container-asset-name",
            "tiny",
            "--package-path",
            str(package),
            "--local-image",
            cwd=project,
        )
        assert result.returncode == 1
        error = result.stderr.split("error: ", 1)[1].replace("\n", " ")
        assert "Dockerfile:2: RUN true failed (step 2/2)" in error
        assert "the image is for arm64" in error and "qemu-user-static" in error
        assert snapshot(project) == before
    finally:
        docker_engine.images.remove(f"{tag}:latest", force=True)


def _break_package_json(root: Path) -> None:
    (root / SAMPLE_PACKAGE / "package.json").write_text('{"nodePackage": {"envelopeVersion": "2021-01-01",')


def _model_descriptor(root: Path) -> None:
    (root / SAMPLE_PACKAGE / "descriptor.json").write_text(
        '{"runtimeDescriptor": {"entry": "python3 app.py"}}'
    )


@pytest.mark.parametrize(
    ("change", "package", "expected"),
    [
        (
            lambda root: (root / SAMPLE_PACKAGE / "Dockerfile").unlink(),
            SAMPLE_PACKAGE,
            f"error: {SAMPLE_PACKAGE}/Dockerfile: no Dockerfile",
        ),
        (
            _break_package_json,
            SAMPLE_PACKAGE,
            f"error: {SAMPLE_PACKAGE}/package.json: /: expected valid JSON",
        ),
        (
            lambda root: (root / SAMPLE_PACKAGE / "descriptor.json").write_text("python3 /panorama/app.py\n"),
            SAMPLE_PACKAGE,
            f"error: {SAMPLE_PACKAGE}/descriptor.json: /: expected valid JSON",
        ),
        (_model_descriptor, SAMPLE_PACKAGE, f"error: {SAMPLE_PACKAGE}/descriptor.json: /runtimeDescriptor"),
        (lambda root: None, "../outside-1-1.0", "error: ../outside-1-1.0: package path"),
        (lambda root: None, "graphs/people-counter", "error: graphs/people-counter: package path must be"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    project: Path, change: Any, package: str, expected: str
) -> None:
    (project.parent / "outside-1-1.0").mkdir()
    change(project)
    before = snapshot(project)
    result = run_cli(
        "build-container", "--container-asset-name", "code", "--package-path", package, cwd=project
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(expected), result.stderr
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr
    assert snapshot(project) == before


def test_no_engine_is_one_clear_line(project: Path, tmp_path: Path) -> None:
    before = snapshot(project)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = run_cli(
        "build-container",
        "--container-asset-name",
        "code",
        "--package-path",
        SAMPLE_PACKAGE,
        cwd=project,
        env=env,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Docker engine"), result.stderr
    assert "start dockerd or set DOCKER_HOST" in lines[0]
    assert snapshot(project) == before


@pytest.mark.docker
def test_export_container_of_an_image(project: Path, tiny_image: str) -> None:
    result = run_cli(
        "export-container",
        "--container-asset-name",
        "code",
        "--container-image-uri",
        tiny_image,
        "--package-path",
        SAMPLE_PACKAGE,
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    asset_path = built_path(result.stdout)
    assert_valid_asset(asset_path)
    with tarfile.open(asset_path) as archive:
        assert "bin/sh" in archive.getnames()
    assets = read(project / SAMPLE_PACKAGE / "package.json")["nodePackage"]["assets"]
    assert assets == [printed_asset(result.stdout)]


@pytest.mark.docker
def test_export_container_of_an_unknown_image_is_one_clear_error(project: Path, docker_engine: Any) -> None:
    before = snapshot(project)
    result = run_cli(
        "export-container",
        "--container-asset-name",
        "code",
        "--container-image-uri",
        "pe-build-test/no-such-image:1.0",
        "--package-path",
        SAMPLE_PACKAGE,
        cwd=project,
    )
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(
        "error: the Docker engine has no image pe-build-test/no-such-image:1.0 and cannot pull it"
    )
    assert snapshot(project) == before


def test_add_raw_model_takes_several_packages_like_panorama_cli(project: Path, tmp_path: Path) -> None:
    other = write_package(project, "123456789012-OTHER_CODE-1.0")
    model = tmp_path / "model.tar.gz"
    with tarfile.open(model, "w:gz") as archive:
        info = tarfile.TarInfo("model.onnx")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"onnx"))
    descriptor = tmp_path / "descriptor.json"
    descriptor.write_text(json.dumps(MODEL_DESCRIPTOR))
    result = run_cli(
        "add-raw-model",
        "--model-asset-name",
        "detector",
        "--model-local-path",
        str(model),
        "--descriptor-path",
        str(descriptor),
        "--packages-path",
        SAMPLE_PACKAGE,
        str(other.relative_to(project)),
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"Successfully downloaded the model to {project}/assets/{sha}.tar.gz"
    )
    for package in (project / SAMPLE_PACKAGE, other):
        body = read(package / "package.json")["nodePackage"]
        assert body["assets"][0]["name"] == "detector"
        assert body["assets"][0]["implementations"][0]["assetUri"] == f"{sha}.tar.gz"
        assert [i["name"] for i in body["interfaces"] if i["category"] == "ml_model"] == [
            "detector_interface"
        ]
    nodes = read(project / "graphs/people-counter/graph.json")["nodeGraph"]["nodes"]
    assert [node["interface"] for node in nodes if node["name"] == "detector"] == [
        "123456789012::PEOPLE_COUNTER_CODE.detector_interface"
    ]


def test_add_raw_model_refuses_a_file_that_is_not_a_gzip_tar(project: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x80\x02 a pickled torch model")
    descriptor = tmp_path / "descriptor.json"
    descriptor.write_text(json.dumps(MODEL_DESCRIPTOR))
    before = snapshot(project)
    result = run_cli(
        "add-raw-model",
        "--model-asset-name",
        "detector",
        "--model-local-path",
        str(model),
        "--descriptor-path",
        str(descriptor),
        "--packages-path",
        SAMPLE_PACKAGE,
        cwd=project,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {model}: a model must be a .tar.gz archive: the file is not gzip-compressed"
    ]
    assert snapshot(project) == before
