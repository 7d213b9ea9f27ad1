"""The commands that act on a running `serve`, against a real one: deploy, camera pause/resume, storage,
shutdown/boot, export-logs and package-application --deploy."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _api_helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

CLI = str(Path(sys.executable).with_name("panorama-emulator"))


def cli(*args: str, url: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PANORAMA_EMULATOR_URL": url}
    env.pop("PANORAMA_EMULATOR_TOKEN", None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("remote-state")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def served(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve` with nothing deployed (started in an empty folder) on a free port: its URL."""
    empty = tmp_path_factory.mktemp("empty")
    process = subprocess.Popen(
        [CLI, "serve", "--port", "0", "--state-dir", str(state_dir), "--device", "remote"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=empty,
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        found = re.search(r"device API and console: (http://\S+)/", line)
        if found:
            url = found.group(1)
            break
    assert url is not None, "serve did not say where it listens"
    yield url
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


def _status(url: str) -> dict[str, object]:
    result = cli("status", "--json", url=url)
    assert result.returncode == 0, result.stderr
    status: dict[str, object] = json.loads(result.stdout)
    return status


def test_deploy_camera_storage_power_and_export_logs(
    served: str, people_counter_project: Path, state_dir: Path, tmp_path: Path
) -> None:
    deployed = cli("deploy", str(people_counter_project), url=served)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.startswith("deployed people-counter: boot ")

    paused = cli("camera", "pause", "camera_node", url=served)
    assert paused.stdout == "camera camera_node: paused\n", paused.stderr
    assert _status(served)["cameras"] == [{"name": "camera_node", "paused": True, "source": "synthetic"}]
    assert cli("camera", "resume", "camera_node", url=served).stdout == "camera camera_node: live\n"
    wrong = cli("camera", "pause", "no_such_camera", url=served)
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1

    listing = wait_for(
        lambda: "people_count.json" in (r := cli("storage", "ls", url=served)).stdout and r, timeout=120
    )
    assert listing.returncode == 0
    got = cli("storage", "get", "people_count.json", "-o", str(tmp_path / "count.json"), url=served)
    assert got.returncode == 0, got.stderr
    assert "frames" in json.loads((tmp_path / "count.json").read_text())
    escape = cli("storage", "get", "../../../etc/passwd", "-o", str(tmp_path / "x"), url=served)
    assert escape.returncode == 1 and not (tmp_path / "x").exists()

    down = cli("shutdown", url=served)
    assert down.stdout == "shut down: device remote is off\n", down.stderr
    boots = _status(served)["boots"]
    assert cli("boot", url=served).stdout == f"booted: boot {int(boots) + 1} of device remote\n"  # type: ignore[call-overload]

    wait_for(lambda: "people-counter: boot" in cli("logs", "code_node", url=served).stdout, timeout=120)
    zip_path = tmp_path / "logs.zip"
    exported = cli("export-logs", "-o", str(zip_path), "--start", "1h", url=served)
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        assert {"info.json", "status.json", "metrics.json", "graph.json", "versions.json"} <= names
        assert "logs/people-counter/code_node/console_output" in names
        info = json.loads(archive.read("info.json"))
        assert info["device"] == "remote" and info["from_serve"] and info["apps"] == ["people-counter"]
        assert sorted(info["files"]) == sorted(names)
        assert "people-counter: boot" in archive.read("logs/people-counter/code_node/console_output").decode()
        versions = json.loads(archive.read("versions.json"))
        assert versions["packages"][0]["name"] == "123456789012::PEOPLE_COUNTER_CODE"
        assert versions["packages"][0]["assets"][0]["assetUri"].endswith(".tar.gz")
        assert json.loads(archive.read("status.json"))["app"]["name"] == "people-counter"

    # Log files last written before the window are left out; a window that ends before it starts is refused.
    later = ["--start", "2999-01-01T00:00", "--end", "2999-01-02T00:00"]
    future = cli("export-logs", "-o", str(tmp_path / "none.zip"), *later, url=served)
    assert future.returncode == 0, future.stderr
    with zipfile.ZipFile(tmp_path / "none.zip") as archive:
        assert not [name for name in archive.namelist() if name.startswith("logs/")]
        assert json.loads(archive.read("info.json"))["start"].startswith("2999-01-01")
    offline = cli(
        "export-logs",
        "--offline",
        "-o",
        str(tmp_path / "offline.zip"),
        "--state-dir",
        str(state_dir),
        "--device",
        "remote",
        "--project",
        str(people_counter_project),
        url="http://127.0.0.1:9",
    )
    assert offline.returncode == 0, offline.stderr
    with zipfile.ZipFile(tmp_path / "offline.zip") as archive:
        names = set(archive.namelist())
        assert "logs/people-counter/code_node/console_output" in names and "graph.json" in names
        assert "status.json" not in names and not json.loads(archive.read("info.json"))["from_serve"]
    backwards = cli(
        "export-logs", "-o", str(tmp_path / "bad.zip"), "--start", "1h", "--end", "2h", url=served
    )
    assert backwards.returncode == 1 and "before it starts" in backwards.stderr
    assert not (tmp_path / "bad.zip").exists()


def test_package_application_deploy_uploads_to_serve(
    served: str, people_counter_project: Path, tmp_path: Path
) -> None:
    result = cli(
        "package-application",
        "--state-dir",
        str(tmp_path / "registry"),
        "--deploy",
        served,
        url=served,
        cwd=people_counter_project,
    )
    assert result.returncode == 0, result.stderr
    assert "All packages uploaded and registered successfully" in result.stdout
    assert f"Deployed people-counter to {served}" in result.stdout
    status = _status(served)
    assert status["app"]["source"] == "bundle"  # type: ignore[index]
