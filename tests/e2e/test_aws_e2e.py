"""AWS calls from apps (``--aws none|host|local``) with real boto3 in real sandboxes.

Three packages FROM the offline stand-in install boto3 in a RUN step (pip from the package index, as a
published Dockerfile does): the probe with ``boto3==1.24.*`` (the developer guide sample's pin, from before
``AWS_ENDPOINT_URL``, speaking CloudWatch's Query protocol) and with the current boto3 (JSON protocol), and
an app in the shape of the guide's sample that puts two metrics every 150 frames and does not guard the call.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _e2e_helpers import APPS_DIR, FAST, camera_to_hdmi_graph, public_tmp_dir, reports

from emulator import Appliance, ApplianceOptions

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

BASE = "public.ecr.aws/panorama/panorama-application:1.2.0-py3.8"
NODE = "code_node"
OLD = "boto3==1.24.*"


@dataclass(frozen=True)
class Package:
    name: str  # graph folder and asset name suffix
    boto3: str  # the pip requirement
    entry: str  # the file in src/


PACKAGES = (
    Package("old", OLD, "probe.py"),
    Package("new", "boto3", "probe.py"),
    Package("sample", OLD, "sample.py"),
)


def _write_package(root: Path, package: Package) -> None:
    name = f"AWS_{package.name.upper()}"
    folder = root / "packages" / f"123456789012-{name}-1.0"
    (folder / "src").mkdir(parents=True)
    shutil.copy(APPS_DIR / "aws-probe" / package.entry, folder / "src" / package.entry)
    (folder / "Dockerfile").write_text(
        f'FROM {BASE}\nWORKDIR /panorama\nRUN python3 -m pip install --no-cache-dir "{package.boto3}"\n'
        "COPY src /panorama\n"
    )
    entry = {"path": "python3", "name": f"/panorama/{package.entry}"}
    descriptor = {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}}
    (folder / "descriptor.json").write_text(json.dumps(descriptor))
    interface = {
        "name": "code_interface", "category": "business_logic", "asset": f"pe_aws_{package.name}",
        "inputs": [{"name": "video_in", "type": "media"}],
        "outputs": [{"name": "video_out", "type": "media"}],
    }  # fmt: skip
    manifest = {
        "nodePackage": {
            "envelopeVersion": "2021-01-01", "name": name, "version": "1.0", "description": package.name,
            "assets": [], "interfaces": [interface],
        }
    }  # fmt: skip
    (folder / "package.json").write_text(json.dumps(manifest))
    graph = camera_to_hdmi_graph(name, NODE)
    (root / "graphs" / package.name).mkdir(parents=True)
    (root / "graphs" / package.name / "graph.json").write_text(json.dumps(graph))


@pytest.fixture(scope="module")
def aws_project() -> Iterator[Path]:
    """The three packages, built once."""
    from rich.console import Console

    try:
        from emulator.builder import build_container, ensure_base_image
        from emulator.project import Project

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here
        pytest.skip(f"cannot build FROM the stand-in: {error}")
    base = public_tmp_dir("pe-e2e-aws-")
    root = base / "aws"
    (root / "assets").mkdir(parents=True)
    try:
        for package in PACKAGES:
            _write_package(root, package)
            build_container(
                Project(root),
                f"pe_aws_{package.name}",
                root / "packages" / f"123456789012-AWS_{package.name.upper()}-1.0",
                local_image=True,
                console=Console(file=io.StringIO()),
            )
        yield root
    finally:
        import docker
        import docker.errors

        client = docker.from_env()
        for package in PACKAGES:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"pe_aws_{package.name}:latest", force=True)
        client.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = public_tmp_dir("pe-e2e-aws-state-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _appliance(project: Path, state_dir: Path, name: str, aws: str, network: str = "host") -> Appliance:
    return Appliance(
        project, device="aws", state_dir=state_dir, graph=project / "graphs" / name / "graph.json",
        aws=aws, network=network, quiet=True, backoff=FAST,
    )  # fmt: skip


def _probe(appliance: Appliance, frames: int = 25) -> dict[str, list[dict[str, object]]]:
    with appliance:
        assert appliance.wait_for_frames(frames, timeout=300)
        text = appliance.logs(NODE)
        metrics = appliance.metrics().to_json()
    found = {kind: reports(text, kind) for kind in ("aws-start", "aws-put", "aws-other")}
    found["metrics"] = [metrics]
    return found


@pytest.mark.parametrize(
    ("name", "version", "protocol", "network"),
    [("old", "1.24.", "query", "host"), ("new", "", "json", "host"), ("old", "1.24.", "query", "none")],
    ids=["boto3-1.24", "boto3-current", "boto3-1.24-network-none"],
)
def test_local_mode_keeps_the_metrics_of_old_and_current_boto3(
    aws_project: Path, state_dir: Path, name: str, version: str, protocol: str, network: str
) -> None:
    seen = _probe(_appliance(aws_project, state_dir, name, "local", network=network))
    (start,) = seen["aws-start"]
    assert str(start["boto3"]).startswith(version), start
    assert start["method"] == "env" and start["region"] == "us-east-1"
    assert {"AWS_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"} <= set(start["env"])  # type: ignore[arg-type]
    puts = seen["aws-put"]
    assert [put["ok"] for put in puts] == [True] * 4, puts
    (other,) = seen["aws-other"]
    assert other["ok"] is False and other["code"] == "PanoramaEmulatorLocalMode", other
    assert "--aws local" in str(other["message"])
    (metrics,) = seen["metrics"]
    cloudwatch = metrics["aws"]["cloudwatch"]  # type: ignore[index]
    assert cloudwatch["protocols"] == {protocol: 4}
    frames = cloudwatch["series"][f"EmulatorProbe/Frames{{Client=boto3-{start['boto3']}}}"]
    assert (frames["samples"], frames["last"], frames["sum"], frames["unit"]) == (4, 20.0, 50.0, "Count")
    batch = cloudwatch["series"]["EmulatorProbe/Batch"]
    assert (batch["samples"], batch["sum"]) == (12, 28.0)
    assert cloudwatch["refused"] == 1


@pytest.mark.parametrize("name", ["old", "new"])
def test_host_mode_gives_the_app_the_callers_credentials_and_writes_them_nowhere(
    aws_project: Path, state_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    access_key, secret, token = (
        "AKIAEMULATOR" + secrets.token_hex(4).upper(),
        secrets.token_hex(20),
        secrets.token_hex(24),
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    seen = _probe(_appliance(aws_project, state_dir, name, "host"), frames=5)
    (start,) = seen["aws-start"]
    assert start["method"] == "container-role", start
    assert start["access_key"] == access_key and start["region"] == "eu-central-1"
    assert start["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert "AWS_SECRET_ACCESS_KEY" not in start["env"]  # type: ignore[operator]
    assert {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"} <= set(start["env"])  # type: ignore[arg-type]
    scanned = 0
    for path in state_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            scanned += 1
            assert secret.encode() not in data and token.encode() not in data, path
    assert scanned > 100  # the root filesystem, the storage, the logs: everything was read


def test_none_mode_boto3_raises_no_credentials_error(aws_project: Path, state_dir: Path) -> None:
    seen = _probe(_appliance(aws_project, state_dir, "old", "none"))
    (start,) = seen["aws-start"]
    assert start["method"] is None and start["region"] is None and start["env"] == []
    puts = seen["aws-put"]
    assert puts and all(put["error"] == "NoCredentialsError" for put in puts), puts
    assert puts[0]["message"] == "Unable to locate credentials"
    assert seen["metrics"][0]["aws"] is None


@pytest.fixture(scope="module")
def sample_server(aws_project: Path) -> Iterator[Any]:
    """The guide-shaped sample with ``--aws local`` behind the device API and console."""
    from emulator.api import ApplianceManager, BackgroundServer

    state = public_tmp_dir("pe-e2e-aws-sample-")
    options = ApplianceOptions(device="aws-sample", state_dir=state, mode="lockstep", aws="local")
    manager = ApplianceManager(options)
    manager.deploy_project(aws_project, graph=aws_project / "graphs" / "sample" / "graph.json")
    try:
        with BackgroundServer(manager, close_on_exit=True) as server:
            yield server
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_a_guide_shaped_sample_runs_600_frames_with_its_metrics_in_the_api(sample_server: Any) -> None:
    with httpx.Client(base_url=sample_server.url) as http:
        deadline = time.monotonic() + 600
        while True:
            metrics = http.get("/api/metrics").json()
            series = (metrics["runtime"].get("aws") or {}).get("cloudwatch", {}).get("series", {})
            done = series.get("EmulatorSample/FramesSeen", {}).get("samples", 0) >= 4
            if metrics["hdmi_outputs"] >= 600 and done:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.5)
        assert metrics["nodes"][NODE]["restarts"] == 0 and metrics["nodes"][NODE]["exits"] == 0
        assert set(series) == {"EmulatorSample/FramesSeen", "EmulatorSample/BusySeconds"}
        assert series["EmulatorSample/FramesSeen"]["last"] == 150.0
        assert series["EmulatorSample/BusySeconds"]["unit"] == "Seconds"
        text = http.get("/metrics").text
        assert (
            'panorama_emulator_runtime_aws_cloudwatch_series_last{metric="EmulatorSample/FramesSeen"} 150'
            in text
        )
        assert (
            'panorama_emulator_runtime_aws_cloudwatch_series_samples{metric="EmulatorSample/BusySeconds"}'
            in text
        )


@pytest.mark.browser
def test_the_console_shows_the_metrics_the_sample_put(sample_server: Any, tmp_path: Path) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(sample_server.url + "/")
            row = '#cloudwatch tbody tr[data-metric="EmulatorSample/FramesSeen"]'
            page.wait_for_selector(row, timeout=300_000)
            assert page.is_visible("#cloudwatch-box")
            cells = page.locator(f"{row} td").all_inner_texts()
            assert cells[0] == "EmulatorSample/FramesSeen" and cells[1] == "Count" and cells[3] == "150"
            assert page.locator('#cloudwatch tbody tr[data-metric="EmulatorSample/BusySeconds"]').count() == 1
        finally:
            browser.close()


def test_run_aws_local_from_the_command_line_sums_up_the_metrics(aws_project: Path, state_dir: Path) -> None:
    cli = str(Path(sys.executable).parent / "panorama-emulator")
    summary_file = state_dir / "summary.json"
    done = subprocess.run(
        [
            cli, "run", "--project", str(aws_project), "--graph", "graphs/sample/graph.json",
            "--frames", "300", "--aws", "local", "--state-dir", str(state_dir),
            "--summary-json", str(summary_file),
        ],
        cwd=aws_project, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["restarts"] == 0 and summary["frames"] == 300
    series = summary["aws"]["cloudwatch"]["series"]
    assert series["EmulatorSample/FramesSeen"]["samples"] == 2
    assert "CloudWatch kept here (--aws local): 2 calls, 0 refused, 2 metrics" in done.stderr
    assert "  EmulatorSample/FramesSeen: 2 samples, last 150 Count" in done.stderr
