"""The single streaming pass: tar -> (normalise) -> gzip -1 -> sha256 -> assets/<sha>.tar.gz."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.builder.compress import GzipHashWriter, compress_to_assets, prefetch
from emulator.builder.fake import FakeFile, generate_tar
from emulator.builder.reproducible import normalise_tar
from emulator.errors import AssetError, EngineError

FILES = (
    FakeFile("panorama/", kind="dir"),
    FakeFile("panorama/app.py", b"print('hello')\n", mtime=1_900_000_000),
    FakeFile("panorama/data.bin", size=3 * 1024 * 1024 + 17),
    FakeFile("panorama/notes.txt", size=200_000, compressible=True, mtime=1_000),
    FakeFile("usr/lib/" + "x" * 150 + "/long-name.py", b"# a name longer than ustar allows\n"),
    FakeFile("usr/bin/python", kind="symlink", target="python3.8"),
)


def rechunk(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The same bytes in pieces of ``size`` (the engine's chunking is arbitrary)."""
    buffer = b"".join(chunks)
    for start in range(0, len(buffer), size):
        yield buffer[start : start + size]


def test_gzip_writer_output_is_gzip_of_the_input_and_hash_of_the_output() -> None:
    out = io.BytesIO()
    writer = GzipHashWriter(out, mtime=1_234_567, name="code.tar")
    data = b"".join(generate_tar(FILES))
    for start in range(0, len(data), 65536):
        writer.write(data[start : start + 65536])
    writer.close()
    compressed = out.getvalue()
    assert gzip.decompress(compressed) == data
    assert writer.sha256.hexdigest() == hashlib.sha256(compressed).hexdigest()
    assert compressed[4:8] == (1_234_567).to_bytes(4, "little")
    assert compressed[10:19] == b"code.tar\0"  # like gzip, the original name is stored
    assert len(compressed) < len(data)


def test_asset_is_named_by_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    blob = compress_to_assets(generate_tar(FILES), tmp_path, gzip_name=None, mtime=0)
    content = blob.path.read_bytes()
    assert blob.path == tmp_path / f"{hashlib.sha256(content).hexdigest()}.tar.gz"
    assert blob.sha256 == blob.path.name.split(".")[0] and blob.size == len(content)
    with tarfile.open(blob.path) as archive:
        assert archive.extractfile("panorama/app.py").read() == b"print('hello')\n"  # type: ignore[union-attr]
    assert [path.name for path in tmp_path.iterdir()] == [blob.path.name]


def test_a_failing_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise EngineError("the export stream from the Docker engine broke")

    with pytest.raises(EngineError, match="broke"):
        compress_to_assets(prefetch(broken()), tmp_path, gzip_name="code.tar", mtime=1)
    assert list(tmp_path.iterdir()) == []


def test_prefetch_keeps_order_and_stops_early() -> None:
    produced: list[int] = []

    def source() -> Iterator[bytes]:
        for index in range(1000):
            produced.append(index)
            yield bytes([index % 256])

    assert b"".join(prefetch(iter([b"a", b"b", b"c"]))) == b"abc"
    stream = prefetch(source(), depth=2)
    assert next(stream) == b"\0"
    stream.close()
    assert len(produced) < 10  # the reader did not run ahead of the consumer


def test_normalised_exports_of_one_image_are_identical() -> None:
    first = b"".join(generate_tar(FILES, volatile_time=1_700_000_001.25))
    second = b"".join(generate_tar(FILES, volatile_time=1_700_000_999.5))
    assert first != second
    assert b"".join(normalise_tar(iter([first]))) == b"".join(normalise_tar(iter([second])))


def test_normalising_does_not_depend_on_chunk_boundaries() -> None:
    data = b"".join(generate_tar(FILES, volatile_time=1_700_000_000.5))
    whole = b"".join(normalise_tar(iter([data]), 1_500_000_000))
    for size in (1, 511, 512, 4097, 1 << 20):
        assert b"".join(normalise_tar(rechunk(iter([data]), size), 1_500_000_000)) == whole


def test_normalising_clamps_times_empties_names_and_keeps_content() -> None:
    data = b"".join(generate_tar(FILES, volatile_time=1_700_000_000.5))
    normalised = b"".join(normalise_tar(iter([data]), 1_500_000_000))
    with contextlib.ExitStack() as stack:
        archive = stack.enter_context(tarfile.open(fileobj=io.BytesIO(normalised)))
        members = {member.name: member for member in archive.getmembers()}
        assert members["etc/hostname"].mtime == 1_500_000_000
        assert members["panorama/app.py"].mtime == 1_500_000_000
        assert members["panorama/notes.txt"].mtime == 1_000  # older than the epoch: kept
        assert all(member.uname == "" and member.gname == "" for member in members.values())
        assert not any(
            {"atime", "ctime", "uname", "gname"} & set(member.pax_headers) for member in members.values()
        )
        assert members["usr/bin/python"].linkname == "python3.8"
        long_name = "usr/lib/" + "x" * 150 + "/long-name.py"
        assert archive.extractfile(long_name).read() == b"# a name longer than ustar allows\n"  # type: ignore[union-attr]
        original = stack.enter_context(tarfile.open(fileobj=io.BytesIO(data)))
        for name in ("panorama/data.bin", "panorama/notes.txt"):
            assert archive.extractfile(name).read() == original.extractfile(name).read()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a tar archive at all" * 40, "not a tar archive"),
        (b"".join(generate_tar(FILES))[:5000], "ended in the middle"),
        (b"".join(generate_tar(FILES))[:700], "ended in the middle"),
    ],
)
def test_normalising_a_broken_stream_is_an_asset_error(data: bytes, message: str) -> None:
    with pytest.raises(AssetError, match=message):
        b"".join(normalise_tar(iter([data])))


_MEASURE = """
import json, resource, sys
from pathlib import Path
from emulator.builder.compress import compress_to_assets, prefetch
from emulator.builder.fake import FakeFile, generate_tar
from emulator.builder.reproducible import normalise_tar
megabytes, reproducible, out = int(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3])
files = [FakeFile("panorama/app.py", b"x"), FakeFile("random.bin", size=megabytes << 19),
         FakeFile("text.bin", size=megabytes << 19, compressible=True)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
source = generate_tar(files)
stream = prefetch(normalise_tar(source) if reproducible else source)
blob = compress_to_assets(stream, out, gzip_name=None, mtime=0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": peak, "in": blob.uncompressed_size, "size": blob.size}))
"""


def _peak_growth_kb(megabytes: int, reproducible: bool, out: Path) -> int:
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(megabytes), "1" if reproducible else "0", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout)
    assert figures["in"] > megabytes << 20
    return int(figures["peak_kb"]) - int(figures["before_kb"])


@pytest.mark.slow
@pytest.mark.parametrize("reproducible", [False, True])
def test_memory_does_not_grow_with_the_asset(tmp_path: Path, reproducible: bool) -> None:
    small = _peak_growth_kb(20, reproducible, tmp_path / "small")
    big = _peak_growth_kb(300, reproducible, tmp_path / "big")
    # 300 MB went through; buffering even a tenth of it would add 30 MB.
    assert big - small < 16 * 1024, (small, big)
    assert big < 48 * 1024, big
