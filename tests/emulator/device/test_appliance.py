"""The appliance with real sandboxes and real assets built by the build stage.

Boots, reboots and power cuts; what survives them (storage, logs) and what does not (temp paths); restarts
with backoff; inbound ports; network cut-off; cameras to HDMI; the same core behaviour as an ordinary user.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _appliance_helpers import NodeSpec, build_test_apps, make_project, public_tmp_dir, report, wait_for

from emulator import Appliance, ApplianceOptions
from emulator.device.supervisor import Backoff
from emulator.errors import DeviceError, ProjectError, SandboxError
from emulator.pytest_plugin import PanoramaApp, PanoramaTimeout
from emulator.run import run_application

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

DEVICE = "test-device"
FAST = Backoff(initial=0.1, factor=2.0, maximum=0.4, stable_after=60.0)


@pytest.fixture(scope="module")
def test_apps_asset() -> Iterator[Path]:
    base = public_tmp_dir("pe-test-apps-")
    try:
        yield build_test_apps(base / "build")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    """One device for the module: its root filesystems are unpacked once; each test uses its own app."""
    path = public_tmp_dir("pe-appliance-state-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


MakeProject = Callable[..., Path]


@pytest.fixture
def project(tmp_path: Path, test_apps_asset: Path) -> MakeProject:
    def make(app: str, *nodes: NodeSpec) -> Path:
        return make_project(tmp_path / app, app, test_apps_asset, list(nodes))

    return make


def appliance(project_dir: Path, state_dir: Path, **options: object) -> Appliance:
    options.setdefault("device", DEVICE)
    options.setdefault("quiet", True)
    options.setdefault("backoff", FAST)
    return Appliance(project_dir, state_dir=state_dir, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- boots, storage, temp paths -----------------------------------------------------------------------------


def test_a_device_that_is_on_cannot_be_booted_again_elsewhere(
    boot_counter_project: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    node = "boot_counter_node"
    with appliance(boot_counter_project, state) as first:
        wait_for(lambda: "boot-counter:" in first.logs(node), what="the first boot")
        sockets = sorted(path.name for path in first.store.run_dir.iterdir())
        second = appliance(boot_counter_project, state)
        with pytest.raises(DeviceError, match=r"device 'test-device' is already on in another emulator"):
            second.boot()
        assert first.status().state == "on" and first.status().nodes[node].state == "running"
        assert sorted(path.name for path in first.store.run_dir.iterdir()) == sockets
    with second:  # off there: it boots here
        wait_for(lambda: second.logs(node).count("boot-counter:") == 2, what="the second boot")


def test_storage_survives_boots_and_tmp_does_not(boot_counter_project: Path, state_dir: Path) -> None:
    node = "boot_counter_node"
    first = appliance(boot_counter_project, state_dir)
    boots_before = first.boots
    with first:
        reports = wait_for(lambda: report(first.logs(node), "boot-counter:"), what="the first report")
        assert first.status().state == "on"
    assert first.status().state == "off"
    # A second "run" against the same device: a new Appliance, the same state directory.
    second = appliance(boot_counter_project, state_dir)
    with second:
        wait_for(lambda: len(report(second.logs(node), "boot-counter:")) == len(reports) + 1, what="boot 2")
        second.reboot()
        wait_for(lambda: len(report(second.logs(node), "boot-counter:")) == len(reports) + 2, what="boot 3")
        status = second.status()
    runs = report(second.logs(node), "boot-counter:")[-3:]
    assert [run["boot"] for run in runs] == [runs[0]["boot"], runs[0]["boot"] + 1, runs[0]["boot"] + 2]
    for run in runs:
        assert run["previous_scratch_file_present"] is False
        assert run["code_dir"] == "read-only file system"
        assert run["root_dir"] == "read-only file system"
        assert run["hostname"] == DEVICE
    assert (second.storage_path / "boot_count").read_text() == f"{runs[-1]['boot']}\n"
    assert second.boots == boots_before + 3
    app_log = (second.logs_path(node) / "app.log").read_text()
    assert f"boot {runs[-1]['boot']}: stopping (signal 15)" in app_log
    assert (second.logs_path(node) / "console_output").is_file()
    assert second.logs(node).count("boot-counter: stopping") >= 3
    assert status.nodes[node].state == "running" and status.nodes[node].restarts == 0
    assert isinstance(status.nodes[node].pid, int)
    assert second.status().nodes[node].exit_codes == (0,)


def test_each_boot_starts_with_an_empty_run_dir(project: MakeProject, state_dir: Path) -> None:
    device = appliance(project("run-dir-app", NodeSpec("steady", "steady.py")), state_dir)
    with device:
        (device.store.run_dir / "left-over").write_text("x")
        device.power_cut()
        device.boot()
        assert not (device.store.run_dir / "left-over").exists()


def test_the_app_gets_the_descriptor_environment_only(project: MakeProject, state_dir: Path) -> None:
    env = {"APP_SETTING": "on", "PYTHONPATH": "/panorama/lib"}
    device = appliance(project("env-app", NodeSpec("inspect", "inspect_env.py", env=env)), state_dir)
    with device:
        (seen,) = wait_for(lambda: report(device.logs("inspect"), "inspect:"), what="the report")
    variables = seen["env"]
    assert isinstance(variables, dict)
    assert "FROM_DOCKERFILE" not in variables
    assert variables["APP_SETTING"] == "on"
    assert variables["PYTHONPATH"] == "/opt/panorama-emulator/sdk:/panorama/lib"
    assert variables["PANORAMA_EMULATOR_NODE"] == "inspect"
    assert variables["PANORAMA_EMULATOR_BRIDGE"] == "/opt/panorama-emulator/run/inspect.sock"
    assert variables["PYTHONUNBUFFERED"] == "1" and variables["HOME"] == "/root"
    allowed = {"PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONUNBUFFERED", "APP_SETTING", "PWD"}
    assert {name for name in variables if not name.startswith("PANORAMA_EMULATOR_")} <= allowed
    assert seen["argv"] == ["/panorama/inspect_env.py"]
    assert seen["cwd"] == "/" and seen["uid"] == 0
    assert seen["hostname"] == DEVICE and seen["etc_hostname"] == DEVICE
    assert seen["panorama"] == seen["usr"] == "Read-only file system"
    assert seen["tmp"] == seen["storage"] == seen["logs"] == "writable"


# --- power cuts ---------------------------------------------------------------------------------------------

RECORD = 32


def record(number: int) -> bytes:
    import hashlib

    return f"{number:010d} {hashlib.sha256(str(number).encode()).hexdigest()[:20]}\n".encode()


def committed(text: str) -> int:
    numbers = [int(n) for n in re.findall(r"^committed (\d+)$", text, re.MULTILINE)]
    return max(numbers, default=0)


def test_fsynced_records_survive_50_power_cuts(project: MakeProject, state_dir: Path) -> None:
    rng = random.Random(20240531)
    device = appliance(project("power-cut-app", NodeSpec("appender", "appender.py")), state_dir)
    records = device.storage_path / "records.log"
    cuts = 50
    reported_at_cut = []

    def starts() -> list[dict[str, object]]:
        return report(device.logs("appender"), "recovered")

    with device:
        for cut in range(cuts):
            # Generous waits: an fsync can stall for long on a disk busy with other writes.
            wait_for(lambda cut=cut: len(starts()) > cut, timeout=600, what="the app to start")
            if rng.random() < 0.8:
                # Let it append for a while: the cut lands between or in the middle of writes and fsyncs.
                target = committed(device.logs("appender")) + rng.randint(1, 40)
                reached = lambda target=target: committed(device.logs("appender")) >= target  # noqa: E731
                wait_for(reached, timeout=600, what="records")
            time.sleep(rng.uniform(0, 0.02))
            device.power_cut()
            # Only what the app reported after its fsync counts as committed.
            reported = committed(device.logs("appender"))
            reported_at_cut.append(reported)
            data = records.read_bytes()
            assert data[: reported * RECORD] == b"".join(record(n) for n in range(1, reported + 1)), cut
            device.boot()
        wait_for(lambda: len(starts()) == cuts + 1, timeout=600, what="the last start")
    found = starts()
    for cut, reported in enumerate(reported_at_cut):
        # The next start found every committed record intact (a torn record after them is cut off).
        assert int(found[cut + 1]["records"]) >= reported, cut  # type: ignore[call-overload]
    assert all(start["tmp"] == [] for start in found)
    assert reported_at_cut[-1] > cuts


# --- restarts -----------------------------------------------------------------------------------------------


def test_a_crashing_app_is_restarted_with_backoff_and_the_device_keeps_running(
    project: MakeProject, state_dir: Path
) -> None:
    device = appliance(
        project("crash-app", NodeSpec("crasher", "crasher.py"), NodeSpec("steady", "steady.py")), state_dir
    )
    with device:
        wait_for(lambda: device.status().nodes["crasher"].restarts >= 3, what="3 restarts")
        status = device.status()
        assert set(status.nodes["crasher"].exit_codes) == {1}
        assert status.nodes["steady"].state == "running" and status.nodes["steady"].restarts == 0
        assert status.state == "on"
        assert device.metrics().nodes["crasher"].restarts >= 3
        with pytest.raises(DeviceError) as caught:
            device.check()
        message = str(caught.value)
        assert (
            "crasher" in message
            and "status 1" in message
            and "ZeroDivisionError: division by zero" in message
        )
        assert "\n" not in message
    log = device.logs("crasher")
    assert log.count("Traceback (most recent call last):") >= 3
    assert log.count("ZeroDivisionError: division by zero") >= 3


def test_shutdown_is_graceful_then_forceful(project: MakeProject, state_dir: Path) -> None:
    device = appliance(
        project("stop-app", NodeSpec("polite", "steady.py"), NodeSpec("stubborn", "steady.py",
                                                                       env={"IGNORE_SIGTERM": "1"})),
        state_dir,
        grace_period=1.0,
    )  # fmt: skip
    with device:
        wait_for(lambda: "steady: up" in device.logs("polite") and "steady: up" in device.logs("stubborn"))
    nodes = device.status().nodes
    assert nodes["polite"].exit_codes == (0,)
    assert nodes["stubborn"].exit_codes == (128 + 9,)
    assert "graceful stop" in device.logs("polite")
    assert (device.logs_path("polite") / "stopped").read_text() == "graceful\n"


def test_a_power_cut_gives_no_grace_and_the_next_boot_starts_again(
    project: MakeProject, state_dir: Path
) -> None:
    device = appliance(project("cut-app", NodeSpec("steady", "steady.py")), state_dir, grace_period=30)
    with device:
        wait_for(lambda: "steady: up" in device.logs("steady"))
        boots = device.boots
        device.power_cut()
        assert device.status().state == "off"
        assert device.status().nodes["steady"].exit_codes == (128 + 9,)
        assert "graceful stop" not in device.logs("steady")
        device.boot()
        assert device.boots == boots + 1
        wait_for(lambda: device.logs("steady").count("steady: up") == 2)
        assert device.status().nodes["steady"].state == "running"


def test_power_cycle_kills_and_boots_and_a_follower_sees_both_boots(
    project: MakeProject, state_dir: Path
) -> None:
    device = appliance(project("cycle-app", NodeSpec("steady", "steady.py")), state_dir, grace_period=30)
    with device:
        wait_for(lambda: "steady: up" in device.logs("steady"))
        follower = device.follow_logs("steady", from_start=True)
        try:
            seen: list[str] = []
            wait_for(lambda: seen.extend(follower.read_new()) or "steady: up" in seen)
            boots = device.boots
            device.power_cycle()
            assert device.running and device.boots == boots + 1
            assert device.status().nodes["steady"].exit_codes == ()  # a new boot: the cut is of the last
            wait_for(lambda: seen.extend(follower.read_new()) or seen.count("steady: up") == 2)
        finally:
            follower.close()
        assert "graceful stop" not in device.logs("steady")
        with pytest.raises(DeviceError, match="plain name"):
            device.follow_logs("steady", "../secret")


def test_on_demand_nodes_are_not_started_at_boot(project: MakeProject, state_dir: Path) -> None:
    device = appliance(
        project("launch-app", NodeSpec("steady", "steady.py"),
                NodeSpec("later", "steady.py", launch="onDemand")),
        state_dir,
    )  # fmt: skip
    with device:
        wait_for(lambda: "steady: up" in device.logs("steady"))
        assert device.status().nodes["later"].state == "not started"


# --- network ------------------------------------------------------------------------------------------------


def test_a_routed_port_answers_on_the_host_port(project: MakeProject, state_dir: Path) -> None:
    container, host = free_port(), free_port()
    node = NodeSpec("web", "server.py", env={"PORT": str(container)}, inbound=(container,),
                    routes=((container, host),))  # fmt: skip
    device = appliance(project("web-app", node), state_dir)
    with device:
        wait_for(lambda: "server: listening" in device.logs("web"))

        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def get() -> str | None:
            try:
                with direct.open(f"http://127.0.0.1:{host}/", timeout=10) as response:
                    return str(response.read().decode())
            except OSError:
                return None

        assert wait_for(get, what="an answer on the host port") == f"hello from {DEVICE}\n"
        routes = device.status().to_json()["routes"]
        assert routes == [
            {"node": "web", "container_port": container, "host_port": host, "state": "forwarding"}
        ]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", host), timeout=5):
        pass


def test_two_apps_serving_on_port_80_answer_on_their_host_ports(
    project: MakeProject, state_dir: Path
) -> None:
    hosts = {"web1": free_port(), "web2": free_port()}
    nodes = [
        NodeSpec(name, "server.py", env={"PORT": "80"}, inbound=(80,), routes=((80, port),))
        for name, port in hosts.items()
    ]
    device = appliance(project("two-web-app", *nodes), state_dir)
    assert device.options.network == "app"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(port: int) -> str | None:
        try:
            with direct.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            return None

    with device:
        for name, port in hosts.items():
            wait_for(lambda name=name: "server: listening" in device.logs(name))  # type: ignore[misc]
            assert wait_for(lambda port=port: get(port), what="an answer") == f"hello from {DEVICE}\n"  # type: ignore[misc]
        states = {route.node: route.state for route in device.status().routes}
        assert states == {"web1": "forwarding", "web2": "forwarding"}


def test_with_network_none_only_the_routed_port_reaches_the_app(
    project: MakeProject, state_dir: Path
) -> None:
    container, host = free_port(), free_port()
    node = NodeSpec("web", "server.py", env={"PORT": str(container)}, inbound=(container,),
                    routes=((container, host),))  # fmt: skip
    device = appliance(project("isolated-web-app", node), state_dir, network="none")
    with device:
        wait_for(lambda: "server: listening" in device.logs("web"))
        (route,) = device.status().routes
        if os.geteuid() != 0:
            assert route.state == "unsupported"
            return
        assert route.state == "forwarding"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(f"http://127.0.0.1:{host}/", timeout=30) as response:
            assert response.read() == f"hello from {DEVICE}\n".encode()
        # The app's own port is in its own network namespace, not on the host.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", container), timeout=5):
            pass


@pytest.fixture
def host_listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield int(server.getsockname()[1])
    server.close()


@pytest.mark.parametrize(
    ("network", "outcome"),
    [("host", "probe: connected"), ("none", "probe: failed"), ("app", "probe: failed")],
)
def test_network_none_cuts_the_app_off(
    project: MakeProject, state_dir: Path, host_listener: int, network: str, outcome: str
) -> None:
    node = NodeSpec("probe", "probe.py", env={"TARGET_PORT": str(host_listener)})
    device = appliance(project(f"probe-{network}", node), state_dir, network=network)
    with device:
        line = wait_for(lambda: re.search(r"^probe: .*$", device.logs("probe"), re.MULTILINE))
    assert isinstance(line, re.Match) and line.group(0).startswith(outcome)


# --- cameras and HDMI ---------------------------------------------------------------------------------------


def test_camera_frames_go_through_the_app_to_hdmi(
    project: MakeProject, state_dir: Path, tmp_path: Path
) -> None:
    device = appliance(
        project("passthrough-app", NodeSpec("passthrough", "passthrough.py", media=True)),
        state_dir,
        cameras={"camera_node": "synthetic:320x240@30"},
        hdmi_out=tmp_path / "hdmi",
    )
    with device:
        assert device.wait_for_frames(10, timeout=300)
        assert device.hdmi.outputs >= 10
        assert "passthrough" in device.hdmi.labels()
        figures = device.metrics().nodes["passthrough"]
        assert figures.frames_in >= 10 and figures.restarts == 0
        device.reboot()
        assert device.wait_for_frames(5, timeout=300)
    assert device.hdmi.last_frame is not None


def test_a_crash_on_the_first_frame_is_reported_in_one_line(project: MakeProject, state_dir: Path) -> None:
    device = appliance(
        project("broken-app", NodeSpec("broken", "first_frame_crash.py", media=True)), state_dir
    )
    with device, pytest.raises(DeviceError) as caught:
        device.wait_for_frames(1, timeout=300)
    message = str(caught.value)
    assert message.startswith("node broken: the app exited with status 1 before its first frame")
    assert "RuntimeError: cannot handle a frame of shape (1080, 1920, 3)" in message
    assert "\n" not in message


def test_an_app_that_exits_0_before_its_first_frame_ends_the_wait_when_not_restarted(
    project: MakeProject, state_dir: Path
) -> None:
    root = project("quitting-app", NodeSpec("quitter", "quitter.py", media=True))
    with appliance(root, state_dir, restart_on_exit=False) as device:
        assert not device.wait_for_frames(1, timeout=300)
        assert device.app_ended is not None
        assert device.app_ended.startswith(
            "node quitter: the app exited with status 0 before frame 1 and is not restarted: "
            "quitter: nothing to do (output in "
        )
        with pytest.raises(PanoramaTimeout, match="received 0 of 2 frames: node quitter: the app exited"):
            PanoramaApp(device).run_frames(2)
        assert device.status().nodes["quitter"].exit_codes == (0,)
    options = ApplianceOptions(device=DEVICE, state_dir=state_dir, quiet=True, restart_on_exit=False)
    with pytest.raises(DeviceError, match="before frame 1 and is not restarted: quitter: nothing to do"):
        run_application(root, options, frames=1)
    # Restarted (the device's default): it is waited for, as it may yet show frames.
    with appliance(root, state_dir) as device:
        assert not device.wait_for_frames(1, timeout=2)
        assert device.app_ended is None


# --- bad requests -------------------------------------------------------------------------------------------


def test_bad_requests_are_one_line_errors(project: MakeProject, state_dir: Path) -> None:
    root = project("bad-requests", NodeSpec("steady", "steady.py"))
    with pytest.raises(DeviceError, match="mode must be"):
        appliance(root, state_dir, mode="fast")
    with pytest.raises(DeviceError, match="network must be"):
        appliance(root, state_dir, network="bridge")
    with pytest.raises(DeviceError, match="no camera node 'cam'"):
        appliance(root, state_dir, cameras={"cam": "synthetic"})
    with pytest.raises(ProjectError):
        appliance(root, state_dir, graph="graphs/nope/graph.json")
    device = appliance(root, state_dir)
    with pytest.raises(DeviceError, match="is off"):
        device.wait_for_frames(1)
    with device:
        with pytest.raises(DeviceError, match="already on"):
            device.boot()
        with pytest.raises(DeviceError, match="no HDMI output"):
            device.wait_for_frames(1)
        with pytest.raises(DeviceError, match="not a code node"):
            device.logs("camera_node")


def test_an_entry_program_missing_from_the_rootfs_is_named(project: MakeProject, state_dir: Path) -> None:
    device = appliance(project("no-python", NodeSpec("steady", "steady.py", program="python9")), state_dir)
    with pytest.raises(SandboxError) as caught:
        device.boot()
    assert "'python9'" in str(caught.value) and "node steady" in str(caught.value)
    assert not device.running


# --- as an ordinary user ------------------------------------------------------------------------------------

UNPRIVILEGED_SCRIPT = """
import json, re, sys, time
from emulator import Appliance, ApplianceOptions

project, apps, state = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}

def wait(condition):
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

def reports(text):
    return [json.loads(m) for m in re.findall(r"^boot-counter: (\\{.*\\})$", text, re.MULTILINE)]

counter = Appliance(project, device="unprivileged", state_dir=state, quiet=True)
with counter:
    wait(lambda: len(reports(counter.logs("boot_counter_node"))) == 1)
    counter.reboot()
    wait(lambda: len(reports(counter.logs("boot_counter_node"))) == 2)
out["reports"] = reports(counter.logs("boot_counter_node"))
out["app_log"] = (counter.logs_path("boot_counter_node") / "app.log").is_file()
out["boots"] = counter.boots

appender = Appliance(apps, device="unprivileged", state_dir=state, quiet=True)
with appender:
    for cut in range(5):
        wait(lambda: len(re.findall(r"^committed", appender.logs("appender"), re.MULTILINE)) > 10 * (cut + 1))
        appender.power_cut()
        appender.boot()
    wait(lambda: appender.logs("appender").count("recovered") == 6)
out["recovered"] = [json.loads(m) for m in re.findall(r"^recovered (\\{.*\\})$", appender.logs("appender"),
                                                       re.MULTILINE)]
out["records"] = (appender.storage_path / "records.log").stat().st_size
out["status"] = appender.status().to_json()
print("RESULT " + json.dumps(out))
"""


def _reachable_by(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(path)], check=False).returncode == 0


def test_the_same_core_behaviour_as_an_ordinary_user(
    boot_counter_project: Path, project: MakeProject, tmp_path: Path, test_user: pwd.struct_passwd
) -> None:
    user = test_user
    python = Path(sys.executable)
    for needed in (
        python,
        Path(__file__).resolve().parents[3] / "runtime" / "sdk" / "panoramasdk" / "__init__.py",
    ):
        if not _reachable_by(user.pw_name, needed):
            pytest.skip(f"the test user cannot read {needed}: make the venv and the repository readable")
    base = public_tmp_dir("pe-unprivileged-")
    try:
        apps = make_project(
            base / "apps", "appender-app", _asset_of(project), [NodeSpec("appender", "appender.py")]
        )
        state = base / "state"
        state.mkdir()
        os.chown(state, user.pw_uid, user.pw_gid)
        script = base / "script.py"
        script.write_text(textwrap.dedent(UNPRIVILEGED_SCRIPT))
        command = f"cd /tmp && '{python}' '{script}' '{boot_counter_project}' '{apps}' '{state}'"
        result = subprocess.run(
            ["runuser", "-u", user.pw_name, "--", "sh", "-c", command],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        out = json.loads(line[len("RESULT ") :])
        first, second = out["reports"]
        assert (first["boot"], second["boot"]) == (1, 2)
        assert first["previous_scratch_file_present"] is second["previous_scratch_file_present"] is False
        assert first["code_dir"] == second["root_dir"] == "read-only file system"
        assert first["hostname"] == "unprivileged"
        assert out["app_log"] and out["boots"] == 2
        assert len(out["recovered"]) == 6 and all(found["tmp"] == [] for found in out["recovered"])
        assert out["records"] >= 50 * RECORD
        assert (state / "devices" / "unprivileged" / "apps").stat().st_uid == user.pw_uid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _asset_of(project: MakeProject) -> Path:
    """The test-apps asset behind the ``project`` factory."""
    made = project("asset-probe", NodeSpec("steady", "steady.py"))
    (asset,) = (made / "assets").glob("*.tar.gz")
    return asset.resolve()
