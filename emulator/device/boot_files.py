"""What a boot keeps or remakes in the device's state directory besides the store: the boot count and the
small ``/etc`` files that name the device inside its sandboxes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from emulator.errors import DeviceError

__all__ = ["BOOTS_FILE", "count_boot", "etc_files", "read_boot_count"]

BOOTS_FILE = "boots"


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
