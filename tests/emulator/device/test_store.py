"""The device state directory: layout, verified asset installs, rootfs cache, app directories."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from _tar_helpers import directory, file, symlink, write_asset

from emulator.device import DeviceStore, default_state_dir, is_unpacked, sha256_file
from emulator.device.rootfs import MOUNT_POINTS
from emulator.errors import AssetError, DeviceError, ProjectError, UnsafeArchiveError

APP_SPECS = [
    directory("panorama/"),
    file("panorama/app.py", b"import panoramasdk\n"),
    symlink("usr/bin/python3", "/usr/bin/python3.8"),
    file("usr/bin/python3.8", b"interpreter", 0o755),
]


@pytest.fixture
def project_assets(tmp_path: Path) -> Path:
    return tmp_path / "project" / "assets"


@pytest.fixture
def store(tmp_path: Path) -> DeviceStore:
    return DeviceStore(tmp_path / "state", "dev")


def make_descriptor(directory_: Path) -> Path:
    data = b'{"runtimeDescriptor": {"envelopeVersion": "2021-01-01"}}'
    path = directory_ / f"{hashlib.sha256(data).hexdigest()}.json"
    directory_.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_default_state_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PANORAMA_EMULATOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "home"
    monkeypatch.delenv("PANORAMA_EMULATOR_HOME")
    assert default_state_dir() == tmp_path / "xdg" / "panorama-emulator"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_state_dir() == tmp_path / "user" / ".local" / "share" / "panorama-emulator"
    monkeypatch.setenv("PANORAMA_EMULATOR_HOME", str(tmp_path / "home"))
    assert DeviceStore(None, "d").root == tmp_path / "home" / "devices" / "d"


def test_layout_matches_the_design(store: DeviceStore, tmp_path: Path) -> None:
    root = tmp_path / "state" / "devices" / "dev"
    assert store.root == root
    assert store.assets_dir == root / "assets"
    assert store.rootfs_root == root / "rootfs"
    assert store.run_dir == root / "run"
    assert not root.exists()  # nothing is made until needed
    assert store.app_dir("people_counter") == root / "apps" / "people_counter"
    assert store.storage_dir("people_counter") == root / "apps" / "people_counter" / "storage"
    assert (
        store.logs_dir("people_counter", "code_node")
        == root / "apps" / "people_counter" / "logs" / "code_node"
    )
    assert (root / "apps/people_counter/storage").is_dir()
    assert (root / "apps/people_counter/logs/code_node").is_dir()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", "/abs", "a b", "dev\n"])
def test_bad_device_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DeviceError, match="device name"):
        DeviceStore(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../../escape", "/abs"])
def test_bad_app_and_node_names_never_reach_a_path(store: DeviceStore, tmp_path: Path, name: str) -> None:
    with pytest.raises(ProjectError, match="application name"):
        store.storage_dir(name)
    with pytest.raises(ProjectError, match="application name"):
        store.app_dir(name)
    with pytest.raises(ProjectError, match="node name") as caught:
        store.logs_dir("app", name)
    assert caught.value.node == name
    assert list(tmp_path.rglob("*")) == []


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(3_000_000))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(AssetError, match="cannot read"):
        sha256_file(tmp_path / "missing")


def test_install_copies_a_verified_asset_and_its_descriptor(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    descriptor = make_descriptor(project_assets)
    installed = store.install_asset(asset, descriptor)
    assert installed == store.assets_dir / asset.name
    assert installed.read_bytes() == asset.read_bytes()
    assert (store.assets_dir / descriptor.name).read_bytes() == descriptor.read_bytes()
    assert installed.stat().st_ino != asset.stat().st_ino
    assert not [p for p in store.assets_dir.iterdir() if p.name.endswith(".tmp")]


def test_install_skips_an_identical_verified_copy(
    store: DeviceStore, project_assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    installed = store.install_asset(asset)
    inode, mtime = installed.stat().st_ino, installed.stat().st_mtime_ns
    reads: list[str] = []

    def counting_sha256(path: Path) -> str:
        reads.append(str(path))
        return ""

    monkeypatch.setattr("emulator.device.store.sha256_file", counting_sha256)
    assert store.install_asset(asset) == installed
    assert (installed.stat().st_ino, installed.stat().st_mtime_ns) == (inode, mtime)
    assert reads == []  # neither file was read again


def test_a_corrupted_asset_is_refused_with_both_hashes(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    data = bytearray(asset.read_bytes())
    data[len(data) // 2] ^= 0xFF
    asset.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(AssetError) as caught:
        store.install_asset(asset)
    text = str(caught.value)
    assert actual in text and asset.name.split(".")[0] in text and "\n" not in text
    assert caught.value.asset == asset.name
    assert not store.assets_dir.exists() or list(store.assets_dir.iterdir()) == []
    assert not store.rootfs_root.exists()


def test_a_renamed_asset_is_refused(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    renamed = asset.with_name("0" * 64 + ".tar.gz")
    asset.rename(renamed)
    with pytest.raises(AssetError, match=r"but its name says 0{64}: the asset is corrupted or was renamed"):
        store.install_asset(renamed)


@pytest.mark.parametrize(
    "name", ["app.tar.gz", "ABC" + "0" * 61 + ".tar.gz", "0" * 64 + "..tar.gz", "0" * 63]
)
def test_badly_named_assets_are_refused(store: DeviceStore, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(AssetError, match="must be its SHA-256"):
        store.install_asset(path)


def test_a_missing_asset_is_an_asset_error(store: DeviceStore, project_assets: Path) -> None:
    with pytest.raises(AssetError, match="missing"):
        store.install_asset(project_assets / ("a" * 64 + ".tar.gz"))


def test_a_source_corrupted_after_install_is_refused_again(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    store.install_asset(asset)
    with asset.open("r+b") as handle:
        handle.seek(20)
        byte = handle.read(1)
        handle.seek(20)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(AssetError, match="corrupted or was renamed"):
        store.install_asset(asset)


def test_a_device_copy_corrupted_after_install_is_refused_before_unpacking(
    store: DeviceStore, project_assets: Path
) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    installed = store.install_asset(asset)
    data = bytearray(installed.read_bytes())
    data[-10] ^= 0x01
    installed.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupted") as caught:
        store.rootfs(asset.name)
    assert caught.value.asset == asset.name
    assert not store.rootfs_root.exists() or [p for p in store.rootfs_root.iterdir()] == []
    store.install_asset(asset)  # a fresh install repairs the copy
    assert (store.rootfs(asset.name, progress=False) / "panorama/app.py").is_file()


def test_rootfs_unpacks_once_and_reuses(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    store.install_asset(asset)
    root = store.rootfs(asset.name, progress=False)
    assert root == store.rootfs_root / asset.name.split(".")[0]
    assert (root / "panorama/app.py").read_bytes() == b"import panoramasdk\n"
    assert os.readlink(root / "usr/bin/python3") == "/usr/bin/python3.8"
    assert all((root / mount_point).is_dir() for mount_point in MOUNT_POINTS)
    assert is_unpacked(root)
    inode = root.stat().st_ino
    (root / "sentinel").write_text("kept")
    assert store.rootfs(asset.name, progress=False) == root
    assert root.stat().st_ino == inode and (root / "sentinel").exists()


def test_a_model_asset_is_unpacked_without_mount_points(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, [file("model.onnx", b"onnx"), file("labels.txt", b"cat\n")])
    store.install_asset(asset)
    model_dir = store.rootfs(asset.name, progress=False, mount_points=())
    assert sorted(os.listdir(model_dir)) == ["labels.txt", "model.onnx"]


def test_rootfs_of_an_asset_not_installed(store: DeviceStore) -> None:
    with pytest.raises(AssetError, match="not installed on the device"):
        store.rootfs("b" * 64 + ".tar.gz")
    with pytest.raises(AssetError, match="must be its SHA-256"):
        store.rootfs("../../etc.tar.gz")


def test_rootfs_of_a_hostile_asset_names_it(store: DeviceStore, project_assets: Path, tmp_path: Path) -> None:
    asset = write_asset(project_assets, [symlink("esc", str(tmp_path)), file("esc/pwned", b"x")])
    store.install_asset(asset)
    with pytest.raises(UnsafeArchiveError, match=rf"^asset {asset.name}: member esc/pwned: .*symbolic link"):
        store.rootfs(asset.name, progress=False)
    assert not (tmp_path / "pwned").exists()


def test_stale_temporary_copies_are_removed(store: DeviceStore, project_assets: Path) -> None:
    asset = write_asset(project_assets, APP_SPECS)
    store.assets_dir.mkdir(parents=True)
    stale = store.assets_dir / f".{asset.name}.abcd.tmp"
    fresh = store.assets_dir / f".{asset.name}.efgh.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1, 1))
    store.install_asset(asset)
    assert not stale.exists() and fresh.exists()


def test_reset_run_dir(store: DeviceStore) -> None:
    run = store.reset_run_dir()
    (run / "node.sock").write_text("x")
    (run / "sub").mkdir()
    (run / "sub" / "frame").write_bytes(b"x")
    assert store.reset_run_dir() == run
    assert list(run.iterdir()) == []


def test_remove_deletes_the_device_even_with_read_only_parts(
    store: DeviceStore, project_assets: Path
) -> None:
    asset = write_asset(
        project_assets, [*APP_SPECS, directory("proc/", 0o555), directory("srv/locked/", 0o500)]
    )
    store.install_asset(asset)
    store.rootfs(asset.name, progress=False)
    store.storage_dir("app")
    store.remove()
    assert not store.root.exists()
    assert asset.exists()


def test_one_holder_at_a_time_has_a_device_on(tmp_path: Path) -> None:
    first = DeviceStore(tmp_path, "shared").hold()
    try:
        with pytest.raises(DeviceError, match=r"device 'shared' is already on in another emulator"):
            DeviceStore(tmp_path, "shared").hold()
        os.close(DeviceStore(tmp_path, "another").hold())
    finally:
        os.close(first)
    os.close(DeviceStore(tmp_path, "shared").hold())
