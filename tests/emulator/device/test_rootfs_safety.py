"""The rootfs unpacker against hostile and corrupt archives: refused in one line, nothing written outside."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from _tar_helpers import (
    Place,
    Spec,
    directory,
    file,
    hardlink,
    make_place,
    raw_type,
    snapshot,
    symlink,
    tar_bytes,
    use_writers,
)

from emulator.device.rootfs import UnpackLimits, is_unpacked, unpack_asset
from emulator.errors import AssetError, UnsafeArchiveError


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture(params=[1, 4], ids=["1-writer", "4-writers"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a test with files written by the member loop itself, and by writer threads."""
    return use_writers(monkeypatch, int(request.param))


HOSTILE: dict[str, tuple[Callable[[Path], list[Spec]], str]] = {
    "dotdot": (
        lambda out: [file("../../../outside/pwned", b"x")],
        r"\.\./\.\./\.\./outside/pwned.*contains '\.\.'",
    ),
    "dotdot-inside-a-path": (lambda out: [file("usr/../../../../outside/pwned", b"x")], r"contains '\.\.'"),
    "absolute-path": (lambda out: [file(str(out / "pwned"), b"x")], r"is absolute"),
    "absolute-directory": (lambda out: [directory(str(out / "newdir"))], r"is absolute"),
    "symlink-escaping-by-dotdot": (
        lambda out: [symlink("esc", "../../../outside")],
        r"esc: .*points outside the root",
    ),
    "deep-symlink-escaping-by-dotdot": (
        lambda out: [symlink("a/b/esc", "../x/../../../etc/passwd")],
        r"points outside the root",
    ),
    "write-through-absolute-symlink": (
        lambda out: [symlink("esc", str(out)), file("esc/pwned", b"x")],
        r"member esc/pwned: its path goes through esc, which is a symbolic link",
    ),
    "write-through-symlink-inside-the-root": (
        lambda out: [directory("real/"), symlink("alias", "real"), file("alias/pwned", b"x")],
        r"goes through alias",
    ),
    "directory-through-symlink": (
        lambda out: [symlink("esc", str(out)), directory("esc/newdir/")],
        r"goes through esc",
    ),
    "symlink-through-symlink": (
        lambda out: [symlink("esc", str(out)), symlink("esc/evil", "/etc/passwd")],
        r"goes through esc",
    ),
    "symlink-replacing-an-empty-directory": (
        lambda out: [directory("d/"), symlink("d", str(out)), file("d/pwned", b"x")],
        r"goes through d",
    ),
    "hardlink-by-dotdot": (lambda out: [hardlink("h", "../../../outside/canary.txt")], r"contains '\.\.'"),
    "hardlink-absolute": (
        lambda out: [hardlink("h", str(out / "canary.txt"))],
        r"hard link target .* is absolute",
    ),
    "hardlink-to-a-later-member": (
        lambda out: [hardlink("h", "later"), file("later", b"x")],
        r"member h: hard link to later, which is not a member extracted before it",
    ),
    "hardlink-to-a-missing-directory": (
        lambda out: [hardlink("h", "nowhere/file")],
        r"not a member extracted",
    ),
    "hardlink-through-symlink": (
        lambda out: [symlink("s", str(out)), hardlink("h", "s/canary.txt")],
        r"goes through s",
    ),
    "hardlink-to-a-directory": (
        lambda out: [directory("d/"), hardlink("h", "d")],
        r"hard link to the directory d",
    ),
    "file-replacing-a-full-directory": (
        lambda out: [file("d/x", b"x"), file("d", b"y")],
        r"replace the non-empty directory d",
    ),
    "file-used-as-a-directory": (
        lambda out: [file("a", b"x"), file("a/b", b"y")],
        r"member a/b: its path goes through a, which is a symbolic link or not a directory",
    ),
    "sparse-member": (
        lambda out: [raw_type("sparse", tarfile.GNUTYPE_SPARSE)],
        r"unsupported member type 'S'",
    ),
    "unknown-member-type": (lambda out: [raw_type("odd", b"Z")], r"unsupported member type 'Z'"),
    "empty-symlink-target": (lambda out: [symlink("empty", "")], r"empty target"),
    "file-as-the-root": (lambda out: [file(".", b"x", mode=0o644)], r"cannot replace the root"),
}


def assert_nothing_outside(place: Place, before: dict[str, tuple[int, int, int, str]]) -> None:
    assert place.canary.read_text() == "canary\n"
    assert sorted(os.listdir(place.outside)) == ["canary.txt"]
    assert snapshot(place.base, exclude=place.rootfs_root) == before
    leftovers = [name for name in os.listdir(place.rootfs_root) if not name.endswith(".lock")]
    assert leftovers == []  # no rootfs, no partial directory, no marker
    assert not is_unpacked(place.dest)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(place: Place, case: str, writers: int) -> None:
    make, message = HOSTILE[case]
    archive = place.archive(make(place.outside))
    before = snapshot(place.base, exclude=place.rootfs_root)
    with pytest.raises(UnsafeArchiveError, match=message) as caught:
        unpack_asset(archive, place.dest, progress=False)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("asset asset.tar.gz: ")
    assert_nothing_outside(place, before)


def test_overwriting_a_symlink_never_writes_through_it(place: Place, writers: int) -> None:
    archive = place.archive([symlink("f", str(place.canary)), file("f", b"pwned")])
    before = snapshot(place.base, exclude=place.rootfs_root)
    unpack_asset(archive, place.dest, progress=False)
    assert (place.dest / "f").read_bytes() == b"pwned" and not (place.dest / "f").is_symlink()
    assert snapshot(place.base, exclude=place.rootfs_root) == before


def test_hardlinks_never_share_a_later_write(place: Place, writers: int) -> None:
    specs = [file("f", b"original"), hardlink("h", "f"), file("h", b"replaced")]
    unpack_asset(place.archive(specs), place.dest, progress=False)
    assert (place.dest / "f").read_bytes() == b"original"
    assert (place.dest / "h").read_bytes() == b"replaced"


def test_a_hardlink_to_a_symlink_links_the_link_not_its_target(place: Place, writers: int) -> None:
    archive = place.archive([symlink("s", str(place.canary)), hardlink("h", "s")])
    before = snapshot(place.base, exclude=place.rootfs_root)
    unpack_asset(archive, place.dest, progress=False)
    assert os.readlink(place.dest / "h") == str(place.canary)
    assert (place.dest / "h").lstat().st_ino == (place.dest / "s").lstat().st_ino
    assert snapshot(place.base, exclude=place.rootfs_root) == before


@pytest.mark.parametrize(
    ("limits", "specs", "message"),
    [
        (
            UnpackLimits(max_members=5),
            [file(f"f{i}", b"x") for i in range(6)],
            r"member f5: .*more than 5 members",
        ),
        (
            UnpackLimits(max_total_bytes=1000),
            [file("a", b"x" * 600), file("b", b"x" * 600)],
            r"member b: .*more than 1000 bytes",
        ),
        (
            UnpackLimits(max_meta_bytes=512),
            [file("p" * 2000, b"x")],
            r"pax header of \d+ bytes .*exceeds the limit",
        ),
        (UnpackLimits(max_path_bytes=100), [file("q/" * 60 + "f", b"x")], r"too long"),
    ],
    ids=["members", "bytes", "pax-header", "path"],
)
def test_limits_are_enforced(place: Place, limits: UnpackLimits, specs: list[Spec], message: str) -> None:
    archive = place.archive(specs)
    before = snapshot(place.base, exclude=place.rootfs_root)
    with pytest.raises(UnsafeArchiveError, match=message):
        unpack_asset(archive, place.dest, progress=False, limits=limits)
    assert_nothing_outside(place, before)


def test_default_limits_are_sane() -> None:
    assert UnpackLimits().max_members == 2_000_000
    assert UnpackLimits().max_total_bytes == 64 << 30


def corrupt_checksum(data: bytes) -> bytes:
    return b"X" + data[1:]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda good: good[: len(good) // 2], r"truncated"),
        (lambda good: b"\x1f\x8b" + b"\x00" * 100, r"cannot decompress the archive"),
        (lambda good: os.urandom(4096), r"corrupt tar header"),
        (lambda good: b"", r""),
    ],
    ids=["truncated-gzip", "broken-gzip", "not-a-tar", "empty-file"],
)
def test_corrupt_archives_are_refused_with_one_line(
    place: Place, make: Callable[[bytes], bytes], message: str
) -> None:
    import gzip

    good = gzip.compress(tar_bytes([file("a", os.urandom(200_000)), file("b", b"b")]))
    archive = place.assets / "bad.tar.gz"
    place.assets.mkdir()
    archive.write_bytes(make(good))
    if message:
        with pytest.raises(AssetError, match=message) as caught:
            unpack_asset(archive, place.dest, progress=False)
        assert "\n" not in str(caught.value) and "bad.tar.gz" in str(caught.value)
        assert not place.dest.exists()
    else:  # an empty archive is an empty rootfs (with its mount points)
        unpack_asset(archive, place.dest, progress=False)
        assert (place.dest / "proc").is_dir()


def test_a_corrupt_header_checksum_is_refused(place: Place) -> None:
    data = bytearray(tar_bytes([file("a", b"a"), file("b", b"b")], fmt=tarfile.USTAR_FORMAT))
    data[1024] ^= 0x01  # the second header's name
    archive = place.assets / "bad.tar"
    place.assets.mkdir()
    archive.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=r"corrupt tar header after member a: bad checksum"):
        unpack_asset(archive, place.dest, progress=False)


def test_a_missing_archive_is_an_asset_error(place: Place) -> None:
    with pytest.raises(AssetError, match=r"cannot read the archive"):
        unpack_asset(place.assets / "missing.tar.gz", place.dest, progress=False)
    assert not place.dest.exists()
