"""Per-app limits with real sandboxes: a fork loop stops at the process limit, an app that allocates past its
memory limit is killed and restarted with the cause shown, an app that fills its storage gets ENOSPC; the
appliance answers status throughout, and nothing (cgroup, network stack, mount, process) is left once it is
off.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _appliance_helpers import NodeSpec, build_test_apps, make_project, public_tmp_dir, result_as, wait_for

from emulator import Appliance
from emulator.device.limits import Limits, cgroup_support, limits_in_force
from emulator.device.supervisor import Backoff
from emulator.device.volume import volume_support

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

FAST = Backoff(initial=0.1, factor=2.0, maximum=0.4, stable_after=60.0)


@pytest.fixture(scope="module")
def test_apps_asset() -> Iterator[Path]:
    base = public_tmp_dir("pe-limit-apps-")
    try:
        yield build_test_apps(base / "build")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def limited(tmp_path: Path, test_apps_asset: Path) -> Callable[..., Appliance]:
    if not {"memory", "pids"} <= set(cgroup_support()):
        pytest.skip("no writable cgroup here (not root and no delegated subtree): limits are not in force")
    state = public_tmp_dir("pe-limit-state-")

    def make(node: NodeSpec, limits: Limits) -> Appliance:
        root = make_project(tmp_path / node.name, f"{node.name}-app", test_apps_asset, [node])
        return Appliance(root, device="limits", state_dir=state, quiet=True, backoff=FAST, limits=limits)

    yield make  # type: ignore[misc]
    shutil.rmtree(state, ignore_errors=True)


class StatusProbe:
    """Asks the appliance for its status in a loop and keeps the worst latency."""

    def __init__(self, device: Appliance) -> None:
        self.device = device
        self.answers = 0
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            status = self.device.status()
            self.worst = max(self.worst, time.perf_counter() - started)
            assert status.state in ("on", "off")
            self.answers += 1
            time.sleep(0.01)

    def __enter__(self) -> StatusProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _held() -> dict[str, list[str]]:
    """Cgroups this process made and sandboxes, network stacks and storage filesystems it started that
    still exist."""
    cgroups = sorted(
        str(path)
        for parent in set(cgroup_support().values())
        for path in parent.glob(f"panorama-{os.getpid()}-*")
    )
    children = Path(f"/proc/{os.getpid()}/task")
    stacks = []
    for task in children.iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if command.endswith(("slirp4netns", "bwrap", "fuse2fs")):
                stacks.append(f"{child} {command}")
    return {"cgroups": cgroups, "processes": stacks}


_HELD_BEFORE: dict[str, list[str]] = {"cgroups": [], "processes": []}


@pytest.fixture(autouse=True)
def _held_before() -> None:
    """What the process held before the test: devices that other tests in the same run still keep on."""
    _HELD_BEFORE.update(_held())


def leftovers() -> dict[str, list[str]]:
    """The cgroups, sandboxes and network stacks that this test made and that still exist."""
    held = _held()
    return {kind: [item for item in items if item not in _HELD_BEFORE[kind]] for kind, items in held.items()}


def test_a_fork_loop_stops_at_the_process_limit(limited: Callable[..., Appliance]) -> None:
    forker = NodeSpec("forker", "hog.py", env={"HOG": "fork", "HOG_FORKS": "5000"})
    device = limited(forker, Limits(pids=64))
    assert "processes 64" in limits_in_force(device.options.limits)
    with device, StatusProbe(device) as probe:
        pattern = re.compile(r"^hog: forks started (\d+) refused (\d+) (\w+)", re.MULTILINE)
        line = wait_for(lambda: pattern.search(device.logs("forker")), timeout=600, what="the fork report")
        assert isinstance(line, re.Match)
        started, refused, error = int(line.group(1)), int(line.group(2)), line.group(3)
        assert started < 64 and refused == 5000 - started and error == "BlockingIOError"
        assert device.status().nodes["forker"].restarts == 0
    print(f"\nfork loop: {started} started, {refused} refused; status answered {probe.answers} times, "
          f"worst latency {probe.worst * 1000:.1f} ms")  # fmt: skip
    assert probe.answers > 0
    assert leftovers() == {"cgroups": [], "processes": []}


def test_an_app_past_its_memory_limit_is_killed_and_restarted_with_the_cause(
    limited: Callable[..., Appliance],
) -> None:
    device = limited(
        NodeSpec("hog", "hog.py", env={"HOG": "memory", "HOG_MIB": "1024"}), Limits(memory_mib=128)
    )
    with device, StatusProbe(device) as probe:
        wait_for(lambda: device.status().nodes["hog"].restarts >= 1, timeout=600, what="a restart")
        node = device.status().nodes["hog"]
        assert node.last_cause == "memory limit 128 MiB"
        assert node.exit_codes[0] == 137
        logs = device.logs("hog")
        assert "[panorama-emulator] node hog was killed: memory limit 128 MiB" in logs
        assert "hog: allocated everything" not in logs
        wait_for(lambda: device.logs("hog").count("hog: memory start") >= 2, what="the next instance")
    print(f"\nmemory hog: killed at 128 MiB and restarted; status answered {probe.answers} times, "
          f"worst latency {probe.worst * 1000:.1f} ms")  # fmt: skip
    assert probe.answers > 0
    assert leftovers() == {"cgroups": [], "processes": []}


def test_over_http_the_api_answers_while_an_app_is_killed_and_restarted_for_memory(
    tmp_path: Path, test_apps_asset: Path
) -> None:
    import httpx

    from emulator import ApplianceOptions
    from emulator.api import ApplianceManager, BackgroundServer

    if "memory" not in cgroup_support():
        pytest.skip("no writable cgroup here (not root and no delegated subtree): limits are not in force")
    hog = NodeSpec("hog", "hog.py", env={"HOG": "memory", "HOG_MIB": "1024"})
    root = make_project(tmp_path / "api-hog", "api-hog-app", test_apps_asset, [hog])
    state = public_tmp_dir("pe-limit-api-")
    options = ApplianceOptions(
        device="api-limits", state_dir=state, backoff=FAST, limits=Limits(memory_mib=96)
    )
    manager = ApplianceManager(options)
    answers, worst, node = 0, 0.0, {}
    try:
        with BackgroundServer(manager) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            manager.deploy_project(root)
            while not (node.get("restarts", 0) >= 2 and node.get("last_cause")):
                started = time.perf_counter()
                response = client.get("/api/status")
                worst = max(worst, time.perf_counter() - started)
                assert response.status_code == 200
                answers += 1
                (node,) = response.json()["nodes"]
                time.sleep(0.02)
    finally:
        manager.close()
        shutil.rmtree(state, ignore_errors=True)
    print(f"\nGET /api/status answered {answers} times while the app was killed and restarted twice; "
          f"worst latency {worst * 1000:.1f} ms")  # fmt: skip
    assert node["last_cause"] == "memory limit 96 MiB" and 137 in node["exit_codes"]
    assert leftovers() == {"cgroups": [], "processes": []}


def test_a_power_cut_leaves_nothing_behind(limited: Callable[..., Appliance]) -> None:
    device = limited(NodeSpec("steady", "steady.py"), Limits())
    device.boot()
    wait_for(lambda: "steady: up" in device.logs("steady"))
    assert leftovers()["cgroups"] != []
    device.power_cut()
    wait_for(lambda: leftovers() == {"cgroups": [], "processes": []}, what="no leftovers")


def test_cgroups_of_an_emulator_killed_outright_go_at_the_next_boot(
    limited: Callable[..., Appliance],
) -> None:
    from emulator.device.limits import sweep_stale_cgroups

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [parent / f"panorama-{gone.pid}-1-app" for parent in set(cgroup_support().values())]
    for path in stale:
        path.mkdir()
    ours = [parent / f"panorama-{os.getpid()}-0-kept" for parent in set(cgroup_support().values())]
    for path in ours:
        path.mkdir()
    try:
        assert sorted(sweep_stale_cgroups()) == sorted(stale)
        assert all(path.is_dir() for path in ours)
    finally:
        for path in ours:
            path.rmdir()


def test_an_app_filling_its_storage_gets_enospc_and_keeps_what_it_wrote(
    tmp_path: Path, test_apps_asset: Path
) -> None:
    if (reason := volume_support()) is not None:
        pytest.skip(f"no storage filesystem here: {reason}")
    filler = NodeSpec("filler", "hog.py", env={"HOG": "disk", "HOG_MIB": "256"})
    root = make_project(tmp_path / "filler", "filler-app", test_apps_asset, [filler])
    state = public_tmp_dir("pe-volume-state-")
    try:
        device = Appliance(root, device="quota", state_dir=state, quiet=True, limits=Limits(storage_mib=32))
        with device, StatusProbe(device) as probe:
            assert "storage 32 MiB (a filesystem of that size)" in device.limits_line
            pattern = re.compile(r"^hog: disk wrote (\d+) then (\w+)", re.MULTILINE)
            said = wait_for(lambda: pattern.search(device.logs("filler")), timeout=600, what="its report")
            assert isinstance(said, re.Match)
            written, reason = int(said.group(1)), said.group(2)
            assert reason == "ENOSPC" and 16 << 20 < written < 32 << 20
            assert f" {device.storage_path} " in Path("/proc/self/mountinfo").read_text()
            assert (device.storage_path / "fill.bin").stat().st_size == written
        print(f"\nthe app wrote {written / (1 << 20):.1f} MiB into a 32 MiB quota, then ENOSPC; status "
              f"answered {probe.answers} times, worst latency {probe.worst * 1000:.1f} ms")  # fmt: skip
        assert probe.answers > 0
        assert (device.storage_path / "fill.bin").stat().st_size == written
        assert f" {device.storage_path} " not in Path("/proc/self/mountinfo").read_text()
        assert leftovers() == {"cgroups": [], "processes": []}
        assert not (device.storage_path.parent / "storage.img").exists()
    finally:
        shutil.rmtree(state, ignore_errors=True)


# --- the stand-ins of an ordinary user without a writable cgroup -------------------------------------------

UNPRIVILEGED_LIMITS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from emulator.device.limits import Limits, cgroup_support, limits_in_force
from emulator.device.volume import volume_support
from emulator.device.sandbox import DEFAULT_PATH, BwrapLauncher, SandboxSpec
FORK = '''
import os, time
started = refused = 0
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    started += 1
print(started, refused, flush=True)
'''
HOG = "chunks = []\nwhile len(chunks) < 64:\n    chunks.append(b'x' * (16 << 20))\nprint('allocated all')"
out = {"cgroups": sorted(cgroup_support()), "line": limits_in_force(Limits(memory_mib=128, pids=64))}
for name, code in (("fork", FORK), ("memory", HOG)):
    spec = SandboxSpec(rootfs=Path(sys.argv[2]), command=("python3", "-c", code), env={"PATH": DEFAULT_PATH},
                       network="none", user_namespace=True, limits=Limits(memory_mib=128, pids=64), name=name)
    process = BwrapLauncher().launch(spec)
    first = process.stdout.readline().decode().strip()
    if name == "fork":
        process.kill()
    code = process.wait()
    out[name] = {"said": first, "code": code, "cause": process.end_cause}
print("RESULT " + json.dumps(out))
"""


def test_an_ordinary_user_gets_the_stand_in_limits(test_user: pwd.struct_passwd) -> None:
    from _sandbox_helpers import make_host_rootfs

    base = public_tmp_dir("pe-limits-user-")
    try:
        rootfs = make_host_rootfs(base / "rootfs")
        script = base / "limits.py"
        script.write_text(UNPRIVILEGED_LIMITS)
        repo = Path(__file__).resolve().parents[3]
        out = result_as(test_user.pw_name, [sys.executable, str(script), str(repo), str(rootfs)], cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{out['line']}\nfork loop as {test_user.pw_name}: {out['fork']['said']}")
    assert out["cgroups"] == [] and "RLIMIT_NPROC" in out["line"] and "sampled" in out["line"]
    started, refused = map(int, out["fork"]["said"].split())
    assert started < 64 and started + refused == 5000
    assert out["memory"]["said"] != "allocated all"
    assert out["memory"]["code"] == 137 and out["memory"]["cause"] == "memory limit 128 MiB"
