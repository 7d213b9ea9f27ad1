"""Application bundles: packed from a project, checked whole, unpacked only when every member is safe."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from emulator.api.bundle import BundleLimits, check_bundle, pack_project, unpack_bundle
from emulator.api.errors import RequestError
from emulator.errors import AssetError, ManifestError

GRAPH = "graphs/people-counter/graph.json"
PACKAGE = "packages/123456789012-PEOPLE_COUNTER_CODE-1.0/package.json"


def members_of(project: Path) -> dict[str, bytes]:
    """Every file of a project's bundle, by member name."""
    out = io.BytesIO()
    pack_project(project, out)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def make_bundle(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> io.BytesIO:
    """A .tar.gz holding ``files`` (regular files) and ``extra`` members as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    out.seek(0)
    return out


@pytest.fixture
def files(fake_project: Path) -> dict[str, bytes]:
    """A valid bundle's files, with one asset whose name is its SHA-256."""
    asset = b"not really a rootfs"
    found = members_of(fake_project)
    found[f"assets/{hashlib.sha256(asset).hexdigest()}.tar.gz"] = asset
    return found


def test_pack_then_unpack_round_trips(tmp_path: Path, fake_project: Path, files: dict[str, bytes]) -> None:
    (fake_project / "assets" / ".gitkeep").write_text("")
    packed = io.BytesIO()
    pack_project(fake_project, packed)
    info = check_bundle(packed)
    assert info.app == "people-counter"
    assert info.packages == ("123456789012-PEOPLE_COUNTER_CODE-1.0",)
    dest, info = unpack_bundle(make_bundle(files), tmp_path / "bundles")
    assert dest == tmp_path / "bundles" / "people-counter"
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert len(info.assets) == 1
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["people-counter"]  # no staging left


def test_unpacking_again_replaces_the_previous_copy(tmp_path: Path, files: dict[str, bytes]) -> None:
    dest, _ = unpack_bundle(make_bundle(files), tmp_path)
    (dest / "stale.txt").write_text("old")
    dest, _ = unpack_bundle(make_bundle(files), tmp_path)
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people-counter"]


def _info(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


HOSTILE = {
    "dot-dot": ({"graphs/../../evil.txt": b"x"}, [], "'..'"),
    "absolute": ({"/etc/evil": b"x"}, [], "absolute"),
    "outside the three folders": ({"evil.sh": b"x"}, [], "only graphs/"),
    "symlink": (
        {},
        [_info("packages/123456789012-PEOPLE_COUNTER_CODE-1.0/l", tarfile.SYMTYPE, linkname="/")],
        "links",
    ),
    "hardlink": ({}, [_info("assets/h", tarfile.LNKTYPE, linkname="/etc/passwd")], "links"),
    "device": ({}, [_info("assets/dev", tarfile.CHRTYPE, devmajor=1, devminor=3)], "devices"),
    "fifo": ({}, [_info("graphs/fifo", tarfile.FIFOTYPE)], "fifos"),
    "asset not named by hash": ({"assets/code.tar.gz": b"x"}, [], "sha256"),
    "asset in a sub folder": ({f"assets/sub/{'a' * 64}.json": b"{}"}, [], "sha256"),
    "bad package folder": ({"packages/nohyphen/package.json": b"{}"}, [], "account"),
    "odd characters": ({"graphs/people-counter/\nx": b"x"}, [], "not allowed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_members_are_refused_and_nothing_is_written(
    tmp_path: Path, files: dict[str, bytes], case: str
) -> None:
    extra_files, extra_members, message = HOSTILE[case]
    bundle = make_bundle({**files, **extra_files}, extra_members)
    with pytest.raises(RequestError, match=message):
        unpack_bundle(bundle, tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()
    assert not (tmp_path.parent / "evil.txt").exists()


def test_an_asset_whose_hash_differs_from_its_name_is_refused(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    bundle = make_bundle({**files, f"assets/{'0' * 64}.tar.gz": b"tampered"})
    with pytest.raises(AssetError, match="SHA-256"):
        unpack_bundle(bundle, tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


def test_invalid_manifests_are_listed(tmp_path: Path, files: dict[str, bytes]) -> None:
    graph = json.loads(files[GRAPH])
    del graph["nodeGraph"]["nodes"]
    bundle = make_bundle({**files, GRAPH: json.dumps(graph).encode(), PACKAGE: b"{not json"})
    with pytest.raises(ManifestError) as caught:
        unpack_bundle(bundle, tmp_path / "bundles")
    text = str(caught.value)
    assert GRAPH in text and "/nodeGraph" in text
    assert PACKAGE in text
    assert not (tmp_path / "bundles").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no graph", "exactly one graphs"),
        ("two graphs", "exactly one graphs"),
        ("package without package.json", "no package.json"),
        ("same member twice", "twice"),
    ],
)
def test_structure_is_checked(tmp_path: Path, files: dict[str, bytes], change: str, message: str) -> None:
    extra: list[tarfile.TarInfo] = []
    if change == "no graph":
        files.pop(GRAPH)
    elif change == "two graphs":
        files["graphs/other/graph.json"] = files[GRAPH]
    elif change == "package without package.json":
        files["packages/123456789012-OTHER-1.0/src/app.py"] = b"print()"
    else:
        extra.append(_info(PACKAGE, tarfile.REGTYPE, size=3))
    with pytest.raises(RequestError, match=message):
        unpack_bundle(make_bundle(files, extra), tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


def test_limits(tmp_path: Path, files: dict[str, bytes]) -> None:
    with pytest.raises(RequestError, match="more than 3 members"):
        check_bundle(make_bundle(files), BundleLimits(max_members=3))
    with pytest.raises(RequestError, match="unpacks to more than"):
        check_bundle(make_bundle(files), BundleLimits(max_unpacked_bytes=100))
    # A zip bomb is refused by its declared sizes before it is inflated.
    bomb = make_bundle(files, [_info(f"assets/{'b' * 64}.tar.gz", tarfile.REGTYPE, size=50 * 1024 * 1024)])
    assert len(bomb.getvalue()) < 1024 * 1024
    with pytest.raises(RequestError, match="unpacks to more than"):
        check_bundle(bomb, BundleLimits(max_unpacked_bytes=10 * 1024 * 1024))


@pytest.mark.parametrize("data", [b"", b"plain text", b"\x1f\x8b\x08\x00garbage", None])
def test_not_a_tar_gz(tmp_path: Path, files: dict[str, bytes], data: bytes | None) -> None:
    if data is None:  # truncated
        data = make_bundle(files).getvalue()[:-200]
    with pytest.raises(RequestError):
        unpack_bundle(io.BytesIO(data), tmp_path / "bundles")
    assert not (tmp_path / "bundles").exists()


def test_unpacking_checks_members_even_after_a_check(tmp_path: Path, files: dict[str, bytes]) -> None:
    checked = check_bundle(make_bundle(files))
    hostile = make_bundle(files, [_info("graphs/people-counter/link", tarfile.SYMTYPE, linkname="/")])
    with pytest.raises(RequestError, match="links"):
        unpack_bundle(hostile, tmp_path / "bundles", checked=checked)
    assert list((tmp_path / "bundles").iterdir()) == []
