"""Test support for sandbox tests: a small root filesystem made from the host's own Python.

The tree holds the host's python3 and its standard library plus the shared libraries they load,
hard-linked when the test directory is on the same filesystem as /usr (instant) and copied otherwise.
It is a real root filesystem for a real bwrap, without waiting for a Docker build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

MOUNT_POINTS = (
    "proc", "dev", "sys", "tmp", "var/tmp", "run", "dev/shm",
    "opt/aws/panorama/storage", "opt/aws/panorama/logs",
    "opt/panorama-emulator/sdk", "opt/panorama-emulator/run",
)  # fmt: skip


def _link_or_copy(source: str, dest: str) -> str:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
    return dest


def _shared_libraries(binary: Path) -> set[Path]:
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return set()
    found = set()
    for line in out.splitlines():
        match = re.search(r"(/\S+)", line)
        if match:
            found.add(Path(match.group(1)))
    return found


def _place(root: Path, host_file: Path) -> None:
    """Put ``host_file`` at the same path inside ``root`` (its real file, plus the path as a symlink)."""
    real = host_file.resolve()
    for path in {real, Path(os.path.realpath(host_file.parent)) / host_file.name}:
        dest = root / str(path).lstrip("/")
        if dest.exists() or dest.is_symlink():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path == real:
            _link_or_copy(str(real), str(dest))
        else:
            dest.symlink_to(real)


def make_host_rootfs(root: Path) -> Path:
    """Build a root filesystem at ``root`` that runs ``/usr/bin/python3`` (the host's system Python).

    Args:
        root: an empty or missing directory.

    Returns:
        ``root``.
    """
    python = Path(shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3").resolve()
    stdlib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    for top in ("bin", "lib", "lib64", "sbin"):
        host = Path("/") / top
        if host.is_symlink():
            (root / top).symlink_to(os.readlink(host))
    shutil.copytree(
        stdlib,
        root / str(stdlib).lstrip("/"),
        copy_function=_link_or_copy,
        symlinks=True,
        ignore=shutil.ignore_patterns("test", "idlelib", "tkinter", "__pycache__"),
    )
    binaries = [python, Path("/bin/sh").resolve()]
    for name in ("sleep", "cat", "true"):
        found = shutil.which(name, path="/usr/bin:/bin")
        if found:
            binaries.append(Path(found))
    libraries: set[Path] = set()
    for binary in binaries:
        libraries |= _shared_libraries(binary)
    for extension in (Path(stdlib) / "lib-dynload").glob("*.so"):
        libraries |= _shared_libraries(extension)
    for file in [*binaries, *libraries]:
        _place(root, file)
    usr_bin = root / "usr/bin"
    usr_bin.mkdir(parents=True, exist_ok=True)
    if not (usr_bin / "python3").exists():
        (usr_bin / "python3").symlink_to(python.name)
    if not (usr_bin / "sh").exists():
        (usr_bin / "sh").symlink_to(Path("/bin/sh").resolve())
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "resolv.conf").write_text("")
    (root / "root").mkdir(exist_ok=True)
    for point in MOUNT_POINTS:
        (root / point).mkdir(parents=True, exist_ok=True)
    return root
