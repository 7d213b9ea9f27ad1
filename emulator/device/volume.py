"""An app's storage in a sized filesystem while the device is on, so that writes past its quota fail.

Between boots the app's storage is a plain directory of the state directory (``apps/<app>/storage/``), which
the developer, the pytest plugin and the HTTP API read. With a quota, each boot makes an ext4 image of the
quota's size from that directory (``mke2fs -d``, no privilege needed) and mounts it with ``fuse2fs`` (FUSE:
as root and as an ordinary user alike) over that same directory, which the sandboxes bind at
``/opt/aws/panorama/storage``: past the quota the app's writes get ENOSPC, as on a full device, and nothing
else on the host fills. Shutdown and power cut mirror the volume into the directory beneath it, unmount it
(``fuse2fs`` exits) and delete the image.

While ``apps/<app>/storage.img`` exists the volume holds the newest storage: an emulator killed outright
leaves it behind (its ``fuse2fs`` writes what it holds and ends with it), and the next boot first mirrors
it into the directory (:func:`recover_volume`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from emulator.errors import DeviceError

__all__ = ["StorageVolume", "mirror_tree", "recover_volume", "unmount_volume", "volume_support"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_TOOLS = ("mke2fs", "fuse2fs", "fusermount3")
_MOUNT_TRIES = 500
_LOST_FOUND = "lost+found"
# fuse2fs in the foreground, so that the unmount waits for its last write; a watcher ends it (SIGTERM: it
# writes what it holds and unmounts) when the pipe from the emulator closes, however the emulator ends.
# It mounts over the storage directory, which is not empty: libfuse 2 wants "nonempty" for that, libfuse 3
# allows it always and knows no such option.
_FUSE_OPTIONS = ("nonempty", "")
_MOUNTER = (
    'exec 3<&0; fuse2fs -f "$1" "$2" ${3:+-o "$3"} & f=$!; (read -r _ <&3; kill "$f" 2>/dev/null) & wait "$f"'
)


def volume_support() -> str | None:
    """Why a sized storage filesystem cannot be made here, or None when it can."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (Debian: apt-get install fuse2fs fuse3)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no access to /dev/fuse"
    return None


def _mounted(path: Path) -> bool:
    target = os.fsencode(os.path.realpath(path))
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_bytes().splitlines():
            fields = line.split(b" ")
            if len(fields) > 4 and fields[4].replace(b"\\040", b" ") == target:
                return True
    return False


def unmount_volume(path: Path) -> None:
    """Detach the FUSE mount at ``path``, if any (lazily, so that a dead ``fuse2fs`` does not stop it)."""
    if _mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def _same(source: os.stat_result, target: os.stat_result) -> bool:
    """Whether two files of the same type look unchanged (size and mtime)."""
    return source.st_size == target.st_size and source.st_mtime_ns == target.st_mtime_ns


def mirror_tree(source: Path, target: Path, skip: frozenset[str] = frozenset(), fresh_ns: int = 0) -> None:
    """Make ``target`` hold what ``source`` holds: files copied when their size or mtime differ, symbolic
    links copied as links, what ``source`` no longer has removed. Sockets and FIFOs are left out.

    Args:
        source: the tree to copy from.
        target: the tree to update (made if missing).
        skip: names at the top of ``source`` to leave out.
        fresh_ns: files of ``source`` modified at or after this time (ns since the epoch) are copied even when
            size and mtime agree (``fuse2fs`` keeps whole seconds only; 0 copies every file).

    Raises:
        OSError: a file cannot be read or written (``filename`` names it).
    """
    target.mkdir(exist_ok=True)
    wanted = {entry.name: entry for entry in os.scandir(source) if entry.name not in skip}
    for entry in os.scandir(target):
        if entry.name not in wanted:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    for name, entry in wanted.items():
        info = entry.stat(follow_symlinks=False)
        destination = target / name
        try:
            current: os.stat_result | None = destination.lstat()
        except FileNotFoundError:
            current = None
        if current is not None and stat.S_IFMT(current.st_mode) != stat.S_IFMT(info.st_mode):
            shutil.rmtree(destination) if stat.S_ISDIR(current.st_mode) else destination.unlink()
            current = None
        if stat.S_ISDIR(info.st_mode):
            mirror_tree(Path(entry.path), destination, fresh_ns=fresh_ns)
            shutil.copystat(entry.path, destination, follow_symlinks=False)
        elif stat.S_ISLNK(info.st_mode):
            if current is None or os.readlink(destination) != os.readlink(entry.path):
                with contextlib.suppress(FileNotFoundError):
                    destination.unlink()
                os.symlink(os.readlink(entry.path), destination)
        elif stat.S_ISREG(info.st_mode) and (
            current is None or info.st_mtime_ns >= fresh_ns or not _same(info, current)
        ):
            shutil.copy2(entry.path, destination, follow_symlinks=False)


class StorageVolume:
    """The sized filesystem that holds one app's storage during one boot, mounted over the storage directory.

    Without a quota (0), or where :func:`volume_support` says no filesystem can be made, it holds nothing:
    ``open`` only copies back what a killed emulator left in an image, and the directory is used as it is.
    The path of the storage never changes: while the volume is open it shows the volume, and a descriptor
    of the directory opened before the mount reaches the directory beneath, where ``close`` copies back.

    Args:
        storage_dir: the app's storage directory (kept between boots).
        quota_mib: the filesystem's size in MiB; 0 for none.
    """

    def __init__(self, storage_dir: Path, quota_mib: int) -> None:
        self.storage_dir = storage_dir
        self.quota_mib = quota_mib
        self.image = storage_dir.with_name(storage_dir.name + ".img")
        self._process: subprocess.Popen[bytes] | None = None
        self._beneath: int | None = None
        self._opened_ns = 0

    def __enter__(self) -> StorageVolume:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def mounted(self) -> bool:
        """Whether the volume is mounted over the storage directory now."""
        return self._beneath is not None

    def open(self) -> None:
        """Make the image from the storage directory and mount it there.

        Raises:
            DeviceError: the storage holds more than the quota, or the image cannot be made or mounted.
        """
        recover_volume(self.storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if not self.quota_mib or volume_support() is not None:
            return
        self._opened_ns = (time.time_ns() // 1_000_000_000 - 1) * 1_000_000_000
        owner = f"{os.getuid()}:{os.getgid()}"
        made = subprocess.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0", "-T", "default",
             "-E", f"root_owner={owner}", "-d", str(self.storage_dir), str(self.image), f"{self.quota_mib}M"],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if made.returncode != 0:
            self.image.unlink(missing_ok=True)
            detail = (made.stderr.strip().splitlines() or ["mke2fs failed"])[-1]
            if "allocate" in detail or "space" in detail.lower():
                raise DeviceError(
                    f"{self.storage_dir}: the app's storage holds more than its quota of "
                    f"{self.quota_mib} MiB: raise the storage limit or remove files from it"
                )
            raise DeviceError(f"{self.image}: cannot make the app's storage filesystem: {detail}")
        try:
            self._mount()
        except DeviceError:
            self.image.unlink(missing_ok=True)  # made from the directory just now, which holds it all
            raise
        with contextlib.suppress(OSError):
            (self.storage_dir / _LOST_FOUND).rmdir()

    def _mount(self) -> None:
        """Mount the image over the storage directory (the image stays whatever happens).

        Raises:
            DeviceError: ``fuse2fs`` did not mount it.
        """
        detail = ["it did not mount"]
        for options in _FUSE_OPTIONS:
            self._beneath = os.open(self.storage_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            with tempfile.TemporaryFile() as errors:
                self._process = process = subprocess.Popen(
                    ["sh", "-c", _MOUNTER, "mount", str(self.image), str(self.storage_dir), options],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,  # a Ctrl-C or kill of the emulator's group is not its end
                )
                for _ in range(_MOUNT_TRIES):
                    if _mounted(self.storage_dir):
                        return
                    if process.poll() is not None:
                        break
                    time.sleep(0.01)
                self._stop()
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip().splitlines() or detail
            if "nonempty" not in detail[-1]:
                break
        raise DeviceError(f"{self.storage_dir}: cannot mount the app's storage filesystem: {detail[-1]}")

    def _stop(self) -> None:
        unmount_volume(self.storage_dir)
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        beneath, self._beneath = self._beneath, None
        if beneath is not None:
            os.close(beneath)

    def close(self) -> None:
        """Copy the volume into the directory beneath it, unmount it and delete the image (the app's
        processes have ended). If the copy fails the image stays, for the next boot to recover.

        Raises:
            DeviceError: a file could not be copied back (it is still in the image).
        """
        if self._beneath is None:
            return
        beneath = Path(f"/proc/self/fd/{self._beneath}")
        try:
            mirror_tree(self.storage_dir, beneath, frozenset({_LOST_FOUND}), self._opened_ns)
        except OSError as error:
            self._stop()
            raise DeviceError(
                f"{error.filename or self.storage_dir}: cannot copy the app's storage back from its "
                f"filesystem ({error.strerror}); it stays in {self.image} until the next boot"
            ) from None
        self._stop()
        self.image.unlink(missing_ok=True)


def _wait_unused(image: Path) -> None:
    """Wait (up to 10 s) for any ``fuse2fs`` still serving ``image`` to end."""
    needle = os.fsencode(image)
    for _ in range(1000):
        serving = False
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
                serving = serving or (bool(argv) and argv[0].endswith(b"fuse2fs") and needle in argv)
        if not serving:
            return
        time.sleep(0.01)


def recover_volume(storage_dir: Path) -> bool:
    """Bring back into ``storage_dir`` the storage an image still holds because the emulator that mounted it
    ended without closing it (killed outright).

    Returns:
        Whether there was an image to recover.

    Raises:
        DeviceError: the image cannot be read back (it stays).
    """
    volume = StorageVolume(storage_dir, 0)
    if not volume.image.exists():
        return False
    log.warning("%s: copying back what its filesystem kept (its emulator did not shut down)", storage_dir)
    unmount_volume(storage_dir)  # a fuse2fs that is still ending, or died without unmounting
    _wait_unused(volume.image)
    subprocess.run(["e2fsck", "-p", str(volume.image)], capture_output=True, check=False)
    volume._opened_ns = 0  # every file is copied: nothing says what changed
    volume._mount()
    volume.close()
    return True
