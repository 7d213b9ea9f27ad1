"""The device's state directory: verified asset copies, unpacked root filesystems, app storage and logs.

Layout (one directory per device under the state directory)::

    devices/<device>/assets/<sha>.tar.gz, <sha>.json      verified copies
    devices/<device>/rootfs/<sha>/                        unpacked once, read-only at run time
    devices/<device>/apps/<app>/storage/                  /opt/aws/panorama/storage  (persistent)
    devices/<device>/apps/<app>/storage.img               mounted over storage/ while on (a storage quota)
    devices/<device>/apps/<app>/logs/<node>/              /opt/aws/panorama/logs + console_output
    devices/<device>/run/                                 sockets, shared memory; removed at every boot

An asset's name is the SHA-256 of its bytes; a copy is installed only after that is checked, and it is
checked while copying (one read). To keep a boot fast, a small stamp ``assets/.<name>.verified`` records
the file status (device, inode, size, mtime, ctime) of the verified copy and of the source it came from:
while neither changes, neither is read again, as git does with its index. Any write to either file
changes its ctime, and the next install or unpack hashes it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from emulator.device.rootfs import MOUNT_POINTS, UnpackLimits, is_unpacked, remove_tree, unpack_asset
from emulator.device.volume import unmount_volume
from emulator.errors import AssetError, DeviceError, ProjectError

__all__ = ["DeviceStore", "default_state_dir", "sha256_file"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ASSET_NAME = re.compile(r"^([0-9a-f]{64})((?:\.[A-Za-z0-9]+)+)$")
_CHUNK = 1 << 20
_STALE_TEMP_SECONDS = 60


def default_state_dir() -> Path:
    """Return the state directory used when none is given.

    Returns:
        ``$PANORAMA_EMULATOR_HOME``, else ``$XDG_DATA_HOME/panorama-emulator`` (when that is an absolute
        path), else ``~/.local/share/panorama-emulator``.
    """
    home = os.environ.get("PANORAMA_EMULATOR_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "panorama-emulator"
    return Path.home() / ".local" / "share" / "panorama-emulator"


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes.

    Args:
        path: the file.

    Returns:
        64 lowercase hex digits.

    Raises:
        AssetError: the file cannot be read.
    """
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as source:
            while count := source.readinto(buffer):
                digest.update(view[:count])
    except OSError as error:
        raise AssetError(
            f"cannot read the file: {error.strerror}", file=str(path), asset=Path(path).name
        ) from None
    return digest.hexdigest()


def _check_name(name: str, kind: str, error: type[DeviceError] | type[ProjectError], **context: str) -> str:
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise error(
            f"{kind} name {name!r} is not allowed: use letters, digits, '_', '-' and '.' only", **context
        )
    return name


def _asset_sha(name: str, file: str | None = None) -> str:
    match = _ASSET_NAME.fullmatch(name)
    if not match:
        raise AssetError(
            "an asset file name must be its SHA-256 followed by its type, like <sha256>.tar.gz",
            file=file,
            asset=name,
        )
    return match.group(1)


def _signature(path: Path) -> list[int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class DeviceStore:
    """One emulated device's directories under a state directory.

    Nothing is created until it is needed.

    Args:
        state_dir: the state directory; None for ``default_state_dir()``.
        device: the device name (letters, digits, ``_``, ``-``, ``.``).
        limits: bounds applied when unpacking assets (``UnpackLimits()`` by default).

    Raises:
        DeviceError: the device name is not allowed.
    """

    def __init__(self, state_dir: Path | None, device: str, *, limits: UnpackLimits | None = None) -> None:
        self.device = _check_name(device, "device", DeviceError)
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.root = self.state_dir / "devices" / device
        self.assets_dir = self.root / "assets"
        self.rootfs_root = self.root / "rootfs"
        self.apps_dir = self.root / "apps"
        self.run_dir = self.root / "run"
        self.limits = limits or UnpackLimits()

    def __repr__(self) -> str:
        return f"DeviceStore({str(self.state_dir)!r}, {self.device!r})"

    # -- assets ---------------------------------------------------------------------------------------------

    def asset_path(self, asset_uri: str) -> Path:
        """Return where the installed copy of an asset lives (whether or not it is installed).

        Args:
            asset_uri: the asset file name as in package.json (``<sha256>.tar.gz`` or ``<sha256>.json``).

        Raises:
            AssetError: the name is not ``<sha256>.<type>``.
        """
        _asset_sha(asset_uri)
        return self.assets_dir / asset_uri

    def install_asset(self, source: Path, descriptor: Path | None = None) -> Path:
        """Copy an asset (and its descriptor) into the device after checking that each SHA-256 is its name.

        The copy is atomic (temporary file, then rename) and hashed while it is copied. It is skipped when the
        device already holds a verified copy and the source is unchanged since it was last verified.

        Args:
            source: the asset file, ``<sha256>.tar.gz`` (usually in the project's ``assets/``).
            descriptor: its descriptor file ``<sha256>.json``, if any.

        Returns:
            The installed copy of ``source``.

        Raises:
            AssetError: a file is missing, unreadable, badly named, or its SHA-256 differs from its name
                (the message shows both).
            DeviceError: the device directory cannot be written.
        """
        installed = self._install_file(Path(source))
        if descriptor is not None:
            self._install_file(Path(descriptor))
        return installed

    def _stamp_path(self, name: str) -> Path:
        return self.assets_dir / f".{name}.verified"

    def _read_stamp(self, name: str) -> dict[str, list[int]]:
        try:
            stamp = json.loads(self._stamp_path(name).read_bytes())
        except (OSError, ValueError):
            return {}
        return stamp if isinstance(stamp, dict) else {}

    def _write_stamp(self, name: str, *, source: list[int] | None, copy: list[int] | None) -> None:
        path = self._stamp_path(name)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps({"source": source, "copy": copy}))
            temporary.replace(path)

    def _install_file(self, source: Path) -> Path:
        name = source.name
        expected = _asset_sha(name, str(source))
        dest = self.assets_dir / name
        if not source.is_file():
            raise AssetError("the asset file is missing", file=str(source), asset=name)
        source_signature = _signature(source)
        stamp = self._read_stamp(name)
        copy_signature = _signature(dest)
        if copy_signature is not None and stamp.get("copy") == copy_signature:
            if stamp.get("source") != source_signature:
                _verify(sha256_file(source), expected, source)
                self._write_stamp(name, source=source_signature, copy=copy_signature)
            return dest
        try:
            self.assets_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temporaries(name)
            fd, temporary = tempfile.mkstemp(dir=self.assets_dir, prefix=f".{name}.", suffix=".tmp")
        except OSError as error:
            raise DeviceError(
                f"cannot write the device's assets: {error.strerror}", file=str(self.assets_dir)
            ) from None
        try:
            actual = _copy_hashing(source, fd, name)
            _verify(actual, expected, source)
            os.chmod(temporary, 0o644)
            os.replace(temporary, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._write_stamp(name, source=source_signature, copy=_signature(dest))
        return dest

    def _remove_stale_temporaries(self, name: str) -> None:
        """Remove temporary copies of ``name`` left by a killed install (not written to for a while)."""
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for leftover in self.assets_dir.glob(f".{glob.escape(name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.lstat().st_mtime < cutoff:
                    leftover.unlink()

    def _verified_copy(self, asset_uri: str) -> Path:
        """Return the installed copy of an asset after checking it still is what its name says."""
        expected = _asset_sha(asset_uri)
        path = self.assets_dir / asset_uri
        signature = _signature(path)
        if signature is None:
            raise AssetError(
                "the asset is not installed on the device; install it first", file=str(path), asset=asset_uri
            )
        stamp = self._read_stamp(asset_uri)
        if stamp.get("copy") != signature:
            _verify(sha256_file(path), expected, path)
            self._write_stamp(asset_uri, source=stamp.get("source"), copy=signature)
        return path

    def rootfs(
        self, asset_uri: str, progress: bool = True, *, mount_points: Sequence[str] = MOUNT_POINTS
    ) -> Path:
        """Return the unpacked root filesystem of an installed asset, unpacking it the first time.

        Args:
            asset_uri: the asset file name as in package.json, ``<sha256>.tar.gz``.
            progress: show a progress bar on a terminal while unpacking a large asset.
            mount_points: directories to create for the sandbox; ``()`` for a model asset (files only).

        Returns:
            ``rootfs/<sha256>/``.

        Raises:
            AssetError: the asset is not installed, or its copy no longer matches its name.
            UnsafeArchiveError: a member of the archive is not allowed (nothing was written outside).
            DeviceError: the host refused a write.
        """
        sha = _asset_sha(asset_uri)
        dest = self.rootfs_root / sha
        if is_unpacked(dest):
            return dest
        archive = self._verified_copy(asset_uri)
        try:
            return unpack_asset(
                archive, dest, progress=progress, limits=self.limits, mount_points=mount_points
            )
        except AssetError as error:
            error.asset = asset_uri
            raise

    # -- apps and boots -------------------------------------------------------------------------------------

    def app_dir(self, app: str) -> Path:
        """Return (creating it) the directory of one application instance on this device.

        Args:
            app: the application name (its graph directory name).

        Raises:
            ProjectError: the name is not allowed.
            DeviceError: the directory cannot be created.
        """
        return self._make(self.apps_dir / _check_name(app, "application", ProjectError))

    def storage_dir(self, app: str) -> Path:
        """Return (creating it) an application's persistent storage, mounted at /opt/aws/panorama/storage.

        Raises:
            ProjectError: the name is not allowed.
            DeviceError: the directory cannot be created.
        """
        return self._make(self.app_dir(app) / "storage")

    def logs_dir(self, app: str, node: str) -> Path:
        """Return (creating it) the log directory of one node of an app, mounted at /opt/aws/panorama/logs.

        Raises:
            ProjectError: the application or node name is not allowed.
            DeviceError: the directory cannot be created.
        """
        node = _check_name(node, "node", ProjectError, node=node)
        return self._make(self.app_dir(app) / "logs" / node)

    def hold(self) -> int:
        """Lock the device for this boot: one emulator at a time has a device on, since a boot resets what a
        running one uses (run directory, sandbox records, storage).

        Returns:
            The descriptor holding the lock (closing it lets go; so does the end of the process).

        Raises:
            DeviceError: the device is on in another emulator, or in another ``Appliance`` of this one.
        """
        fd = os.open(self._make(self.root) / ".on", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DeviceError(
                f"device {self.device!r} is already on in another emulator (state directory "
                f"{self.state_dir}): shut it down there first, or use another device name"
            ) from None
        return fd

    def reset_run_dir(self) -> Path:
        """Remove and recreate ``run/`` (sockets, shared memory), as at every boot.

        Returns:
            The empty run directory.

        Raises:
            DeviceError: it cannot be removed or created.
        """
        remove_tree(self.run_dir)
        return self._make(self.run_dir)

    def remove(self) -> None:
        """Delete the device: its assets, root filesystems, storage, logs and run directory.

        Raises:
            DeviceError: something in it cannot be removed.
        """
        for storage in self.root.glob("apps/*/storage"):
            unmount_volume(storage)  # a volume still mounted: the files beneath go, not through the mount
        remove_tree(self.root)

    @staticmethod
    def _make(path: Path) -> Path:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DeviceError(f"cannot create the directory: {error.strerror}", file=str(path)) from None
        return path


def _verify(actual: str, expected: str, path: Path) -> None:
    if actual != expected:
        raise AssetError(
            f"SHA-256 of the file is {actual} but its name says {expected}: "
            "the asset is corrupted or was renamed",
            file=str(path),
            asset=path.name,
        )


def _copy_hashing(source: Path, fd: int, name: str) -> str:
    """Copy ``source`` into ``fd`` (closed afterwards), returning the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        with open(fd, "wb", buffering=0, closefd=True) as out:
            try:
                src = open(source, "rb", buffering=0)  # noqa: SIM115 - closed just below
            except OSError as error:
                raise AssetError(
                    f"cannot read the file: {error.strerror}", file=str(source), asset=name
                ) from None
            with src:
                while True:
                    try:
                        count = src.readinto(buffer)
                    except OSError as error:
                        raise AssetError(
                            f"cannot read the file: {error.strerror}", file=str(source), asset=name
                        ) from None
                    if not count:
                        break
                    chunk = view[:count]
                    digest.update(chunk)
                    written = 0
                    while written < count:
                        written += out.write(chunk[written:]) or 0
    except OSError as error:
        raise DeviceError(
            f"cannot write the device's copy of the asset: {error.strerror}", asset=name
        ) from None
    return digest.hexdigest()
