"""What a boot keeps or remakes in the device's state directory besides the store: the boot count, the
shared-memory directory and the small ``/etc`` files that name the device inside its sandboxes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from emulator.errors import DeviceError

__all__ = ["BOOTS_FILE", "count_boot", "etc_files", "read_boot_count", "remove_dir", "reset_shm_dir"]

BOOTS_FILE = "boots"
_SHM_ROOT = Path("/dev/shm")


def read_boot_count(device_root: Path) -> int:
    """How many times the device has booted (0 when it never has).

    Args:
        device_root: the device's directory (``<state>/devices/<device>``).
    """
    try:
        return int((device_root / BOOTS_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def count_boot(device_root: Path) -> int:
    """Add one to the boot count, durably (written, fsync'ed, renamed, directory fsync'ed).

    Args:
        device_root: the device's directory.

    Returns:
        The number of this boot.

    Raises:
        DeviceError: the count cannot be written.
    """
    number = read_boot_count(device_root) + 1
    path = device_root / BOOTS_FILE
    try:
        device_root.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=device_root, prefix=".boots.")
        with os.fdopen(fd, "w") as file:
            file.write(f"{number}\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory = os.open(device_root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise DeviceError(f"cannot record the boot count: {error.strerror}", file=str(path)) from None
    return number


def remove_dir(path: Path) -> None:
    """Remove a directory tree if it exists."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def reset_shm_dir(device_root: Path, run_dir: Path) -> Path:
    """Remove and recreate the device's shared-memory directory (frame slots), as at every boot.

    It lives under /dev/shm (memory, like the device's) with a name fixed per user and device, so that the
    next boot finds and removes what a killed emulator left; without a writable /dev/shm, in ``run_dir``.

    Args:
        device_root: the device's directory.
        run_dir: the device's run directory.

    Returns:
        The empty directory.

    Raises:
        DeviceError: it cannot be created.
    """
    key = hashlib.sha256(str(device_root.resolve()).encode()).hexdigest()[:16]
    if _SHM_ROOT.is_dir() and os.access(_SHM_ROOT, os.W_OK):
        shm_dir = _SHM_ROOT / f"panorama-emulator-{os.geteuid()}-{key}"
    else:
        shm_dir = run_dir / "shm"
    remove_dir(shm_dir)
    try:
        shm_dir.mkdir(mode=0o700, parents=True)
    except OSError as error:
        raise DeviceError(
            f"cannot create the shared memory directory: {error.strerror}", file=str(shm_dir)
        ) from None
    return shm_dir


def etc_files(device_root: Path, hostname: str) -> dict[str, Path]:
    """Write ``/etc/hostname`` and ``/etc/hosts`` naming the device; add the host's resolver configuration.

    Args:
        device_root: the device's directory (the files go to its ``etc/``).
        hostname: the device name.

    Returns:
        Sandbox path -> host file, to bind read-only over the rootfs's (empty) files of the same name.

    Raises:
        DeviceError: the files cannot be written.
    """
    etc = device_root / "etc"
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hostname").write_text(f"{hostname}\n")
        (etc / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
    except OSError as error:
        raise DeviceError(f"cannot write the device's /etc files: {error.strerror}", file=str(etc)) from None
    files = {"/etc/hostname": etc / "hostname", "/etc/hosts": etc / "hosts"}
    resolv = Path("/etc/resolv.conf").resolve()
    if resolv.is_file():
        files["/etc/resolv.conf"] = resolv
    return files
