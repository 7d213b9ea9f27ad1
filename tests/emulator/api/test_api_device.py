"""The device API over real HTTP against real appliances: sample apps built with the real engine, booted in
real sandboxes."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from _api_helpers import PROMETHEUS_LINE, ensure_deployed, read_mjpeg, snapshot, wait_for

from emulator.api import ApplianceManager, BackgroundServer, pack_project

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]


def console_lines(client: httpx.Client, node: str) -> list[str]:
    return list(client.get(f"/api/nodes/{node}/logs", params={"lines": 1000}).json()["lines"])


def boot_reports(client: httpx.Client) -> list[dict[str, Any]]:
    """The JSON report boot-counter prints at every boot, oldest first."""
    prefix = "boot-counter: {"
    return [
        json.loads(line.split(": ", 1)[1])
        for line in console_lines(client, "boot_counter_node")
        if line.startswith(prefix)
    ]


def test_status_of_a_running_app(people: httpx.Client, people_counter_project: Path) -> None:
    status = wait_for(lambda: (s := people.get("/api/status").json())["hdmi"]["outputs"] > 0 and s)
    assert status["state"] == "running"
    assert status["app"] == {**status["app"], "name": "people-counter", "source": "project"}
    [node] = status["nodes"]
    assert node["name"] == "code_node" and node["state"] == "running" and node["pid"] > 0
    assert status["cameras"] == [{"name": "camera_node", "paused": False, "source": "synthetic"}]
    assert "person" in status["hdmi"]["labels"]


def test_hdmi_png_and_live_mjpeg(people: httpx.Client) -> None:
    wait_for(lambda: people.get("/api/status").json()["hdmi"]["outputs"] > 0)
    png = people.get("/api/hdmi.png")
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (1080, 1920, 3) and image.any()
    frames = read_mjpeg(people, 4)
    assert all(frame.shape == (1080, 1920, 3) for frame in frames)
    # Live: the synthetic scene moves, so successive screens differ.
    assert any(not np.array_equal(frames[0], frame) for frame in frames[1:])


def test_metrics(people: httpx.Client) -> None:
    wait_for(lambda: people.get("/api/metrics").json()["runtime"].get("frames_out", 0) > 5)
    figures = people.get("/api/metrics").json()
    assert figures["nodes"]["code_node"]["up"] is True
    assert figures["runtime"]["nodes"]["code_node"]["frames_in"] > 0
    text = people.get("/metrics").text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(PROMETHEUS_LINE.match(line) for line in samples), samples
    assert any(line.startswith('panorama_emulator_runtime_nodes_fps{node="code_node"}') for line in samples)
    assert any(
        line.startswith('panorama_emulator_runtime_cameras_fps{camera="camera_node"}') for line in samples
    )


def test_logs_of_a_node(people: httpx.Client) -> None:
    tail = wait_for(
        lambda: (
            (t := people.get("/api/nodes/code_node/logs", params={"file": "app.log"}).json())["lines"] and t
        )
    )
    assert "app.log" in tail["files"] and "console_output" in tail["files"]
    assert any("people counter started" in line for line in tail["lines"])
    with people.stream(
        "GET", "/api/nodes/code_node/logs/stream", params={"file": "app.log", "lines": 3}
    ) as stream:
        first = next(line for line in stream.iter_lines() if line.startswith("data: "))
    assert first.startswith("data: ")


def test_pause_stops_frames_and_resume_restarts_them(people: httpx.Client) -> None:
    assert people.post("/api/cameras/camera_node/pause").json()["paused"] is True

    def outputs() -> int:
        return int(people.get("/api/status").json()["hdmi"]["outputs"])

    def settled() -> bool:
        before = outputs()
        time.sleep(0.5)
        return outputs() == before

    wait_for(settled)
    assert people.get("/api/status").json()["cameras"][0]["paused"] is True
    paused_at = outputs()
    assert people.post("/api/cameras/camera_node/resume").json()["paused"] is False
    wait_for(lambda: outputs() > paused_at + 5)


def test_storage_browser_on_a_real_app(people: httpx.Client) -> None:
    wait_for(
        lambda: any(e["name"] == "people_count.json" for e in people.get("/api/storage").json()["entries"])
    )
    saved = people.get("/api/storage/file", params={"path": "people_count.json"})
    assert saved.status_code == 200 and json.loads(saved.content)["boots"] >= 1
    for bad in ("..", "../../boots", "/etc/passwd", "../logs/code_node/console_output"):
        assert people.get("/api/storage/file", params={"path": bad}).status_code == 400
        assert people.get("/api/storage", params={"path": bad}).status_code == 400


def test_reboot_keeps_storage_and_clears_temp(boot_counter: httpx.Client) -> None:
    reports = wait_for(lambda: boot_reports(boot_counter))
    before = reports[-1]["boot"]
    assert reports[-1]["root_dir"] == "read-only file system"
    status = boot_counter.post("/api/device/reboot").json()
    assert status["state"] == "running"
    after = wait_for(lambda: [r for r in boot_reports(boot_counter) if r["boot"] == before + 1])[-1]
    assert after["previous_scratch_file_present"] is False  # /tmp was cleared
    stored = boot_counter.get("/api/storage/file", params={"path": "boot_count"})
    assert stored.text == f"{before + 1}\n"  # storage was kept


def test_power_cut_then_boot_again(boot_counter: httpx.Client) -> None:
    boots = boot_counter.get("/api/status").json()["boots"]
    count = int(
        wait_for(
            lambda: (
                (r := boot_counter.get("/api/storage/file", params={"path": "boot_count"})).status_code == 200
                and r.text
            )
        )
    )
    status = boot_counter.post("/api/device/power-cut").json()
    assert (status["state"], status["boots"]) == ("running", boots + 1)
    wait_for(
        lambda: boot_counter.get("/api/storage/file", params={"path": "boot_count"}).text == f"{count + 1}\n"
    )


def test_shutdown_and_boot(boot_counter: httpx.Client) -> None:
    status = boot_counter.post("/api/device/shutdown").json()
    assert status["state"] == "off" and status["nodes"][0]["state"] != "running"
    assert boot_counter.post("/api/device/reboot").status_code == 409
    assert boot_counter.post("/api/device/boot").json()["state"] == "running"


def test_an_app_without_hdmi_says_so(boot_counter: httpx.Client) -> None:
    response = boot_counter.get("/api/hdmi.png")
    assert response.status_code == 409 and "no HDMI output" in response.json()["detail"]
    assert boot_counter.get("/api/status").json()["hdmi"] is None


def test_remove_and_deploy_through_the_api(api: httpx.Client, boot_counter_project: Path) -> None:
    ensure_deployed(api, boot_counter_project)
    assert api.delete("/api/app").json()["state"] == "empty"
    status = api.post("/api/app", json={"project": str(boot_counter_project)}).json()
    assert status["state"] == "running" and status["app"]["name"] == "boot-counter"


def test_bundle_upload_deploys_a_built_app(
    api: httpx.Client, boot_counter_project: Path, real_manager: ApplianceManager
) -> None:
    packed = io.BytesIO()
    pack_project(boot_counter_project, packed)
    response = api.post(
        "/api/app/bundle", content=packed.getvalue(), headers={"content-type": "application/gzip"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"]["app"]["source"] == "bundle" and result["status"]["state"] == "running"
    assert len(result["assets"]) == 2  # the container asset and its descriptor
    unpacked = Path(result["status"]["app"]["project"])
    assert unpacked == real_manager.bundles_dir / "boot-counter"
    wait_for(lambda: boot_reports(api))


def hostile_bundle(project: Path, member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """The project's bundle with one more member."""
    packed = io.BytesIO()
    pack_project(project, packed)
    packed.seek(0)
    out = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="r:gz") as source, tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info in source.getmembers():
            tar.addfile(info, source.extractfile(info) if info.isfile() else None)
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out.getvalue()


def test_malformed_bundles_are_refused_with_nothing_written(
    people: httpx.Client, people_counter_project: Path, real_manager: ApplianceManager, tmp_path: Path
) -> None:
    escape = tarfile.TarInfo("graphs/../../../escaped.txt")
    escape.size = 4
    link = tarfile.TarInfo("packages/123456789012-PEOPLE_COUNTER_CODE-1.0/src/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tampered = tarfile.TarInfo(f"assets/{'0' * 64}.json")
    tampered.size = 2
    small = shutil.copytree(
        people_counter_project, tmp_path / "small", ignore=shutil.ignore_patterns("*.tar.gz")
    )
    bodies = [
        hostile_bundle(small, escape, b"evil"),
        hostile_bundle(small, link),
        hostile_bundle(small, tampered, b"{}"),
        b"\x1f\x8b not really gzip",
    ]
    before = snapshot(real_manager.store.state_dir)
    running = people.get("/api/status").json()
    for body in bodies:
        response = people.post("/api/app/bundle", content=body, headers={"content-type": "application/gzip"})
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text
    assert snapshot(real_manager.store.state_dir) == before
    after = people.get("/api/status").json()
    assert (after["app"], after["boots"], after["state"]) == (running["app"], running["boots"], "running")


def test_oversized_bundle_is_refused(real_manager: ApplianceManager, boot_counter_project: Path) -> None:
    packed = io.BytesIO()
    pack_project(boot_counter_project, packed)
    before = snapshot(real_manager.store.state_dir)
    with BackgroundServer(real_manager, max_upload_bytes=1024 * 1024) as server:
        response = httpx.post(
            f"{server.url}/api/app/bundle",
            content=packed.getvalue(),
            headers={"content-type": "application/gzip"},
            timeout=120,
        )
    assert response.status_code == 413
    assert snapshot(real_manager.store.state_dir) == before


def test_a_token_server_over_the_real_device(real_manager: ApplianceManager) -> None:
    with BackgroundServer(real_manager, token="s3cret") as server:
        assert httpx.get(f"{server.url}/api/status").status_code == 401
        assert (
            httpx.get(f"{server.url}/api/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        ok = httpx.get(f"{server.url}/api/status", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["device"] == "api"
