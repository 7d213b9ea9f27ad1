"""The panorama-cli project commands: the files they leave are the files panorama-cli leaves.

The comparison runs the real panorama-cli (PyPI ``panoramacli``, installed into a throwaway venv) and
``panorama-emulator`` on the same commands in two folders, then compares the trees byte for byte. Where
panorama-cli asks AWS for the account id (``aws sts get-caller-identity``), an ``aws`` script on PATH
answers with a fixed id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "sample-apps"
EMULATOR = str(Path(sys.executable).with_name("panorama-emulator"))
ACCOUNT = "210987654321"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def aws_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an ``aws`` that answers get-caller-identity with ACCOUNT and fails everything else."""
    folder = tmp_path_factory.mktemp("aws-bin")
    script = folder / "aws"
    script.write_text(
        f'#!/bin/sh\ncase "$*" in *get-caller-identity*) echo {ACCOUNT} ;; *) exit 255 ;; esac\n'
    )
    script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def panorama_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real panorama-cli from PyPI, in a venv of its own."""
    home = tmp_path_factory.mktemp("panoramacli-venv")
    venv.create(home, with_pip=True)
    installed = subprocess.run(
        [str(home / "bin" / "pip"), "install", "-q", "panoramacli==1.1.6", "setuptools"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0:
        pytest.skip(f"panoramacli could not be installed from PyPI: {installed.stderr.strip()[-300:]}")
    yield home / "bin" / "panorama-cli"
    shutil.rmtree(home, ignore_errors=True)


def _run(command: list[str], cwd: Path, aws_bin: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{aws_bin}{os.pathsep}{os.environ['PATH']}", **env}
    environment.pop("PANORAMA_EMULATOR_ACCOUNT_ID", None)
    environment.update(env)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        path.relative_to(root).as_posix(): (path.read_bytes() if path.is_file() else None)
        for path in sorted(root.rglob("*"))
    }


STEPS = [
    ["init-project", "--name", "app1"],
    ["create-package", "--name", "code1"],
    ["create-package", "--name", "cam", "--type", "Camera"],
    ["create-package", "--name", "mdl", "-model"],
    ["create-package", "--name", "sink", "--type", "Datasink", "--version", "2.0"],
    ["create-package", "--name", "code1"],
    ["add-panorama-package", "--type", "camera", "--name", "front_door"],
    ["add-panorama-package", "--type", "data_sink", "--name", "hdmi1"],
    ["add-panorama-package", "--type", "camera", "--name", "front_door"],
]


def test_project_commands_leave_what_panorama_cli_leaves(
    panorama_cli: Path, aws_bin: Path, tmp_path: Path
) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    said: dict[Path, list[str]] = {}
    for side, command in ((theirs, str(panorama_cli)), (ours, EMULATOR)):
        side.mkdir()
        extra = {"PANORAMA_EMULATOR_ACCOUNT_ID": ACCOUNT} if command == EMULATOR else {}
        said[side] = [
            _run(
                [command, *step], side if step[0] == "init-project" else side / "app1", aws_bin, **extra
            ).stdout.replace(str(side), "ROOT")
            for step in STEPS
        ]
    assert said[ours] == said[theirs]
    assert _tree(ours) == _tree(theirs)
    graph = json.loads((ours / "app1/graphs/app1/graph.json").read_text())["nodeGraph"]
    assert [p["name"] for p in graph["packages"]][:4] == [
        f"{ACCOUNT}::{n}" for n in ("code1", "cam", "mdl", "sink")
    ]


def test_import_application_renames_as_panorama_cli(
    panorama_cli: Path, aws_bin: Path, tmp_path: Path
) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    for side in (theirs, ours):
        shutil.copytree(SAMPLES / "people-detector", side, ignore=shutil.ignore_patterns("__pycache__"))
    _run([str(panorama_cli), "import-application"], theirs, aws_bin)
    result = _run([EMULATOR, "import-application", "--account-id", ACCOUNT], ours, aws_bin)
    assert result.stdout == "Sucessfully imported application\n"
    assert _tree(ours) == _tree(theirs)
    assert sorted(p.name for p in (ours / "packages").iterdir()) == [
        f"{ACCOUNT}-PEOPLE_DETECTOR_CODE-1.0",
        f"{ACCOUNT}-PEOPLE_DETECTOR_MODEL-1.0",
    ]
    assert "123456789012" not in (ours / "graphs/people-detector/graph.json").read_text()


def test_import_application_also_rewrites_override_and_package_json(aws_bin: Path, tmp_path: Path) -> None:
    project = tmp_path / "app"
    shutil.copytree(
        SAMPLES / "people-counter", project, ignore=shutil.ignore_patterns("__pycache__", "tests")
    )
    graph_dir = next((project / "graphs").iterdir())
    override = {
        "nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01",
            "packages": [{"name": "123456789012::my_camera", "version": "1.0"}],
            "nodes": [{"name": "cam2", "interface": "123456789012::my_camera.cam_if", "overridable": True}],
            "nodeOverrides": [],
        }
    }
    (graph_dir / "override.json").write_text(json.dumps(override, indent=4))
    package_json = next((project / "packages").glob("*/package.json"))
    data = json.loads(package_json.read_text())
    data["nodePackage"]["description"] = "123456789012::other.iface"
    package_json.write_text(json.dumps(data, indent=4))
    _run([EMULATOR, "import-application"], project, aws_bin, PANORAMA_EMULATOR_ACCOUNT_ID="999")
    assert all(p.name.startswith("999-") for p in (project / "packages").iterdir())
    written = json.loads((graph_dir / "override.json").read_text())["nodeGraphOverrides"]
    assert written["packages"][0]["name"] == "999::my_camera"
    assert written["nodes"][0]["interface"] == "999::my_camera.cam_if"
    rewritten = next((project / "packages").glob("*/package.json")).read_text()
    assert '"description": "999::other.iface"' in rewritten
    graph = json.loads((graph_dir / "graph.json").read_text())["nodeGraph"]
    folders = {p.name for p in (project / "packages").iterdir()}
    for package in graph["packages"]:
        account, _, name = package["name"].partition("::")
        assert account == "panorama" or f"999-{name}-{package['version']}" in folders


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


@pytest.fixture
def packaged_project(tmp_path: Path, aws_bin: Path) -> Iterator[Path]:
    """A project made with the commands, with a container asset named by its SHA-256."""
    _run([EMULATOR, "init-project", "--name", "app"], tmp_path, aws_bin)
    root = tmp_path / "app"
    env = {"PANORAMA_EMULATOR_ACCOUNT_ID": ACCOUNT}
    _run([EMULATOR, "create-package", "--name", "code"], root, aws_bin, **env)
    _run([EMULATOR, "add-panorama-package", "--type", "camera", "--name", "cam"], root, aws_bin)
    _run([EMULATOR, "add-panorama-package", "--type", "data_sink", "--name", "hdmi"], root, aws_bin)
    blob = _targz({"panorama/app.py": b"print('hello')\n"})
    sha = hashlib.sha256(blob).hexdigest()
    (root / "assets" / f"{sha}.tar.gz").write_bytes(blob)
    descriptor = json.dumps(
        {
            "runtimeDescriptor": {
                "envelopeVersion": "2021-01-01",
                "entry": {"path": "python3", "name": "/panorama/app.py"},
            }
        },
        indent=4,
    ).encode()
    descriptor_sha = hashlib.sha256(descriptor).hexdigest()
    (root / "assets" / f"{descriptor_sha}.json").write_bytes(descriptor)
    package_file = root / "packages" / f"{ACCOUNT}-code-1.0" / "package.json"
    package = json.loads(package_file.read_text())
    package["nodePackage"]["assets"] = [
        {
            "name": "code_asset",
            "implementations": [
                {"type": "container", "assetUri": f"{sha}.tar.gz", "descriptorUri": f"{descriptor_sha}.json"}
            ],
        }
    ]
    package["nodePackage"]["interfaces"] = [
        {
            "name": "code_interface",
            "category": "business_logic",
            "asset": "code_asset",
            "inputs": [{"name": "video_in", "type": "media"}],
            "outputs": [{"name": "video_out", "type": "media"}],
        }
    ]
    package_file.write_text(json.dumps(package, indent=4))
    graph_file = root / "graphs" / "app" / "graph.json"
    graph = json.loads(graph_file.read_text())
    graph["nodeGraph"]["nodes"].append(
        {
            "name": "code_node",
            "interface": f"{ACCOUNT}::code.code_interface",
            "overridable": False,
            "launch": "onAppStart",
        }
    )
    graph["nodeGraph"]["edges"] = [
        {"producer": "cam.video_out", "consumer": "code_node.video_in"},
        {"producer": "code_node.video_out", "consumer": "hdmi.video_in"},
    ]
    graph_file.write_text(json.dumps(graph, indent=4))
    yield root


def test_package_application_checks_and_registers(
    packaged_project: Path, aws_bin: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = _run([EMULATOR, "package-application", "--state-dir", str(state)], packaged_project, aws_bin)
    package_json = packaged_project / "packages" / f"{ACCOUNT}-code-1.0" / "package.json"
    patch = hashlib.sha256(package_json.read_bytes()).hexdigest()
    assert f"Called register package version for code with patch version {patch}" in first.stdout
    assert first.stdout.rstrip().endswith("All packages uploaded and registered successfully")
    home = state / "registry" / ACCOUNT / "code" / "1.0"
    assert (home / f"{patch}.json").read_bytes() == package_json.read_bytes()
    assert (home / "latest").read_text().strip() == patch
    again = _run([EMULATOR, "package-application", "--state-dir", str(state)], packaged_project, aws_bin)
    assert f"Patch Version {patch} already registered, ignoring upload" in again.stdout


def test_package_application_refuses_an_asset_that_is_not_its_sha(
    packaged_project: Path, tmp_path: Path
) -> None:
    blob = next((packaged_project / "assets").glob("*.tar.gz"))
    blob.write_bytes(_targz({"panorama/app.py": b"print('changed')\n"}))
    result = subprocess.run(
        [EMULATOR, "package-application", "--state-dir", str(tmp_path / "state")],
        cwd=packaged_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "code_asset" in line and "SHA-256" in line and blob.name in line
    assert not (tmp_path / "state" / "registry").exists()


def test_package_application_refuses_a_graph_that_names_a_missing_package(
    packaged_project: Path, tmp_path: Path
) -> None:
    graph_file = packaged_project / "graphs" / "app" / "graph.json"
    graph = json.loads(graph_file.read_text())
    graph["nodeGraph"]["nodes"][-1]["interface"] = f"{ACCOUNT}::nothere.code_interface"
    graph_file.write_text(json.dumps(graph, indent=4))
    result = subprocess.run(
        [EMULATOR, "package-application", "--state-dir", str(tmp_path / "state")],
        cwd=packaged_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "nothere" in result.stderr


def test_build_is_the_deprecated_build_container() -> None:
    shown = subprocess.run([EMULATOR, "build", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "--container-asset-name" in shown.stdout and "--local-image" in shown.stdout
    assert "Deprecated" in shown.stdout


def test_add_raw_model_from_s3_says_what_it_needs(packaged_project: Path, tmp_path: Path) -> None:
    descriptor = tmp_path / "descriptor.json"
    descriptor.write_text(
        json.dumps(
            {
                "mlModelDescriptor": {
                    "envelopeVersion": "2021-01-01",
                    "framework": "ONNX",
                    "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}],
                }
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    result = subprocess.run(
        [
            EMULATOR,
            "add-raw-model",
            "--model-asset-name",
            "m",
            "--model-s3-uri",
            "s3://bucket/model.tar.gz",
            "--descriptor-path",
            str(descriptor),
        ],
        cwd=packaged_project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "s3://bucket/model.tar.gz" in line and ("boto3" in line or "credentials" in line)
    assert not any((packaged_project / "assets").glob("*m*.tar.gz.tmp"))


def test_install_alias_runs_the_emulator_as_panorama_cli(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    assert subprocess.run([EMULATOR, "install-alias", "--bin-dir", str(folder)], timeout=60).returncode == 0
    alias = folder / "panorama-cli"
    made = subprocess.run(
        [str(alias), "init-project", "--name", "p"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"Successfully created the project skeleton at {tmp_path / 'p'}\n"
    usage = subprocess.run([str(alias), "--help"], capture_output=True, text=True, timeout=60)
    assert usage.stdout.startswith("Usage: panorama-cli")
    alias.write_text("#!/bin/sh\necho the real one\n")
    refused = subprocess.run(
        [EMULATOR, "install-alias", "--bin-dir", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert alias.read_text() == "#!/bin/sh\necho the real one\n"
