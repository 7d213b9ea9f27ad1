"""Which CPU an app's root filesystem is built for, and whether this machine can run it.

The device is arm64. An arm64 rootfs runs on an x86_64 host only through qemu-user registered with
binfmt_misc with the ``F`` (fix binary) flag, which opens the interpreter at registration so that it works
inside a sandbox whose root does not contain qemu.
"""

from __future__ import annotations

import os
import platform
import posixpath
import re
from pathlib import Path

from emulator.errors import SandboxError

__all__ = [
    "ELF_MACHINES",
    "binfmt_entry_handles",
    "binfmt_handles",
    "check_architecture",
    "elf_machine",
    "find_program",
    "host_machine",
    "resolve_in_rootfs",
    "runs_emulated",
]

# ELF e_machine values of the architectures an app image may be built for.
ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
_QEMU_NAMES = {
    "aarch64": "qemu-aarch64",
    "arm": "qemu-arm",
    "x86_64": "qemu-x86_64",
    "i386": "qemu-i386",
    "riscv64": "qemu-riscv64",
}
_BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
_MAX_LINKS = 40
_VERSIONED_PYTHON = re.compile(r"(?:.*/)?python3\.\d+")


def host_machine() -> str:
    """This machine's architecture in ELF terms (``x86_64``, ``aarch64``)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "i686": "i386"}.get(machine, machine)


def resolve_in_rootfs(rootfs: Path, path: str) -> Path | None:
    """Resolve ``path`` as the app sees it with ``rootfs`` at ``/``, following symlinks inside the rootfs.

    Absolute link targets are taken relative to the rootfs and ``..`` never climbs above it.

    Args:
        rootfs: host directory of the root filesystem.
        path: an absolute path inside it.

    Returns:
        The host path of the final target, or None when it does not exist or the links loop.
    """
    parts = [part for part in path.split("/") if part and part != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if not candidate.exists():
            return None
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def find_program(rootfs: Path, program: str, search_path: str) -> Path | None:
    """Find ``program`` the way execvp would inside the rootfs.

    Args:
        rootfs: host directory of the root filesystem.
        program: ``entry.path`` from the descriptor: a name looked up on PATH, or a path.
        search_path: the PATH the app gets.

    Returns:
        The host path of the program's final target, or None when not found.
    """
    if "/" in program:
        return resolve_in_rootfs(rootfs, posixpath.join("/", program))
    for directory in search_path.split(":"):
        if not directory.startswith("/"):
            continue
        found = resolve_in_rootfs(rootfs, posixpath.join(directory, program))
        if found is not None and found.is_file():
            return found
    return None


def elf_machine(rootfs: Path, program: Path, depth: int = 0) -> str | None:
    """The architecture of an executable inside the rootfs; ``#!`` scripts are followed to their interpreter.

    Args:
        rootfs: host directory of the root filesystem.
        program: host path of the file (already resolved inside ``rootfs``).
        depth: interpreter nesting so far.

    Returns:
        The ELF machine name (``x86_64``, ``aarch64`` ...), ``"e_machine N"`` for an unknown one, or None
        when the file is neither ELF nor a script whose interpreter can be found.
    """
    try:
        with open(program, "rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if head[:4] == b"\x7fELF" and len(head) >= 20:
        raw = head[18:20]
        number = int.from_bytes(raw, "little") if head[5] == 1 else int.from_bytes(raw, "big")
        return ELF_MACHINES.get(number, f"e_machine {number}")
    if head[:2] == b"#!" and depth < 4:
        words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
        if not words:
            return None
        interpreter = resolve_in_rootfs(rootfs, words[0])
        if interpreter is not None and words[0].endswith("/env") and len(words) > 1:
            interpreter = find_program(rootfs, words[1], "/usr/local/bin:/usr/bin:/bin")
        return elf_machine(rootfs, interpreter, depth + 1) if interpreter is not None else None
    return None


def binfmt_handles(machine: str) -> bool:
    """Whether binfmt_misc runs ``machine`` binaries through qemu, with the F flag that sandboxes need.

    Args:
        machine: an ELF machine name.

    Returns:
        True when ``/proc/sys/fs/binfmt_misc/qemu-<machine>`` is enabled with flag F.
    """
    name = _QEMU_NAMES.get(machine)
    return name is not None and binfmt_entry_handles(_BINFMT_DIR / name)


def binfmt_entry_handles(entry: Path) -> bool:
    """Whether a binfmt_misc entry file says enabled, with the F flag.

    Args:
        entry: such as ``/proc/sys/fs/binfmt_misc/qemu-aarch64``.

    Returns:
        True when it exists, is enabled and has flag F.
    """
    try:
        text = entry.read_text()
    except OSError:
        return False
    lines = text.splitlines()
    enabled = bool(lines) and lines[0].strip() == "enabled"
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    return enabled and "F" in flags


def runs_emulated(machine: str | None) -> bool:
    """Whether programs of ``machine`` run here through qemu-user rather than on this CPU.

    Args:
        machine: what :func:`check_architecture` returned (``aarch64``, ``x86_64``, ``unknown``...).

    Returns:
        True for a known architecture other than the host's (and other than i386 on an x86_64 host).
    """
    host = host_machine()
    if machine in (None, "unknown", host) or (host == "x86_64" and machine == "i386"):
        return False
    return machine in _QEMU_NAMES


def check_architecture(rootfs: Path, program: str, search_path: str, *, node: str | None = None) -> str:
    """Check that the entry program exists in the rootfs and that this machine can run it.

    Args:
        rootfs: host directory of the root filesystem.
        program: ``entry.path`` from the descriptor.
        search_path: the PATH the app gets.
        node: the node concerned, for the error message.

    Returns:
        The rootfs's architecture (``x86_64``, ``aarch64``); ``"unknown"`` when the entry is not ELF.

    Raises:
        SandboxError: the program is not in the rootfs, or it is built for another CPU and qemu-user is not
            registered to run it.
    """
    found = find_program(rootfs, program, search_path)
    if found is None:
        hint = ""
        if _VERSIONED_PYTHON.fullmatch(program) and find_program(rootfs, "python3", search_path):
            hint = (
                "; the image has python3: build the asset again FROM the current offline stand-in "
                "(panorama-emulator base-image, then build-container), which answers to python3.8 and "
                "python3.7, or set entry.path to python3"
            )
        raise SandboxError(
            f"descriptor entry.path {program!r} is not in the app's root filesystem (PATH={search_path})"
            + hint,
            node=node,
        )
    machine = elf_machine(rootfs, found)
    host = host_machine()
    if machine is None or machine == host:
        return machine or "unknown"
    if host == "x86_64" and machine == "i386":
        return machine
    if binfmt_handles(machine):
        return machine
    registered = (_BINFMT_DIR / _QEMU_NAMES[machine]).exists() if machine in _QEMU_NAMES else False
    why = "is registered without the F flag sandboxes need" if registered else "is not registered"
    raise SandboxError(
        f"the app's root filesystem is built for {machine} and this machine is {host}, where qemu-user "
        f"{why}: install qemu-user-static (sudo apt-get install qemu-user-static) and run "
        "`sudo panorama-emulator base-image --arch arm64`, which registers it with binfmt_misc (flag F)",
        node=node,
    )
