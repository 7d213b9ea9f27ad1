"""Making an exported filesystem byte-for-byte reproducible, while it streams.

The same image exported twice differs in a few places: the mount points the engine creates for every container
(``/etc/hostname``, ``/etc/hosts``, ``/.dockerenv``...) carry the container's creation time, and user and
group names are looked up on the engine's host. ``normalise_tar`` rewrites each tar header as it passes:
modification times later than the epoch are clamped to it (as with ``SOURCE_DATE_EPOCH``), access and change
times are dropped, user and group names are emptied (numeric ids stay). File data passes through untouched, so
memory stays flat whatever the size of the stream. The member order is the engine's, which walks the
filesystem in sorted order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from emulator.errors import AssetError

__all__ = ["BLOCK", "default_epoch", "normalise_tar"]

BLOCK = 512
_MAX_PAX = 1 << 20  # extended headers are a few hundred bytes; refuse to buffer anything absurd
_ZERO_BLOCK = bytes(BLOCK)
_DROPPED_PAX_KEYS = {b"atime", b"ctime", b"uname", b"gname"}


def default_epoch() -> int:
    """The time members are clamped to: ``$SOURCE_DATE_EPOCH`` when set to an integer, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.strip().isdigit() else 0


class _Reader:
    """Exact-size reads over an iterator of chunks, without joining more than one header's worth of bytes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buffer = memoryview(chunk)
                return True
        return False

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or fewer only at the end of the stream."""
        parts: list[bytes] = []
        while size > 0:
            if not self._buffer and not self._fill():
                break
            part = self._buffer[:size]
            self._buffer = self._buffer[size:]
            parts.append(bytes(part))
            size -= len(part)
        return b"".join(parts)

    def pass_through(self, size: int) -> Iterator[bytes]:
        """The next ``size`` bytes as they come, in slices of the underlying chunks."""
        while size > 0:
            if not self._buffer and not self._fill():
                raise AssetError("the exported tar stream ended in the middle of a member")
            part = self._buffer[:size]
            self._buffer = self._buffer[size:]
            size -= len(part)
            yield bytes(part)

    def rest(self) -> Iterator[bytes]:
        """Everything left."""
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer = memoryview(b"")
        yield from self._chunks


def _number(field: bytes) -> int:
    """A numeric tar header field: octal text, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise AssetError("the exported stream is not a tar archive (a non-numeric header field)") from None


def _octal(value: int, width: int) -> bytes:
    text = b"%0*o" % (width - 1, value)
    if len(text) > width - 1:
        raise AssetError(f"tar header value {value} does not fit its field")
    return text + b"\0"


def _padded(size: int) -> int:
    return -size % BLOCK + size


def _rewrite_header(header: bytes, epoch: int, size: int | None = None) -> bytes:
    block = bytearray(header)
    mtime = _number(header[136:148])
    if mtime > epoch or mtime < 0:
        block[136:148] = _octal(max(0, min(mtime, epoch)), 12)
    if size is not None:
        block[124:136] = _octal(size, 12)
    if header[257:262] == b"ustar":
        block[265:297] = bytes(32)  # uname
        block[297:329] = bytes(32)  # gname
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _rewrite_pax(payload: bytes, epoch: int) -> bytes:
    """Clamp ``mtime`` and drop ``atime``, ``ctime``, ``uname`` and ``gname`` records of a PAX header."""
    records: list[bytes] = []
    position = 0
    while position < len(payload):
        length_text, space, _ = payload[position : position + 20].partition(b" ")
        if not space or not length_text.isdigit():
            raise AssetError("the exported tar stream holds a malformed extended header")
        length = int(length_text)
        record = payload[position : position + length]
        if length <= len(length_text) + 1 or len(record) != length or not record.endswith(b"\n"):
            raise AssetError("the exported tar stream holds a malformed extended header")
        position += length
        key, _, value = record[len(length_text) + 1 : -1].partition(b"=")
        if key in _DROPPED_PAX_KEYS:
            continue
        if key == b"mtime":
            try:
                seconds = float(value)
            except ValueError:
                raise AssetError("the exported tar stream holds a malformed mtime") from None
            if seconds > epoch or seconds < 0:
                value = b"%d" % max(0, epoch)
        records.append(_pax_record(key, value))
    return b"".join(records)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def normalise_tar(chunks: Iterable[bytes], epoch: int = 0) -> Iterator[bytes]:
    """Rewrite a tar stream so that it no longer depends on when or where it was made.

    Args:
        chunks: the tar archive as it streams (any chunk sizes).
        epoch: modification times later than this (seconds since 1970) are set to it.

    Returns:
        The rewritten stream, in chunks; file data is passed through as it came.

    Raises:
        AssetError: the stream is not a tar archive, or ends in the middle of a member.
    """
    reader = _Reader(chunks)
    while True:
        header = reader.read(BLOCK)
        if not header:
            return
        if len(header) < BLOCK:
            raise AssetError("the exported tar stream ended in the middle of a header")
        if header == _ZERO_BLOCK:
            yield header
            yield from reader.rest()
            return
        stored = _number(header[148:156])
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise AssetError("the exported stream is not a tar archive (bad header checksum)")
        typeflag = header[156:157]
        size = _number(header[124:136])
        if typeflag in (b"x", b"g"):
            if size > _MAX_PAX:
                raise AssetError(f"the exported tar stream holds an extended header of {size} bytes")
            payload = reader.read(_padded(size))
            if len(payload) < _padded(size):
                raise AssetError("the exported tar stream ended in the middle of a member")
            new_payload = _rewrite_pax(payload[:size], epoch)
            yield _rewrite_header(header, epoch, len(new_payload))
            yield new_payload + bytes(-len(new_payload) % BLOCK)
            continue
        yield _rewrite_header(header, epoch)
        # Hard links, symlinks, directories and devices carry no data whatever their size field says.
        if typeflag not in (b"1", b"2", b"3", b"4", b"5", b"6"):
            yield from reader.pass_through(_padded(size))
