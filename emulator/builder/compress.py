"""One pass from an exported filesystem to a content-addressed asset: tar stream -> gzip (level 1, ISA-L) ->
sha256 of the compressed bytes -> a temporary file in ``assets/`` -> ``assets/<sha256>.tar.gz``.

Reading the engine's stream runs in its own thread, ahead of compression by a few chunks at most, so the
socket and the compressor work at the same time and memory does not grow with the size of the asset.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from isal import isal_zlib

from emulator.errors import AssetError

__all__ = [
    "GZIP_LEVEL",
    "CompressedBlob",
    "GzipHashWriter",
    "compress_to_assets",
    "copy_to_assets",
    "file_mode",
    "prefetch",
]

#: ISA-L level 1: gzip -1's ratio at several times its speed.
GZIP_LEVEL = 1
_QUEUE_DEPTH = 4
_TEMP_PREFIX = ".partial-"


@dataclass(frozen=True)
class CompressedBlob:
    """An asset written by ``compress_to_assets``.

    Args:
        path: ``assets/<sha256>.tar.gz``.
        sha256: hex digest of the file's bytes (its name without the suffix).
        size: the file's size in bytes.
        uncompressed_size: how many bytes of tar went in.
    """

    path: Path
    sha256: str
    size: int
    uncompressed_size: int


class GzipHashWriter:
    """A gzip member written to ``out`` while the sha256 of every compressed byte is computed.

    Args:
        out: binary file to write the compressed bytes to.
        mtime: the header's modification time (0: none, as in reproducible builds).
        name: the original file name stored in the header (``gzip`` stores one; None stores none).
    """

    def __init__(self, out: BinaryIO, *, mtime: int = 0, name: str | None = None) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.uncompressed_size = 0
        self._crc = 0
        self._deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
        flags = 0x08 if name else 0
        header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", mtime & 0xFFFFFFFF) + b"\x04\x03"
        if name:
            header += name.encode("latin-1", "replace").replace(b"\0", b"_") + b"\0"
        self._emit(header)

    def _emit(self, data: bytes) -> None:
        if data:
            self.sha256.update(data)
            self._out.write(data)
            self.size += len(data)

    def write(self, data: bytes) -> None:
        """Compress ``data`` and write what the compressor gives back."""
        self._crc = isal_zlib.crc32(data, self._crc)
        self.uncompressed_size += len(data)
        self._emit(self._deflate.compress(data))

    def close(self) -> None:
        """Finish the deflate stream and write the gzip trailer (CRC-32 and size modulo 2**32)."""
        self._emit(self._deflate.flush())
        self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self.uncompressed_size & 0xFFFFFFFF))


_END = object()


def _temp_file(directory: Path) -> tuple[BinaryIO, Path]:
    """A new hidden file in ``directory``, open for writing."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=".tar.gz")
    except OSError as error:
        raise AssetError(f"cannot write to {directory}: {error.strerror}", file=str(directory)) from error
    return os.fdopen(fd, "wb"), Path(name)


def file_mode() -> int:
    """The mode a new file gets with the current umask (temporary files are created 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def prefetch(chunks: Iterable[bytes], depth: int = _QUEUE_DEPTH) -> Generator[bytes, None, None]:
    """Read ``chunks`` in a background thread, at most ``depth`` chunks ahead of the consumer.

    An exception raised while reading is raised again in the consumer. When the consumer stops early,
    the reader stops at its next chunk.

    Args:
        chunks: the source (for example the engine's export stream).
        depth: how many chunks may wait between the two threads.

    Returns:
        The same chunks, in order.
    """
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as error:
            put(error)
            return
        put(_END)

    reader = threading.Thread(target=read, name="export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)


def compress_to_assets(
    chunks: Iterable[bytes],
    assets_dir: Path,
    *,
    gzip_name: str | None,
    mtime: int,
    on_progress: Callable[[int], None] | None = None,
) -> CompressedBlob:
    """Compress a tar stream into ``assets_dir/<sha256>.tar.gz`` in one pass.

    The bytes go to a hidden temporary file in ``assets_dir`` that is renamed once complete, so no partial
    asset ever carries a sha256 name and a failure leaves nothing behind.

    Args:
        chunks: the uncompressed tar stream.
        assets_dir: the project's ``assets/`` directory (must exist).
        gzip_name: the original name stored in the gzip header (None for none).
        mtime: the gzip header's modification time (0 for none).
        on_progress: called with the number of uncompressed bytes consumed so far, at most every 0.1 s.

    Returns:
        Where the asset was written, its sha256 and sizes.

    Raises:
        AssetError: the file cannot be written.
        EmulatorError: whatever ``chunks`` raised (an engine error, a malformed stream).
    """
    handle, temp = _temp_file(assets_dir)
    try:
        with handle:
            writer = GzipHashWriter(handle, mtime=mtime, name=gzip_name)
            last_report = 0.0
            for chunk in chunks:
                writer.write(chunk)
                if on_progress is not None:
                    now = time.monotonic()
                    if now - last_report >= 0.1:
                        on_progress(writer.uncompressed_size)
                        last_report = now
            writer.close()
        if on_progress is not None:
            on_progress(writer.uncompressed_size)
        os.chmod(temp, file_mode())
        digest = writer.sha256.hexdigest()
        final = assets_dir / f"{digest}.tar.gz"
        os.replace(temp, final)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise AssetError(f"cannot write the asset: {error.strerror or error}", file=str(temp)) from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return CompressedBlob(final, digest, writer.size, writer.uncompressed_size)


def copy_to_assets(
    source: Path, assets_dir: Path, verify: Callable[[Path], None] | None = None
) -> CompressedBlob:
    """Copy an already compressed file into ``assets_dir/<sha256>.tar.gz``, hashing it on the way.

    Args:
        source: the file (for example a model's ``.tar.gz``).
        assets_dir: the project's ``assets/`` directory (must exist).
        verify: called with the complete temporary copy before it gets its final name; whatever it raises
            leaves nothing behind.

    Returns:
        Where the copy was written, its sha256 and size (``uncompressed_size`` is 0: not measured).

    Raises:
        AssetError: the source cannot be read or the copy cannot be written.
    """
    handle, temp = _temp_file(assets_dir)
    digest = hashlib.sha256()
    size = 0
    try:
        with handle, open(source, "rb") as reader:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        os.chmod(temp, file_mode())
        if verify is not None:
            verify(temp)
        final = assets_dir / f"{digest.hexdigest()}.tar.gz"
        os.replace(temp, final)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise AssetError(f"cannot copy the file: {error.strerror or error}", file=str(source)) from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return CompressedBlob(final, digest.hexdigest(), size, 0)
