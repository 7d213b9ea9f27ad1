"""The device API over real HTTP against the in-package fake device: every route, errors, security, CLI."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from _api_helpers import PROMETHEUS_LINE, read_mjpeg, snapshot, wait_for
from click.testing import CliRunner

from emulator import ApplianceOptions
from emulator.api import ApplianceManager, BackgroundServer, check_bind, is_loopback, pack_project
from emulator.api.fake import FakeAppliance
from emulator.cli import main
from emulator.errors import DeviceError


def test_openapi_describes_typed_responses(fake_client: httpx.Client) -> None:
    schema = fake_client.get("/openapi.json").json()
    assert {"DeviceStatus", "NodeStatus", "Metrics", "StorageListing", "LogTail", "ErrorResponse"} <= set(
        schema["components"]["schemas"]
    )
    paths = schema["paths"]
    for path in (
        "/api/status",
        "/api/app",
        "/api/app/bundle",
        "/api/device/reboot",
        "/api/device/power-cut",
        "/api/device/shutdown",
        "/api/nodes/{node}/logs",
        "/api/nodes/{node}/logs/stream",
        "/api/hdmi.png",
        "/api/hdmi.mjpeg",
        "/api/metrics",
        "/metrics",
        "/api/storage",
        "/api/storage/file",
        "/api/cameras/{name}/pause",
        "/api/cameras/{name}/resume",
    ):
        assert path in paths, path
    status = paths["/api/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert status["$ref"].endswith("/DeviceStatus")


def test_status_describes_device_nodes_cameras_and_hdmi(
    fake_client: httpx.Client, fake_project: Path
) -> None:
    status = fake_client.get("/api/status").json()
    assert status["state"] == "running"
    assert status["app"]["name"] == "people-counter"
    assert status["app"]["project"] == str(fake_project.resolve())
    assert [node["name"] for node in status["nodes"]] == ["code_node"]
    assert status["cameras"] == [{"name": "camera_node", "paused": False, "source": "synthetic"}]
    assert status["boots"] == 1
    assert status["storage_path"].endswith("apps/people-counter/storage")


def test_power_lifecycle(fake_client: httpx.Client) -> None:
    assert fake_client.post("/api/device/reboot").json()["boots"] == 2
    after_cut = fake_client.post("/api/device/power-cut").json()
    assert (after_cut["boots"], after_cut["state"]) == (3, "running")
    off = fake_client.post("/api/device/shutdown").json()
    assert off["state"] == "off"
    refused = fake_client.post("/api/device/reboot")
    assert refused.status_code == 409 and "shut down" in refused.json()["detail"]
    assert fake_client.post("/api/device/boot").json()["state"] == "running"
    assert fake_client.post("/api/device/boot").status_code == 409


def test_remove_then_everything_says_nothing_is_deployed(fake_client: httpx.Client) -> None:
    assert fake_client.delete("/api/app").json()["state"] == "empty"
    for method, path in [
        ("POST", "/api/device/reboot"),
        ("GET", "/api/hdmi.png"),
        ("GET", "/api/storage"),
        ("GET", "/api/nodes/code_node/logs"),
        ("POST", "/api/cameras/camera_node/pause"),
        ("DELETE", "/api/app"),
    ]:
        response = fake_client.request(method, path)
        assert response.status_code == 409, (path, response.text)
        assert "no application is deployed" in response.json()["detail"]
    assert fake_client.get("/api/metrics").json()["state"] == "empty"


def test_deploy_errors_are_4xx_and_keep_the_running_app(fake_client: httpx.Client, tmp_path: Path) -> None:
    for body, status in [
        ({"project": str(tmp_path / "missing")}, 400),
        ({"project": str(tmp_path)}, 400),
        ({"project": ""}, 422),
        ({}, 422),
    ]:
        response = fake_client.post("/api/app", json=body)
        assert response.status_code == status, response.text
        assert "Traceback" not in response.text
    assert "not a panorama-cli project" in fake_client.post("/api/app", json={"project": str(tmp_path)}).text
    assert fake_client.get("/api/status").json()["state"] == "running"


def test_deploy_replaces_the_app(fake_client: httpx.Client, fake_project: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(fake_project, other)
    status = fake_client.post("/api/app", json={"project": str(other)}).json()
    assert status["app"]["project"] == str(other.resolve())
    assert status["state"] == "running"


def test_logs_tail_files_and_errors(fake_client: httpx.Client, fake_manager: ApplianceManager) -> None:
    fake_client.post("/api/device/reboot")
    tail = fake_client.get("/api/nodes/code_node/logs", params={"lines": 1}).json()
    assert tail == {
        "node": "code_node",
        "file": "console_output",
        "files": ["console_output"],
        "lines": ["code_node: boot 2"],
    }
    (fake_manager.device.logs_path("code_node") / "app.log").write_text("one\ntwo\nthree\n")
    tail = fake_client.get("/api/nodes/code_node/logs", params={"file": "app.log", "lines": 2}).json()
    assert (tail["files"], tail["lines"]) == (["console_output", "app.log"], ["two", "three"])
    assert fake_client.get("/api/nodes/nope/logs").status_code == 404
    assert fake_client.get("/api/nodes/code_node/logs", params={"file": "missing.log"}).status_code == 404
    for bad in ("../console_output", ".hidden", "a/b"):
        assert fake_client.get("/api/nodes/code_node/logs", params={"file": bad}).status_code == 400
    assert fake_client.get("/api/nodes/code_node/logs", params={"lines": -1}).status_code == 422


def test_log_stream_sends_the_tail_then_new_lines(
    fake_client: httpx.Client, fake_manager: ApplianceManager
) -> None:
    log = fake_manager.device.logs_path("code_node") / "console_output"
    received: list[str] = []
    with fake_client.stream("GET", "/api/nodes/code_node/logs/stream", params={"lines": 5}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        received.append(next(lines))
        with log.open("a") as handle:
            handle.write("written while followed\n")
        for line in lines:
            if line.startswith("data: "):
                received.append(line)
            if "followed" in line:
                break
    assert received == ["data: code_node: boot 1", "data: written while followed"]


def test_hdmi_png_and_mjpeg_decode(fake_client: httpx.Client) -> None:
    wait_for(lambda: fake_client.get("/api/status").json()["hdmi"]["outputs"] > 2)
    png = fake_client.get("/api/hdmi.png")
    assert png.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (180, 320, 3)
    frames = read_mjpeg(fake_client, 3)
    assert all(frame.shape == (180, 320, 3) for frame in frames)


def test_metrics_json_and_prometheus(fake_client: httpx.Client) -> None:
    figures = fake_client.get("/api/metrics").json()
    assert figures["boots"] == 1 and figures["nodes"]["code_node"]["up"] is True
    assert "cameras" in figures["runtime"]
    text = fake_client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = [line for line in text.text.splitlines() if not line.startswith("#")]
    assert samples and all(PROMETHEUS_LINE.match(line) for line in samples), samples
    assert "panorama_emulator_boots 1" in samples
    assert 'panorama_emulator_nodes_up{node="code_node"} 1' in samples
    assert 'panorama_emulator_runtime_cameras_paused{camera="camera_node"} 0' in samples


def test_storage_browser(fake_client: httpx.Client, fake_manager: ApplianceManager, tmp_path: Path) -> None:
    storage = fake_manager.device.storage_path
    (storage / "data").mkdir()
    (storage / "data" / "count.txt").write_text("42")
    (tmp_path / "outside.txt").write_text("secret")
    (storage / "out").symlink_to(tmp_path / "outside.txt")
    listing = fake_client.get("/api/storage").json()
    assert [(e["name"], e["kind"]) for e in listing["entries"]] == [("data", "dir"), ("out", "link")]
    assert fake_client.get("/api/storage", params={"path": "data"}).json()["entries"][0]["size"] == 2
    download = fake_client.get("/api/storage/file", params={"path": "data/count.txt"})
    assert (download.content, download.headers["content-disposition"]) == (
        b"42",
        'attachment; filename="count.txt"',
    )
    for bad in ("../state", "/etc/passwd", "data/../../x", "out"):
        for route in ("/api/storage", "/api/storage/file"):
            response = fake_client.get(route, params={"path": bad})
            assert response.status_code == 400, (route, bad, response.text)
            assert "secret" not in response.text
    assert fake_client.get("/api/storage/file", params={"path": "nope"}).status_code == 404
    assert fake_client.get("/api/storage/file", params={"path": "data"}).status_code == 400


def test_pause_and_resume_a_camera(fake_client: httpx.Client, fake_manager: ApplianceManager) -> None:
    assert fake_client.post("/api/cameras/camera_node/pause").json() == {
        "name": "camera_node",
        "paused": True,
        "source": "synthetic",
    }
    sink = fake_manager.hdmi()

    def no_new_frame() -> bool:
        seen = sink.outputs
        return sink.wait_for_output(seen, timeout=0.3) == seen

    wait_for(no_new_frame)
    assert fake_client.get("/api/status").json()["cameras"][0]["paused"] is True
    assert fake_client.post("/api/cameras/camera_node/resume").json()["paused"] is False
    before = sink.outputs
    wait_for(lambda: sink.outputs > before + 2)
    assert fake_client.post("/api/cameras/nope/pause").status_code == 404


def test_bundle_upload_deploys(
    fake_client: httpx.Client, fake_project: Path, fake_manager: ApplianceManager
) -> None:
    packed = io.BytesIO()
    pack_project(fake_project, packed)
    response = fake_client.post(
        "/api/app/bundle", content=packed.getvalue(), headers={"content-type": "application/gzip"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["app"] == "people-counter"
    assert result["status"]["app"]["source"] == "bundle"
    unpacked = Path(result["status"]["app"]["project"])
    assert unpacked.parent == fake_manager.bundles_dir and (unpacked / "graphs").is_dir()
    fake_client.delete("/api/app")
    assert not unpacked.exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not gzip at all", "application/gzip", 400),
        (b"", "application/gzip", 400),
        (b"x", "text/plain", 400),
    ],
)
def test_bad_bundles_write_nothing(
    fake_client: httpx.Client, fake_manager: ApplianceManager, body: bytes, content_type: str, status: int
) -> None:
    before = snapshot(fake_manager.store.state_dir)
    response = fake_client.post("/api/app/bundle", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert snapshot(fake_manager.store.state_dir) == before
    assert fake_client.get("/api/status").json()["app"]["source"] == "project"


def test_oversized_bundle_is_refused_with_413(fake_manager: ApplianceManager, fake_project: Path) -> None:
    packed = io.BytesIO()
    pack_project(fake_project, packed)
    before = snapshot(fake_manager.store.state_dir)
    with BackgroundServer(fake_manager, max_upload_bytes=1000) as server:
        declared = httpx.post(
            f"{server.url}/api/app/bundle",
            content=packed.getvalue(),
            headers={"content-type": "application/gzip"},
        )

        def chunks() -> object:
            yield packed.getvalue()

        streamed = httpx.post(
            f"{server.url}/api/app/bundle",
            content=chunks(),  # type: ignore[arg-type]
            headers={"content-type": "application/gzip"},
        )
    assert declared.status_code == streamed.status_code == 413
    assert "larger than the 1000 bytes" in declared.json()["detail"]
    assert snapshot(fake_manager.store.state_dir) == before


# --- security ----------------------------------------------------------------------------------------------


def test_token_is_required_on_every_request_but_the_console_files(fake_manager: ApplianceManager) -> None:
    with BackgroundServer(fake_manager, token="s3cret") as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            for path in ("/api/status", "/metrics", "/openapi.json", "/api/hdmi.png"):
                response = httpx.get(server.url + path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
        assert httpx.post(server.url + "/api/device/reboot").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(server.url + "/api/status", headers=good).json()["state"] == "running"
        assert httpx.get(server.url + "/?token=s3cret").status_code == 200
        assert "app.js" in httpx.get(server.url + "/").text
        assert httpx.get(server.url + "/console/app.js").status_code == 200


def test_cross_origin_changes_and_foreign_hosts_are_refused(fake_client: httpx.Client) -> None:
    refused = fake_client.post("/api/device/reboot", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert fake_client.post("/api/device/reboot", headers={"Origin": "null"}).status_code == 403
    same = fake_client.post("/api/device/reboot", headers={"Origin": str(fake_client.base_url).rstrip("/")})
    assert same.status_code == 200
    assert fake_client.get("/api/status", headers={"Host": "evil.example"}).status_code == 403
    assert fake_client.get("/api/status", headers={"Host": "localhost:1"}).status_code == 200


def test_listening_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(DeviceError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(DeviceError, match="empty"):
        check_bind("0.0.0.0", " ")
    check_bind("0.0.0.0", "s3cret")
    check_bind("127.0.0.1", None)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", ""))


def test_serve_refuses_a_public_address_without_token() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--host", "0.0.0.0", "--port", "0"], env={"PANORAMA_EMULATOR_TOKEN": ""}
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without a token" in lines[0]


def test_unexpected_errors_are_500_with_one_line_and_no_traceback(fake_manager: ApplianceManager) -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("boom")

    fake_manager.device.status = broken  # type: ignore[method-assign]
    with BackgroundServer(fake_manager) as server:
        response = httpx.get(server.url + "/api/status")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (RuntimeError); the server log has the details"}


# --- the CLI commands that talk to `serve` -----------------------------------------------------------------


def cli(server: BackgroundServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"PANORAMA_EMULATOR_URL": server.url})
    return result.exit_code, result.output


def test_client_commands(fake_server: BackgroundServer) -> None:
    code, out = cli(fake_server, "status")
    assert code == 0 and "device unit: running, boots 1" in out and "node code_node: running" in out
    assert json.loads(cli(fake_server, "status", "--json")[1])["state"] == "running"
    assert cli(fake_server, "reboot") == (0, "rebooted: boot 2 of device unit\n")
    assert cli(fake_server, "power-cut") == (0, "power cut, booted again: boot 3 of device unit\n")
    code, out = cli(fake_server, "logs", "code_node", "-n", "2")
    assert (code, out) == (0, "code_node: boot 2\ncode_node: boot 3\n")
    code, out = cli(fake_server, "logs")
    assert out.splitlines()[-1] == "code_node | code_node: boot 3"
    code, out = cli(fake_server, "logs", "nope")
    assert code == 1 and "no such node" in out


def test_client_follows_logs(fake_server: BackgroundServer, fake_manager: ApplianceManager) -> None:
    from emulator.api import DeviceClient

    lines = DeviceClient(fake_server.url).follow_logs("code_node", lines=1)
    assert next(lines) == "code_node: boot 1"
    threading.Timer(0.2, fake_manager.reboot).start()
    assert next(lines) == "code_node: boot 2"


def test_client_reports_an_absent_server_and_a_wrong_token(fake_manager: ApplianceManager) -> None:
    result = CliRunner().invoke(main, ["status", "--port", "1"], env={"PANORAMA_EMULATOR_URL": ""})
    assert result.exit_code == 1 and "no device API answers at http://127.0.0.1:1" in result.output
    with BackgroundServer(fake_manager, token="right") as server:
        result = CliRunner().invoke(
            main, ["reboot", "--token", "wrong"], env={"PANORAMA_EMULATOR_URL": server.url}
        )
        assert result.exit_code == 1 and "refused the token" in result.output
        result = CliRunner().invoke(
            main, ["reboot"], env={"PANORAMA_EMULATOR_URL": server.url, "PANORAMA_EMULATOR_TOKEN": "right"}
        )
        assert result.exit_code == 0, result.output


def test_manager_with_the_fake_needs_no_server(tmp_path: Path, fake_project: Path) -> None:
    manager = ApplianceManager(ApplianceOptions(device="direct", state_dir=tmp_path), factory=FakeAppliance)
    with pytest.raises(DeviceError, match="no application is deployed"):
        manager.reboot()
    manager.deploy_project(fake_project)
    manager.power_cut()
    assert manager.status()["boots"] == 2
    manager.close()
    assert manager.status()["state"] == "empty"


def test_a_port_in_use_is_a_one_line_error() -> None:
    from emulator.api import bind_socket

    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(DeviceError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()


def test_a_failed_boot_leaves_the_device_off(
    fake_client: httpx.Client, fake_manager: ApplianceManager
) -> None:
    from emulator.errors import SandboxError

    def broken() -> None:
        raise SandboxError("user namespaces are disabled on this host")

    fake_manager.device.boot = broken  # type: ignore[method-assign]
    response = fake_client.post("/api/device/power-cut")
    assert response.status_code == 503
    assert response.json() == {"detail": "user namespaces are disabled on this host"}
    assert fake_client.get("/api/status").json()["state"] == "off"
