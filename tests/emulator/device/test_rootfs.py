"""The rootfs unpacker: safe against hostile tarballs, atomic, reused, faithful to the archive."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _tar_helpers import (
    MTIME,
    Place,
    Spec,
    device,
    directory,
    fifo,
    file,
    hardlink,
    make_place,
    symlink,
    tree,
    use_writers,
)
from rich.console import Console

from emulator.device import rootfs
from emulator.device._extract import Extractor
from emulator.device.rootfs import MOUNT_POINTS, is_unpacked, remove_tree, unpack_asset
from emulator.errors import AssetError

IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture(params=[1, 4], ids=["1-writer", "4-writers"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a test with files written by the member loop itself, and by writer threads."""
    return use_writers(monkeypatch, int(request.param))


# -- a faithful extraction ---------------------------------------------------------------------------------

BIG = os.urandom(3 * (1 << 20) + 123)


def realistic_specs() -> list[Spec]:
    return [
        directory("usr/", 0o755, mtime=MTIME + 1),
        directory("usr/bin/", 0o755, mtime=MTIME + 2),
        file("usr/bin/python3.8", b"\x7fELF fake interpreter", 0o755, mtime=MTIME + 3),
        symlink("usr/bin/python3", "/usr/bin/python3.8", mtime=MTIME + 4),
        symlink("usr/bin/python", "python3"),
        symlink("lib", "usr/lib"),
        file("usr/lib/python3.8/os.py", b"import sys\n" * 100, 0o644, mtime=MTIME + 5),
        file("usr/lib/python3.8/group-writable.py", b"x", 0o664),
        file("usr/lib/python3.8/private", b"secret", 0o600),
        file("usr/lib/python3.8/read-only", b"ro", 0o444),
        file("usr/lib/python3.8/empty", b""),
        file("usr/lib/python3.8/block", b"b" * 512),
        file("usr/lib/python3.8/mebibyte", b"m" * (1 << 20)),
        file("usr/share/big.bin", BIG, 0o644),
        hardlink("usr/share/big-link.bin", "usr/share/big.bin"),
        file("usr/share/" + "long-name-" * 20 + ".txt", b"long", 0o644),
        file("usr/share/" + "deep/" * 40 + "leaf", b"deep"),
        file("usr/share/naïve-ünïcode.txt", "ünïcode".encode()),
        directory("etc/", 0o755),
        directory("etc/alternatives/", 0o755),
        symlink("etc/alternatives/python", "/usr/bin/python3.8"),
        directory("root/", 0o700),
        directory("srv/ro/", 0o555, mtime=MTIME + 6),
        file("srv/ro/inside", b"in a read-only dir", 0o644),
        file("./panorama/app.py", b"print('hello')\n", 0o644),
        file("opt/aws/panorama/storage/.keep", b""),
    ]


def check_realistic(root: Path) -> None:
    bin_dir = root / "usr/bin"
    assert (bin_dir / "python3.8").read_bytes() == b"\x7fELF fake interpreter"
    assert stat.S_IMODE((bin_dir / "python3.8").stat().st_mode) == 0o755
    assert (bin_dir / "python3.8").stat().st_mtime == MTIME + 3
    assert os.readlink(bin_dir / "python3") == "/usr/bin/python3.8"  # absolute symlinks are kept as they are
    assert (bin_dir / "python3").lstat().st_mtime == MTIME + 4
    assert os.readlink(bin_dir / "python") == "python3"
    assert os.readlink(root / "lib") == "usr/lib"
    lib = root / "usr/lib/python3.8"
    assert (lib / "os.py").read_bytes() == b"import sys\n" * 100
    assert (lib / "os.py").stat().st_mtime == MTIME + 5
    assert stat.S_IMODE((lib / "group-writable.py").stat().st_mode) == 0o664
    assert stat.S_IMODE((lib / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((lib / "read-only").stat().st_mode) == 0o444
    assert (lib / "empty").read_bytes() == b""
    assert (lib / "block").read_bytes() == b"b" * 512
    assert (lib / "mebibyte").read_bytes() == b"m" * (1 << 20)
    assert stat.S_IMODE(lib.stat().st_mode) == 0o755  # implicit parents
    share = root / "usr/share"
    assert (share / "big.bin").read_bytes() == BIG
    assert (share / "big-link.bin").stat().st_ino == (share / "big.bin").stat().st_ino
    assert (share / ("long-name-" * 20 + ".txt")).read_bytes() == b"long"
    assert (share / ("deep/" * 40) / "leaf").read_bytes() == b"deep"
    assert (share / "naïve-ünïcode.txt").read_text() == "ünïcode"
    assert os.readlink(root / "etc/alternatives/python") == "/usr/bin/python3.8"
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "srv/ro").stat().st_mode) == 0o555
    assert (root / "srv/ro").stat().st_mtime == MTIME + 6
    assert (root / "srv/ro/inside").read_bytes() == b"in a read-only dir"
    assert (root / "usr").stat().st_mtime == MTIME + 1
    assert (root / "usr/bin").stat().st_mtime == MTIME + 2
    assert (root / "panorama/app.py").read_bytes() == b"print('hello')\n"
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_unpacks_a_realistic_tree_faithfully(place: Place, fmt: int, writers: int) -> None:
    archive = place.archive(realistic_specs(), fmt=fmt)
    assert unpack_asset(archive, place.dest, progress=False) == place.dest
    check_realistic(place.dest)
    assert is_unpacked(place.dest)


def test_unpacks_ustar_and_uncompressed_archives(place: Place) -> None:
    specs = [file("a/b.txt", b"ustar", 0o640), symlink("a/c", "b.txt"), directory("d/", 0o750)]
    archive = place.archive(specs, name="plain.tar", fmt=tarfile.USTAR_FORMAT, compress=False)
    unpack_asset(archive, place.dest, progress=False)
    assert (place.dest / "a/b.txt").read_bytes() == b"ustar"
    assert stat.S_IMODE((place.dest / "a/b.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((place.dest / "d").stat().st_mode) == 0o750


def test_pax_fractional_mtime_and_later_duplicates_win(place: Place, writers: int) -> None:
    specs = [
        file("f", b"first"),
        file("f", b"second", mtime=MTIME + 0.5),
        symlink("s", "/x"),
        file("s", b"file"),
        directory("d/"),
        file("d", b"was an empty directory"),
    ]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    assert (place.dest / "f").read_bytes() == b"second"
    assert (place.dest / "f").stat().st_mtime_ns == (MTIME * 10**9) + 500_000_000
    assert not (place.dest / "s").is_symlink()
    assert (place.dest / "s").read_bytes() == b"file"
    assert (place.dest / "d").read_bytes() == b"was an empty directory"


def test_creates_mount_points(place: Place) -> None:
    specs = [
        directory("tmp/", 0o1777),
        symlink("dev/shm", "/run/shm"),  # older Debian images; replaced by the directory the sandbox needs
        file("run", b"not a directory"),
        file("usr/bin/true", b"", 0o755),
    ]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    for mount_point in MOUNT_POINTS:
        path = place.dest / mount_point
        assert path.is_dir() and not path.is_symlink(), mount_point
    assert stat.S_IMODE((place.dest / "tmp").stat().st_mode) == 0o777  # the sticky bit dropped, mode kept
    assert stat.S_IMODE((place.dest / "opt/aws/panorama/storage").stat().st_mode) == 0o755


def test_mount_points_can_be_left_out(place: Place) -> None:
    unpack_asset(place.archive([file("model.onnx", b"onnx")]), place.dest, progress=False, mount_points=())
    assert sorted(os.listdir(place.dest)) == ["model.onnx"]


def test_a_mount_point_under_a_symlink_is_an_error(place: Place) -> None:
    archive = place.archive([symlink("opt", "/usr/opt")])
    with pytest.raises(AssetError, match=r"mount point /opt/aws/panorama/storage cannot be created: /opt"):
        unpack_asset(archive, place.dest, progress=False)
    assert not place.dest.exists()


def test_device_nodes_and_fifos_are_skipped(place: Place) -> None:
    specs = [
        device("dev/null"),
        device("dev/sda", tarfile.BLKTYPE, 8, 0),
        fifo("run/initctl"),
        hardlink("dev/null-again", "dev/null"),
        file("etc/hostname", b"device\n"),
    ]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    assert (place.dest / "etc/hostname").read_bytes() == b"device\n"
    assert os.listdir(place.dest / "dev") == ["shm"]  # only the mount point
    assert not (place.dest / "run/initctl").exists()
    marker = (place.rootfs_root / ".r1.complete").read_text()
    assert '"skipped": 4' in marker and "dev/null" in marker


def test_setuid_setgid_and_sticky_bits_are_dropped(place: Place) -> None:
    specs = [
        file("usr/bin/su", b"su", 0o4755),
        file("usr/bin/wall", b"wall", 0o2755),
        file("usr/bin/both", b"both", 0o6711),
        directory("var/mail/", 0o2775),
        directory("scratch/", 0o1777),
    ]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    assert stat.S_IMODE((place.dest / "usr/bin/su").stat().st_mode) == 0o755
    assert stat.S_IMODE((place.dest / "usr/bin/wall").stat().st_mode) == 0o755
    assert stat.S_IMODE((place.dest / "usr/bin/both").stat().st_mode) == 0o711
    assert stat.S_IMODE((place.dest / "var/mail").stat().st_mode) == 0o775
    assert stat.S_IMODE((place.dest / "scratch").stat().st_mode) == 0o777


def test_ownership_is_kept_as_root_and_ignored_otherwise(place: Place) -> None:
    specs = [file("home/app/data", b"d", uid=1234, gid=5678), directory("home/app/", uid=1234, gid=5678)]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    owner = (place.dest / "home/app/data").stat()
    folder = (place.dest / "home/app").stat()
    if IS_ROOT:
        assert (owner.st_uid, owner.st_gid) == (1234, 5678)
        assert (folder.st_uid, folder.st_gid) == (1234, 5678)
    else:
        assert owner.st_uid == os.geteuid()


# -- once, atomically --------------------------------------------------------------------------------------


def test_a_second_call_reuses_the_rootfs(place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = place.archive(realistic_specs())
    unpack_asset(archive, place.dest, progress=False)
    inode = place.dest.stat().st_ino
    (place.dest / "sentinel").write_text("kept")

    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("extracted again")

    monkeypatch.setattr(Extractor, "extract", explode)
    assert unpack_asset(archive, place.dest, progress=False) == place.dest
    assert place.dest.stat().st_ino == inode
    assert (place.dest / "sentinel").read_text() == "kept"


def test_an_exception_midway_leaves_nothing_that_looks_complete(
    place: Place, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    archive = place.archive(realistic_specs())
    original = Extractor._file
    calls = 0

    def failing(self: Extractor, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("power cut")
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Extractor, "_file", failing)
    with pytest.raises(RuntimeError, match="power cut"):
        unpack_asset(archive, place.dest, progress=False)
    assert not is_unpacked(place.dest) and not place.dest.exists()
    assert [name for name in os.listdir(place.rootfs_root) if not name.endswith(".lock")] == []
    monkeypatch.setattr(Extractor, "_file", original)
    unpack_asset(archive, place.dest, progress=False)
    check_realistic(place.dest)


def test_a_rootfs_renamed_but_without_its_marker_is_redone(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = place.archive(realistic_specs())

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rootfs, "_write_marker", killed)
    with pytest.raises(KeyboardInterrupt):
        unpack_asset(archive, place.dest, progress=False)
    assert place.dest.is_dir() and not is_unpacked(place.dest)
    (place.dest / "sentinel").write_text("stale")
    monkeypatch.undo()
    unpack_asset(archive, place.dest, progress=False)
    assert is_unpacked(place.dest) and not (place.dest / "sentinel").exists()
    check_realistic(place.dest)


KILLED_CHILD = """
import sys, time
from pathlib import Path
from emulator.device._extract import Extractor
from emulator.device.rootfs import unpack_asset

flag = Path(sys.argv[3])
original = Extractor._file
count = 0

def slow(self, *args):
    global count
    original(self, *args)
    count += 1
    if count == 20:
        flag.write_text("half-way")
        time.sleep(600)

Extractor._file = slow
unpack_asset(Path(sys.argv[1]), Path(sys.argv[2]), progress=False)
"""


def test_a_sigkilled_unpack_is_cleaned_up_by_the_next_call(place: Place) -> None:
    archive = place.archive([file(f"dir/f{i:03}", os.urandom(1000)) for i in range(100)])
    flag = place.base / "flag"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(archive), str(place.dest), str(flag)], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), "the unpacking child never got half-way"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    partials = [name for name in os.listdir(place.rootfs_root) if name.startswith(".partial-")]
    assert len(partials) == 1 and not place.dest.exists() and not is_unpacked(place.dest)
    unpack_asset(archive, place.dest, progress=False)
    assert is_unpacked(place.dest) and len(os.listdir(place.dest / "dir")) == 100
    assert [name for name in os.listdir(place.rootfs_root) if name.startswith(".partial-")] == []


def test_stale_partials_of_other_assets_are_removed_unless_in_use(place: Place) -> None:
    stale = place.rootfs_root / ".partial-other-0000aaaa"
    busy = place.rootfs_root / ".partial-busy-0000bbbb"
    for partial in (stale, busy):
        (partial / "sub").mkdir(parents=True)
        (partial / "sub/file").write_text("x")
    with rootfs._locked(place.rootfs_root / ".busy.lock"):
        unpack_asset(place.archive([file("a", b"a")]), place.dest, progress=False)
    assert not stale.exists() and busy.exists()


def test_concurrent_calls_unpack_once(place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = place.archive(realistic_specs())
    original = Extractor.extract
    extractions = 0

    def counting(self: Extractor, stream: object) -> None:
        nonlocal extractions
        extractions += 1
        time.sleep(0.2)
        original(self, stream)  # type: ignore[arg-type]

    monkeypatch.setattr(Extractor, "extract", counting)
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(unpack_asset(archive, place.dest, progress=False))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [place.dest] * 3 and extractions == 1
    check_realistic(place.dest)


def test_remove_tree_removes_read_only_directories(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "a/b").mkdir(parents=True)
    (top / "a/b/file").write_text("x")
    (top / "a/link").symlink_to(tmp_path / "keep")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/precious").write_text("p")
    os.chmod(top / "a/b", 0o555)
    os.chmod(top / "a", 0o500)
    remove_tree(top)
    assert not top.exists()
    assert (tmp_path / "keep/precious").read_text() == "p"
    remove_tree(top)  # missing is fine


def test_progress_bar_reports_compressed_bytes(place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    output = io.StringIO()
    monkeypatch.setattr(rootfs, "_PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(
        rootfs, "Console", lambda stderr: Console(file=output, force_terminal=True, width=100)
    )
    archive = place.archive([file("big", os.urandom(3 << 20))])
    unpack_asset(archive, place.dest, progress=True)
    assert "unpacking asset.tar.gz" in output.getvalue()


# -- against GNU tar, on real files ------------------------------------------------------------------------

HOST_SOURCES = [
    "usr/lib/python3.11/json",
    "usr/lib/python3.11/email",
    "etc/alternatives",
    "usr/share/zoneinfo",
]


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_matches_gnu_tar_on_host_files(tmp_path: Path, fmt: str, writers: int) -> None:
    sources = [source for source in HOST_SOURCES if (Path("/") / source).exists()]
    archive = tmp_path / "host.tar.gz"
    with archive.open("wb") as out:
        tar = subprocess.Popen(
            ["tar", "-C", "/", f"--format={fmt}", "-cf", "-", *sources], stdout=subprocess.PIPE
        )
        subprocess.run(["gzip", "-1"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.wait() == 0
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(by_tar), "--no-same-owner"], check=True)
    ours = unpack_asset(archive, tmp_path / "rootfs" / "ours", progress=False, mount_points=())
    expected, actual = tree(by_tar), tree(ours)
    for implicit in {prefix for source in sources for prefix in _prefixes(source)[:-1]}:
        expected[implicit] = actual[implicit] = (*expected[implicit][:3], None)  # made by the extraction
    assert len(actual) > 100
    assert actual.keys() == expected.keys()
    differing = {name: (expected[name], actual[name]) for name in expected if expected[name] != actual[name]}
    assert differing == {}


@pytest.mark.docker
@pytest.mark.slow
def test_unpacks_a_real_docker_export_like_gnu_tar(tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    client = docker.from_env()
    image = "public.ecr.aws/panorama/panorama-application:latest"
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{image} is not built here (panorama-emulator base-image)")
    container = client.containers.create(image)
    archive = tmp_path / "export.tar.gz"
    try:
        with archive.open("wb") as out:
            gzip = subprocess.Popen(["gzip", "-1"], stdin=subprocess.PIPE, stdout=out)
            assert gzip.stdin is not None
            for chunk in container.export():
                gzip.stdin.write(chunk)
            gzip.stdin.close()
            assert gzip.wait() == 0
    finally:
        container.remove()
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(by_tar), "--no-same-owner"], check=False)
    ours = unpack_asset(archive, tmp_path / "rootfs" / "ours", progress=False)
    expected = {k: v for k, v in tree(by_tar).items() if v[0] != "other"}  # tar makes device nodes as root
    actual = tree(ours)
    added = {name for name in actual.keys() - expected.keys()}
    assert added <= {mp for mount_point in MOUNT_POINTS for mp in _prefixes(mount_point)}
    assert expected.keys() <= actual.keys()
    differing = {
        name: (expected[name], actual[name])
        for name in expected
        if expected[name] != actual[name] and not (expected[name][0] == "dir" and name in MOUNT_POINTS)
    }
    assert differing == {}
    assert (ours / "usr/bin/python3").is_symlink() or (ours / "usr/bin/python3").is_file()


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


# -- the same tests as an ordinary user --------------------------------------------------------------------


def test_the_same_tests_pass_as_an_unprivileged_user(test_user: pwd.struct_passwd) -> None:
    import tempfile

    user = test_user
    base = Path(tempfile.mkdtemp(prefix="panorama-emulator-as-user-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    here = Path(__file__).parent
    command = [
        "runuser",
        "-u",
        user.pw_name,
        "--",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={base / 'pytest'}",
        "-m",
        "not docker",
        str(here / "test_rootfs.py"),
        str(here / "test_rootfs_safety.py"),
        str(here / "test_store.py"),
    ]
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    finally:
        remove_tree(base)
    tail = textwrap.indent((result.stdout + result.stderr)[-3000:], "    ")
    assert result.returncode == 0, f"as {user.pw_name}:\n{tail}"
    assert " passed" in result.stdout and " failed" not in result.stdout
