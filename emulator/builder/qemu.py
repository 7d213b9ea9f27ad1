"""qemu-user registered with binfmt_misc, so that this machine runs another CPU's programs (the device's).

The kernel hands an aarch64 ELF program to the interpreter registered for it in binfmt_misc. The
registration made here names Debian's statically linked ``qemu-aarch64-static`` (package
``qemu-user-static``) with the ``F`` (fix binary) flag: the kernel opens the interpreter when it is
registered, so it also works where the program's root filesystem has no qemu in it: a chroot while
debootstrap runs, a Docker build's ``RUN`` step, an app's bubblewrap sandbox (as root or as an ordinary user).

Registering needs root and lasts until the machine reboots; :func:`ensure_binfmt` does it when it runs as
root, and otherwise says in one sentence what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from emulator.builder.base_rootfs import BaseImageError
from emulator.device.arch import binfmt_handles

__all__ = [
    "BINFMT_DIR",
    "QEMU_PACKAGE",
    "binfmt_rule",
    "ensure_binfmt",
    "qemu_interpreter",
    "register_hint",
]

QEMU_PACKAGE = "qemu-user-static"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

# ELF header bytes and mask per machine, as qemu's scripts/qemu-binfmt-conf.sh has them (kernel escapes).
_MAGIC = {
    "aarch64": (
        r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    ),
}
_BIN_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))


def qemu_interpreter(machine: str) -> Path | None:
    """The statically linked qemu-user for ``machine`` (``/usr/bin/qemu-aarch64-static``), if installed.

    Args:
        machine: an ELF machine name (``aarch64``).

    Returns:
        Its path, or None.
    """
    for directory in _BIN_DIRS:
        candidate = directory / f"qemu-{machine}-static"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def binfmt_rule(machine: str, interpreter: Path | None = None) -> str:
    """The line written to ``/proc/sys/fs/binfmt_misc/register`` for ``machine``, with the F flag.

    Args:
        machine: an ELF machine name (``aarch64``).
        interpreter: the qemu to register; Debian's ``/usr/bin/qemu-<machine>-static`` by default.

    Returns:
        ``:qemu-aarch64:M::<magic>:<mask>:<interpreter>:F``.

    Raises:
        BaseImageError: a machine this module has no ELF magic for.
    """
    if machine not in _MAGIC:
        raise BaseImageError(f"no binfmt_misc rule for {machine} programs (known: {', '.join(_MAGIC)})")
    magic, mask = _MAGIC[machine]
    program = interpreter or Path(f"/usr/bin/qemu-{machine}-static")
    return f":qemu-{machine}:M::{magic}:{mask}:{program}:F"


def register_hint(machine: str) -> str:
    """One sentence saying how to make this machine run ``machine`` programs, for whoever is not root.

    Args:
        machine: an ELF machine name (``aarch64``).

    Returns:
        The sentence, naming the package and both ways to register it.
    """
    return (
        f"{machine} programs run here through qemu-user, which binfmt_misc does not hand them to with the F "
        f"flag: install it (sudo apt-get install {QEMU_PACKAGE}) and register it, which "
        "`sudo panorama-emulator base-image --arch arm64` does (once after each boot of this machine), or by "
        f"hand: sudo mount -t binfmt_misc binfmt_misc {BINFMT_DIR} (unless mounted), then "
        f"echo '{binfmt_rule(machine)}' | sudo tee {BINFMT_DIR}/register"
    )


def _mounted() -> bool:
    return (BINFMT_DIR / "register").exists()


def _write(path: Path, text: str) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(text)
    except OSError as error:
        raise BaseImageError(f"cannot write {path}: {error.strerror}") from None


def ensure_binfmt(machine: str) -> bool:
    """Make sure binfmt_misc hands ``machine`` programs to qemu-user with the F flag.

    Registered already: nothing is done. As root: mounts binfmt_misc if needed, replaces a registration
    without the F flag (or a disabled one) and registers Debian's static qemu.

    Args:
        machine: an ELF machine name (``aarch64``).

    Returns:
        True when this call registered it, False when it was registered already.

    Raises:
        BaseImageError: not root (with :func:`register_hint`), qemu-user-static not installed, or the
            kernel refused the registration.
    """
    if binfmt_handles(machine):
        return False
    if os.geteuid() != 0:
        raise BaseImageError(register_hint(machine))
    interpreter = qemu_interpreter(machine)
    if interpreter is None:
        raise BaseImageError(
            f"{QEMU_PACKAGE} is not installed, so {machine} programs cannot run here: "
            f"sudo apt-get install {QEMU_PACKAGE}"
        )
    if not _mounted():
        mount = shutil.which("mount") or "/bin/mount"
        done = subprocess.run(
            [mount, "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not _mounted():
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no register file"]
            raise BaseImageError(f"cannot mount binfmt_misc on {BINFMT_DIR}: {reason[0]}")
    entry = BINFMT_DIR / f"qemu-{machine}"
    if entry.exists():
        _write(entry, "-1")  # an entry without the F flag, or disabled: sandboxes cannot use it
    _write(BINFMT_DIR / "register", binfmt_rule(machine, interpreter))
    if not binfmt_handles(machine):
        raise BaseImageError(f"registered {interpreter} for {machine} programs, but {entry} does not say so")
    return True
