"""The cached Debian rootfs of the stand-in base image: debootstrap, headless OpenCV, trimming, tarball.

``rootfs_tarball`` returns ``<cache>/rootfs-<recipe>.tar.gz`` (and the Debian, Python, NumPy and OpenCV
versions found in it), running debootstrap only when no tarball of the current recipe is cached. Making one
needs root and ``debootstrap``; importing and configuring it is :mod:`emulator.builder.base_image`'s business.

A rootfs for another architecture (``arm64`` on an x86_64 host: the device's) is made the same way,
``debootstrap --arch``, its programs run through qemu-user registered with binfmt_misc (see
:mod:`emulator.builder.qemu`), and cached as ``<cache>/rootfs-<arch>-<recipe>.tar.gz`` beside the host's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from isal import igzip
from rich.console import Console
from rich.progress import Progress

from emulator.errors import BuildError

__all__ = [
    "DEBIAN_PACKAGES",
    "DEBIAN_PYTHON",
    "DEBIAN_SUITE",
    "OPENCV_REQUIREMENT",
    "RECIPE_VERSION",
    "BaseImageError",
    "cache_dir",
    "debian_arch",
    "debian_mirror",
    "elf_machine_of",
    "recipe_key",
    "rootfs_tarball",
    "target_arch",
]

RECIPE_VERSION = "1"
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = "3.11"
DEBIAN_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "libgl1",
    "libglib2.0-0",
    "libsm6",
    "libxext6",
    "libxrender1",
    "python3",
    "python3-numpy",
    "python3-pip",
)
# 4.12 and later need NumPy 2, while Debian 12 ships NumPy 1.24 (the real image has 1.24.3).
OPENCV_REQUIREMENT = "opencv-python-headless==4.11.0.86"

DEFAULT_MIRROR = "http://deb.debian.org/debian"
_DEBIAN_CODENAMES = frozenset(
    ("bookworm", "bullseye", "trixie", "forky", "sid", "stable", "oldstable", "testing", "unstable")
)
# debootstrap lives in /usr/sbin, which is not on a normal user's PATH.
_DEBOOTSTRAP_FALLBACKS = (Path("/usr/sbin/debootstrap"), Path("/sbin/debootstrap"))
# Debian architecture -> ELF machine (PyPI's wheel platform tags and uname -m use the latter).
_ELF_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
_CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Removed after debootstrap (globs): package caches, indexes, logs, documentation and translations nothing
# reads at run time. Copyright files, glibc's locale.alias and apt's directories stay.
_TRIM = (
    "tmp/*",
    "usr/share/doc/*/*",
    "usr/share/info/*",
    "usr/share/locale/*/",
    "usr/share/man/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*",
    "var/log/**/*",
)


class BaseImageError(BuildError):
    """The stand-in base image cannot be built (missing tool, no root for debootstrap, failed step)."""


def cache_dir() -> Path:
    """Return the cache directory: ``$PANORAMA_EMULATOR_CACHE``, else ``~/.cache/panorama-emulator``.

    Returns:
        The directory (not created here).
    """
    env = os.environ.get("PANORAMA_EMULATOR_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "panorama-emulator"


def debian_arch() -> str:
    """Return the host's architecture in Debian's words (``amd64``, ``arm64``...): the rootfs's architecture.

    Returns:
        The Debian architecture name, or ``platform.machine()`` when there is no mapping.
    """
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}.get(machine, machine)


def target_arch(arch: str = "host") -> str:
    """Return the Debian architecture a stand-in is built for.

    Args:
        arch: ``host`` (this machine's) or a Debian architecture name such as ``arm64``.

    Returns:
        The Debian architecture name (``amd64``, ``arm64``...).

    Raises:
        BaseImageError: an architecture the stand-in is not made for.
    """
    if arch == "host":
        return debian_arch()
    if arch not in _ELF_MACHINES:
        known = ", ".join(sorted(_ELF_MACHINES))
        raise BaseImageError(f"the stand-in cannot be built for {arch!r}: use host or one of {known}")
    return arch


def elf_machine_of(arch: str) -> str:
    """Return the ELF (``uname -m``) name of a Debian architecture: ``arm64`` -> ``aarch64``.

    Args:
        arch: a Debian architecture name.

    Returns:
        The machine name; the argument itself when there is no mapping.
    """
    return _ELF_MACHINES.get(arch, arch)


def recipe_key(arch: str | None = None) -> str:
    """Return the key of the rootfs recipe: it changes whenever the cached tarball would differ.

    Args:
        arch: the rootfs's Debian architecture; the host's by default.

    Returns:
        16 hex digits.
    """
    recipe = {
        "version": RECIPE_VERSION,
        "suite": DEBIAN_SUITE,
        "packages": DEBIAN_PACKAGES,
        "opencv": OPENCV_REQUIREMENT,
        "arch": arch or debian_arch(),
        "trim": _TRIM,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _is_debian_suite(suite: str) -> bool:
    pocket = suite.endswith(("-security", "-updates", "-backports"))
    return suite.split("-")[0] in _DEBIAN_CODENAMES and not pocket


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """Return the Debian mirror the host's apt is configured with.

    ``$PANORAMA_EMULATOR_DEBIAN_MIRROR`` wins; then the first ``deb`` source of a Debian release suite in
    ``sources.list.d/*.sources`` (deb822) or ``sources.list`` / ``sources.list.d/*.list``; else
    deb.debian.org.

    Args:
        apt_dir: the apt configuration directory (``/etc/apt``).

    Returns:
        The mirror URI, without a trailing slash.
    """
    env = os.environ.get("PANORAMA_EMULATOR_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    for source in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for stanza in source.read_text().split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.strip() and not line.lstrip().startswith("#") and ":" in line and line[0] != " ":
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                    suites = fields.get("suites", "").split()
                    uris = fields.get("uris", "").split()
                    if uris and any(_is_debian_suite(suite) for suite in suites):
                        return uris[0].rstrip("/")
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for source in lists:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in source.read_text().splitlines():
                words = [word for word in line.split("#")[0].split() if word]
                if words[:1] != ["deb"]:
                    continue
                words = words[1:]
                if words and words[0].startswith("["):
                    while words and not words[0].endswith("]"):
                        words.pop(0)
                    words = words[1:]
                if len(words) >= 2 and _is_debian_suite(words[1]):
                    return words[0].rstrip("/")
    return DEFAULT_MIRROR


def _run(
    command: list[str], what: str, *, env: dict[str, str] | None = None, on_line: Any = None
) -> list[str]:
    """Run a host command, feeding its output lines to ``on_line``; BaseImageError and its tail on failure."""
    tail: list[str] = []
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        )
    except OSError as error:
        raise BaseImageError(f"{what}: cannot run {command[0]}: {error.strerror}") from None
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.rstrip()
        if line:
            tail = [*tail[-19:], line]
            if on_line is not None:
                on_line(line)
    if process.wait() != 0:
        last = next((line for line in reversed(tail) if line.startswith("E:")), tail[-1] if tail else "")
        raise BaseImageError(f"{what} failed (exit {process.returncode}): {last}", step=what, log_tail=tail)
    return tail


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts /proc and /sys in its target while it runs)."""
    prefix = str(path.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    mounts = _mounts_under(path)
    if mounts:
        raise BaseImageError(f"{path} still has mounts ({', '.join(mounts)}): unmount them, then remove it")
    shutil.rmtree(path, ignore_errors=True)


def _download_opencv(wheels: Path, console: Console, machine: str) -> Path:
    """Fetch the headless OpenCV wheel for the image's Python and CPU with the host's pip and its settings."""
    name = OPENCV_REQUIREMENT.split("==")[0].replace("-", "_")
    version = OPENCV_REQUIREMENT.split("==")[1]
    pattern = f"{name}-{version}-*_{machine}.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    console.print(f"fetching {OPENCV_REQUIREMENT} ({machine}) with the host's pip", soft_wrap=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check",
        "--platform", f"manylinux2014_{machine}", "--python-version", DEBIAN_PYTHON,
        "--implementation", "cp", "-d", str(wheels), OPENCV_REQUIREMENT,
    ]  # fmt: skip
    _run(command, f"pip download {OPENCV_REQUIREMENT}")
    found = sorted(wheels.glob(pattern))
    if not found:
        raise BaseImageError(f"pip download {OPENCV_REQUIREMENT} left no wheel in {wheels}")
    return found[0]


def _chroot(root: Path, command: list[str], what: str) -> list[str]:
    # A clean environment: the host's PIP_* settings (local wheel folders, ...) mean nothing inside.
    env = {"PATH": _CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    return _run(["chroot", str(root), *command], what, env=env)


def _debootstrap(root: Path, mirror: str, progress: Progress, arch: str | None = None) -> None:
    arch = arch or debian_arch()
    exe = shutil.which("debootstrap") or next((str(p) for p in _DEBOOTSTRAP_FALLBACKS if p.exists()), None)
    if exe is None:
        raise BaseImageError("debootstrap is not installed: apt-get install debootstrap")
    task = progress.add_task(f"debootstrap {DEBIAN_SUITE} ({arch})", total=None)
    command = [
        exe, "--variant=minbase", "--components=main", f"--arch={arch}",
        "--include=" + ",".join(DEBIAN_PACKAGES), DEBIAN_SUITE, str(root), mirror,
    ]  # fmt: skip

    def on_line(line: str) -> None:
        if line.startswith(("I: ", "W: ")):
            progress.update(task, description=f"debootstrap: {line[3:][:70]}")

    _run(command, f"debootstrap {DEBIAN_SUITE} from {mirror}", on_line=on_line)
    progress.update(task, description=f"debootstrap {DEBIAN_SUITE}: done", total=1, completed=1)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _trim(root: Path) -> None:
    """Remove what :data:`_TRIM` names, keeping copyright files and directories under var/log."""
    for pattern in _TRIM:
        for path in sorted(root.glob(pattern), reverse=True):
            is_dir = path.is_dir() and not path.is_symlink()
            if path.name == "copyright" or (pattern.endswith("/") and not is_dir):
                continue
            if pattern.startswith("var/log/") and is_dir:
                continue
            if path.is_symlink() or path.exists():
                _remove(path)


def _finish_rootfs(root: Path, wheel: Path) -> dict[str, str]:
    """Install headless OpenCV, allow system-wide pip, add the Panorama paths, trim; return the versions."""
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    shutil.copy2(wheel, root / "tmp" / wheel.name)
    _chroot(
        root,
        ["python3", "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--no-warn-script-location", f"/tmp/{wheel.name}"],
        f"pip install {wheel.name} into the rootfs",
    )  # fmt: skip
    probe = (
        "import sys, numpy, cv2; print(sys.version.split()[0], numpy.__version__, cv2.__version__, "
        "open('/etc/debian_version').read().strip())"
    )
    last = _chroot(root, ["python3", "-c", probe], "import cv2, numpy")[-1]
    python, numpy_version, opencv, debian = last.split()
    for directory in ("opt/aws/panorama/storage", "opt/aws/panorama/logs"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    _trim(root)
    (root / "tmp").chmod(0o1777)
    return {"python": python, "numpy": numpy_version, "opencv": opencv, "debian": debian}


def _tar_rootfs(root: Path, dest: Path, progress: Progress) -> None:
    """Write ``root`` as a gzip'ed tarball (numeric owners, no device nodes) to ``dest`` atomically."""
    entries: list[Path] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        relative = base.relative_to(root)
        if relative.parts[:1] in (("dev",), ("proc",), ("sys",)):
            dirnames.clear()  # mount points: the engine provides them
            continue
        entries.extend(base / name for name in [*dirnames, *sorted(filenames)])
    task = progress.add_task("packing the rootfs", total=len(entries))

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
            return None
        info.uname = info.gname = ""
        return info

    partial = dest.with_name(dest.name + ".partial")
    try:
        raw_file = igzip.open(partial, "wb", compresslevel=1)  # type: ignore[no-untyped-call]
        with raw_file as raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for count, path in enumerate(entries, 1):
                archive.add(str(path), arcname=str(path.relative_to(root)), recursive=False, filter=clean)
                if count % 200 == 0:
                    progress.update(task, completed=count)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    progress.update(task, completed=len(entries))


def _tarball_name(arch: str, key: str) -> str:
    """``rootfs-<key>.tar.gz`` for the host's architecture, ``rootfs-<arch>-<key>.tar.gz`` for another."""
    return f"rootfs-{key}.tar.gz" if arch == debian_arch() else f"rootfs-{arch}-{key}.tar.gz"


def _stale_tarballs(cache: Path, arch: str, keep: Path) -> list[Path]:
    """Cached tarballs of older recipes for the same architecture (other architectures' are kept)."""
    prefix = "rootfs-" if arch == debian_arch() else f"rootfs-{arch}-"
    found = []
    for path in cache.glob(prefix + "*.tar.gz"):
        key = path.name[len(prefix) : -len(".tar.gz")]
        if path != keep and len(key) == 16 and all(c in "0123456789abcdef" for c in key):
            found.append(path)
    return found


def rootfs_tarball(
    cache: Path, console: Console, progress: Progress, *, arch: str | None = None
) -> tuple[Path, dict[str, str]]:
    """Return the cached rootfs tarball of the current recipe, making it with debootstrap if absent.

    Args:
        cache: the cache directory (it holds ``rootfs-[<arch>-]<recipe>.tar.gz``, ``.json`` and ``wheels/``).
        console: where one-line messages go.
        progress: the progress display the steps add their tasks to.
        arch: the Debian architecture (``arm64``); the host's by default. Another architecture than the
            host's needs qemu-user registered with binfmt_misc (:func:`emulator.builder.qemu.ensure_binfmt`).

    Returns:
        The tarball's path and the versions found in it (``debian``, ``python``, ``numpy``, ``opencv``).

    Raises:
        BaseImageError: not root, debootstrap missing, or a step failed (with the step's last lines).
    """
    arch = arch or debian_arch()
    key = recipe_key(arch)
    tarball = cache / _tarball_name(arch, key)
    meta = tarball.with_suffix("").with_suffix(".json")
    if tarball.is_file() and meta.is_file():
        with contextlib.suppress(OSError, ValueError):
            versions = json.loads(meta.read_text())
            if isinstance(versions, dict):
                return tarball, {str(k): str(v) for k, v in versions.items()}
    flag = "" if arch == debian_arch() else f" --arch {arch}"
    if os.geteuid() != 0:
        raise BaseImageError(
            f"debootstrap needs root: run `sudo panorama-emulator base-image{flag}` once "
            f"(no cached {arch} rootfs in {cache})"
        )
    mirror = debian_mirror()
    console.print(
        f"building the Debian {DEBIAN_SUITE} {arch} rootfs from {mirror} (cached in {cache})", soft_wrap=True
    )
    wheel = _download_opencv(cache / "wheels", console, elf_machine_of(arch))
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
    try:
        root = work / "root"
        _debootstrap(root, mirror, progress, arch)
        task = progress.add_task("installing headless OpenCV", total=None)
        versions = _finish_rootfs(root, wheel)
        progress.update(task, total=1, completed=1)
        _tar_rootfs(root, tarball, progress)
        meta.write_text(json.dumps(versions, indent=2) + "\n")
    finally:
        _remove_tree(work)
    for stale in _stale_tarballs(cache, arch, tarball):
        stale.unlink(missing_ok=True)
        stale.with_suffix("").with_suffix(".json").unlink(missing_ok=True)
    return tarball, versions
