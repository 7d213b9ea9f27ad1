"""The command line `shell` makes from a node's record: it joins the running sandbox's network namespace,
and says so when no sandbox of the node runs. (tests/emulator/device/test_shell_network.py runs it.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emulator.device.records import record_sandbox, record_sandbox_start
from emulator.device.sandbox import TMPFS_MOUNTS, SandboxSpec
from emulator.device.store import DeviceStore
from emulator.shell import shell_command


def recorded(tmp_path: Path, network: str) -> DeviceStore:
    store = DeviceStore(tmp_path / "state", "dev")
    rootfs = store.rootfs_root / "abc"
    for folder in ("proc", "dev", "bin", *(path.lstrip("/") for path in TMPFS_MOUNTS)):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "bin" / "sh").touch()
    spec = SandboxSpec(rootfs=rootfs, command=("python3", "/panorama/app.py"), network=network, name="code")
    record_sandbox(store.root, "code", spec)
    return store


@pytest.mark.parametrize("network", ["app", "none"])
def test_the_shell_joins_the_network_of_the_running_sandbox(tmp_path: Path, network: str) -> None:
    store = recorded(tmp_path, network)
    before = shell_command("code", ("true",), device="dev", state_dir=tmp_path / "state", interactive=False)
    assert before.joins is None and before.note and "not running" in before.note
    assert "--unshare-net" in before.argv and "nsenter" not in before.argv[0]
    # This test's own process stands for the sandbox's init.
    record_sandbox_start(store.root, "code", os.getpid())
    made = shell_command("code", ("true",), device="dev", state_dir=tmp_path / "state", interactive=False)
    assert made.joins == os.getpid() and made.note is None
    assert Path(made.argv[0]).name == "nsenter"
    assert f"--net=/proc/{os.getpid()}/ns/net" in made.argv
    assert ("--preserve-credentials" in made.argv) is (os.geteuid() != 0)
    assert "--unshare-net" not in made.argv and "--unshare-user" not in made.argv
    assert made.argv[-1] == "true" and made.spec.network == network


def test_a_node_on_the_host_network_joins_nothing(tmp_path: Path) -> None:
    store = recorded(tmp_path, "host")
    record_sandbox_start(store.root, "code", os.getpid())
    made = shell_command("code", device="dev", state_dir=tmp_path / "state", interactive=False)
    assert made.joins is None and made.note is None and "nsenter" not in made.argv[0]
    assert made.argv[-1] == "/bin/sh"
