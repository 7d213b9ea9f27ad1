"""The storage quota: a sized filesystem (real mke2fs and fuse2fs) holds an app's storage while the device is
on; writes past it get ENOSPC, what was written comes back into the storage directory at shutdown, power cut
or the next boot after the emulator was killed, and no mount, image or fuse2fs process stays behind.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _appliance_helpers import public_tmp_dir, result_as, wait_for

from emulator.device.limits import Limits, limits_in_force
from emulator.device.volume import StorageVolume, mirror_tree, recover_volume, volume_support
from emulator.errors import DeviceError

REPO = Path(__file__).resolve().parents[3]


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _serving(image: Path) -> list[int]:
    """The fuse2fs processes of this test process that serve ``image`` (other tests' devices may be on)."""
    return [pid for pid in _fuse2fs_of(os.getpid()) if os.fsencode(image) in _argv(pid)]


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return [b""]


@pytest.fixture
def supported() -> None:
    reason = volume_support()
    if reason is not None:
        pytest.skip(f"no storage filesystem here: {reason}")


# --- mirror_tree: plain files, no mounts ---------------------------------------------------------------


def test_mirror_copies_changes_removes_what_is_gone_and_keeps_links_as_links(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "sub").mkdir(parents=True)
    (source / "kept.txt").write_text("same")
    (source / "sub" / "new.txt").write_text("new")
    (source / "link").symlink_to("/etc/passwd")
    (source / "lost+found").mkdir()
    (target / "gone").mkdir(parents=True)
    (target / "gone" / "old.txt").write_text("old")
    (target / "sub").write_text("a file where the source has a folder")
    mirror_tree(source, target, skip=frozenset({"lost+found"}))
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "kept.txt", "link", "sub", "sub/new.txt",
    ]  # fmt: skip
    assert (target / "link").is_symlink() and os.readlink(target / "link") == "/etc/passwd"
    assert (target / "kept.txt").read_text() == "same"
    (source / "kept.txt").write_text("changed")
    mirror_tree(source, target)
    assert (target / "kept.txt").read_text() == "changed"


def test_mirror_skips_unchanged_files_only_when_older_than_fresh_ns(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    (source / "count.txt").write_text("1")
    mirror_tree(source, target)
    (target / "count.txt").write_text("0")  # same size and, below, the same mtime as the source's
    mtime = (source / "count.txt").stat().st_mtime_ns
    os.utime(target / "count.txt", ns=(mtime, mtime))
    mirror_tree(source, target, fresh_ns=mtime + 1)
    assert (target / "count.txt").read_text() == "0"
    mirror_tree(source, target, fresh_ns=mtime)
    assert (target / "count.txt").read_text() == "1"


# --- the volume itself -----------------------------------------------------------------------------------


def test_a_rewrite_in_the_second_of_the_boot_is_kept(tmp_path: Path, supported: None) -> None:
    storage = tmp_path / "storage"
    for boot in range(1, 4):  # boots in quick succession: fuse2fs keeps whole seconds of mtime only
        volume = StorageVolume(storage, 8)
        volume.open()
        counter = storage / "boots.txt"
        said = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(said + 1))
        volume.close()
        assert (storage / "boots.txt").read_text() == str(boot)


def test_writes_past_the_quota_get_enospc_and_what_fit_comes_back(tmp_path: Path, supported: None) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "kept.json").write_text('{"boots": 3}')
    volume = StorageVolume(storage, 16)
    volume.open()
    try:
        assert volume.mounted and f" {storage} " in _mounts()
        assert json.loads((storage / "kept.json").read_text()) == {"boots": 3}
        assert not (storage / "lost+found").exists()
        written = 0
        with pytest.raises(OSError) as full, (storage / "fill.bin").open("wb", buffering=0) as fill:
            for _ in range(64):
                written += fill.write(b"\x01" * (1 << 20))
        assert full.value.errno == 28  # ENOSPC
        assert 8 << 20 < written < 16 << 20
    finally:
        volume.close()
    print(f"\n16 MiB quota: {written / (1 << 20):.1f} MiB written, then ENOSPC")
    assert (storage / "fill.bin").stat().st_size == written
    assert json.loads((storage / "kept.json").read_text()) == {"boots": 3}
    assert not volume.mounted and not volume.image.exists()
    assert f" {storage} " not in _mounts() and _serving(volume.image) == []


def test_storage_larger_than_the_quota_is_refused_and_left_alone(tmp_path: Path, supported: None) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "big.bin").write_bytes(b"\x03" * (20 << 20))
    with pytest.raises(DeviceError, match=r"storage holds more than its quota of 8 MiB"):
        StorageVolume(storage, 8).open()
    assert (storage / "big.bin").stat().st_size == 20 << 20
    assert not (tmp_path / "storage.img").exists() and _serving(tmp_path / "storage.img") == []


HOLDER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from emulator.device.volume import StorageVolume
volume = StorageVolume(Path(sys.argv[2]), 16)
volume.open()
(Path(sys.argv[2]) / "late.txt").write_text("written after the last shutdown")
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("fuse2fs", ["ends with it", "crashed first"])
def test_the_next_boot_recovers_what_a_killed_emulator_left_in_its_volume(
    tmp_path: Path, supported: None, fuse2fs: str
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(REPO), str(storage)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
    mounter = _fuse2fs_of(holder.pid)
    assert len(mounter) == 1
    if fuse2fs == "crashed first":
        os.kill(mounter[0], signal.SIGKILL)
    holder.kill()
    holder.wait()
    # Its fuse2fs does not outlive it: it unmounts and ends (a crashed one leaves a dead mount).
    wait_for(lambda: _ended(mounter[0]), what=f"fuse2fs {mounter[0]} to end")
    if fuse2fs == "ends with it":
        wait_for(lambda: f" {storage} " not in _mounts(), what="the unmount")
        assert not (storage / "late.txt").exists()
    assert recover_volume(storage)
    assert (storage / "late.txt").read_text() == "written after the last shutdown"
    assert not (tmp_path / "storage.img").exists()
    assert f" {storage} " not in _mounts()
    assert not recover_volume(storage)


def _fuse2fs_of(pid: int) -> list[int]:
    """The fuse2fs processes among the descendants of ``pid``."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            children = [
                int(c)
                for t in Path(f"/proc/{parent}/task").iterdir()
                for c in (t / "children").read_text().split()
            ]
        except OSError:  # it ended meanwhile
            continue
        pending += children
        found += [child for child in children if _argv(child)[0].endswith(b"fuse2fs")]
    return found


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_boot_line_says_whether_the_quota_is_in_force() -> None:
    line = limits_in_force(Limits(storage_mib=64))
    reason = volume_support()
    assert ("storage 64 MiB (a filesystem of that size)" in line) == (reason is None)
    assert "storage unlimited" in limits_in_force(Limits(storage_mib=0))


# --- as an ordinary user ---------------------------------------------------------------------------------

AS_USER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from emulator.device.volume import StorageVolume
storage = Path(sys.argv[2])
storage.mkdir()
volume = StorageVolume(storage, 16)
volume.open()
written, errno = 0, None
try:
    with (storage / "fill.bin").open("wb", buffering=0) as fill:
        for _ in range(64):
            written += fill.write(b"x" * (1 << 20))
except OSError as error:
    errno = error.errno
volume.close()
kept = (storage / "fill.bin").stat().st_size
left = sorted(p.name for p in storage.parent.iterdir())
print("RESULT " + json.dumps({"errno": errno, "written": written, "kept": kept, "left": left}))
"""


def test_the_same_as_an_ordinary_user(test_user: pwd.struct_passwd, supported: None) -> None:
    base = public_tmp_dir("pe-volume-user-")
    try:
        os.chown(base, test_user.pw_uid, test_user.pw_gid)
        argv = [sys.executable, "-c", AS_USER, str(REPO), str(base / "storage")]
        out = result_as(test_user.pw_name, argv)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert out["errno"] == 28 and out["kept"] == out["written"] and out["left"] == ["storage"]
