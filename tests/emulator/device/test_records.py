"""Sandbox records for `shell`: written for the owner only, read back whole, refused when stale or foreign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.device.limits import Limits
from emulator.device.records import (
    RECORDS_DIR,
    SandboxRecord,
    clear_sandbox_records,
    read_sandbox_record,
    record_sandbox,
    record_sandbox_start,
)
from emulator.device.sandbox import SandboxSpec
from emulator.device.store import DeviceStore
from emulator.errors import DeviceError


def spec(store: DeviceStore, tmp_path: Path) -> SandboxSpec:
    return SandboxSpec(
        rootfs=store.rootfs_root / "abc",
        command=("python3", "/panorama/app.py"),
        env={"PATH": "/usr/bin", "PYTHONPATH": "/opt/panorama-emulator/sdk"},
        hostname="dev",
        storage_dir=tmp_path / "storage",
        logs_dir=tmp_path / "logs",
        network="app",
        ro_files=((tmp_path / "src" / "app.py", "/panorama/app.py"),),
        inbound_ports=(80,),
        limits=Limits(memory_mib=256, pids=32),
        name="code_node",
    )


def test_a_record_reads_back_as_the_same_sandbox(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "state", "dev")
    made = spec(store, tmp_path)
    record_sandbox(store.root, "code_node", made)
    path = store.root / RECORDS_DIR / "code_node.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_sandbox_record(store, "code_node") == SandboxRecord(made, None)
    with pytest.raises(DeviceError, match="no such node"):
        read_sandbox_record(store, "other")
    clear_sandbox_records(store.root)
    with pytest.raises(DeviceError, match="not running"):
        read_sandbox_record(store, "code_node")


def test_a_record_of_an_ended_process_or_a_foreign_root_is_refused(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "state", "dev")
    record_sandbox(store.root, "code_node", spec(store, tmp_path))
    path = store.root / RECORDS_DIR / "code_node.json"
    body = json.loads(path.read_text())
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    path.write_text(json.dumps({**body, "pid": int(ended.stdout)}))
    with pytest.raises(DeviceError, match="has ended"):
        read_sandbox_record(store, "code_node")
    body["spec"]["rootfs"] = "/"
    path.write_text(json.dumps(body))
    with pytest.raises(DeviceError, match="outside the device"):
        read_sandbox_record(store, "code_node")


def test_a_started_sandbox_is_named_while_its_namespace_lives(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "state", "dev")
    made = spec(store, tmp_path)
    record_sandbox_start(store.root, "code_node", os.getpid())
    assert not (store.root / RECORDS_DIR).exists(), "a start made a record that was not there"
    record_sandbox(store.root, "code_node", made)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record_sandbox_start(store.root, "code_node", sleeper.pid)
        assert read_sandbox_record(store, "code_node") == SandboxRecord(made, sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its pid is gone (or, reused, would not hold that namespace): no sandbox runs now.
    assert read_sandbox_record(store, "code_node") == SandboxRecord(made, None)
    path = store.root / RECORDS_DIR / "code_node.json"
    body = json.loads(path.read_text())
    body["sandbox"] = {"pid": os.getpid(), "net": "net:[1]"}
    path.write_text(json.dumps(body))
    assert read_sandbox_record(store, "code_node").init_pid is None
