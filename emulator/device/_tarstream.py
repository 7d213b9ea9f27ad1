"""A lean, streaming reader for tar archives: ustar, pax and GNU headers.

It reads the decompressed stream in large chunks and hands member data straight to ``os.write`` from
those chunks, so that unpacking a rootfs costs little more than the system calls that create its files.
It only parses; deciding what may be written where is the job of ``emulator.device._extract``.

Supported: ustar and v7 headers (with the ustar ``prefix``), pax extended headers (``path``, ``linkpath``,
``size``, ``mtime``, ``uid``, ``gid``; other keys such as xattrs are ignored, and so are global headers),
GNU long names and long link names, base-256 numbers. GNU sparse and multi-volume members are reported as
such (their type byte is kept) so that the caller can refuse them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from emulator.errors import AssetError, UnsafeArchiveError

__all__ = [
    "BLOCK",
    "CHUNK",
    "Member",
    "TarStream",
    "display_name",
]

BLOCK = 512
CHUNK = 1 << 20
_ZERO_BLOCK = bytes(BLOCK)
_POSIX_MAGIC = b"ustar\x00"
_CHECKSUM_SPACES = 8 * ord(" ")
_META_TYPES = frozenset((b"x", b"g", b"L", b"K", b"X"))


def display_name(name: bytes) -> str:
    """Return a member name as text for messages: undecodable bytes are escaped, never dropped."""
    return name.decode("utf-8", "backslashreplace")


class Member:
    """One archive member as its headers describe it.

    Attributes:
        name: the member path as stored (bytes, not normalised).
        type: the one-byte type flag (``b"0"`` regular, ``b"5"`` directory, ``b"2"`` symlink, ...).
        mode: permission bits as stored (including setuid / setgid / sticky).
        uid: owner id.
        gid: group id.
        size: number of data bytes that follow the header.
        mtime_ns: modification time in nanoseconds.
        linkname: symlink target or hard link target (bytes).
    """

    __slots__ = ("gid", "linkname", "mode", "mtime_ns", "name", "size", "type", "uid")

    def __init__(
        self,
        name: bytes,
        type: bytes,
        mode: int,
        uid: int,
        gid: int,
        size: int,
        mtime_ns: int,
        linkname: bytes,
    ) -> None:
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.linkname = linkname

    def __repr__(self) -> str:
        return f"Member({display_name(self.name)!r}, type={self.type!r}, size={self.size})"


def _number(field: bytes) -> int:
    """Parse a numeric header field: octal text, or GNU base-256 when the top bit of the first byte is set."""
    if field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes((field[0] & 0x7F,)) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_time_ns(value: bytes) -> int:
    """Parse a pax time such as ``1700000000.123456789`` or ``-1.5`` into nanoseconds, exactly."""
    text = value.decode("ascii")
    negative = text.startswith("-")
    seconds, _, fraction = text.lstrip("-").partition(".")
    if not fraction.isdigit() and fraction:
        raise ValueError(f"bad pax time {text!r}")
    ns = int(seconds or "0") * 1_000_000_000 + int((fraction[:9] or "0").ljust(9, "0"))
    return -ns if negative else ns


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse pax extended header records (``"<length> <key>=<value>\\n"``)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # padding some writers leave after the last record
            break
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record_end = pos + length
        if length <= 0 or record_end > end or data[record_end - 1] != 0x0A:
            raise ValueError("malformed pax record")
        key, equals, value = data[space + 1 : record_end - 1].partition(b"=")
        if not equals:
            raise ValueError("malformed pax record")
        records[key] = value
        pos = record_end
    return records


class TarStream:
    """Iterate over the members of a tar stream and copy their data out.

    Call ``next()`` for each member, then one of ``write_data``, ``skip_data`` or ``take_data`` (if it
    returns a view) for its ``size`` bytes.

    Args:
        read: a ``read(n)`` function of the decompressed stream.
        max_meta_bytes: largest pax / GNU long-name header accepted (bigger ones are refused).
        on_refill: called each time a new chunk is read (about every ``CHUNK`` bytes), for progress.

    Raises:
        AssetError: the stream is truncated or a header is corrupt (raised from the methods).
        UnsafeArchiveError: a metadata header is larger than ``max_meta_bytes``.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        max_meta_bytes: int = 1 << 20,
        on_refill: Callable[[], None] | None = None,
    ) -> None:
        self._read = read
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._max_meta = max_meta_bytes
        self._on_refill = on_refill
        self._last_name = b""

    def _refill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available; return False at end of stream."""
        rest = self._buf[self._pos :]
        while len(rest) < need:
            chunk = self._read(CHUNK)
            if not chunk:
                self._set_buffer(rest)
                return False
            rest = rest + chunk if rest else chunk
        self._set_buffer(rest)
        if self._on_refill is not None:
            self._on_refill()
        return True

    def _set_buffer(self, data: bytes) -> None:
        # The old view is not released: views handed out by take_data() keep their (immutable) chunk alive.
        self._buf = data
        self._view = memoryview(data)
        self._pos = 0

    def _truncated(self) -> AssetError:
        where = f" (in member {display_name(self._last_name)})" if self._last_name else ""
        return AssetError(f"the archive is truncated{where}")

    def _take(self, size: int) -> bytes:
        """Return the next ``size`` bytes (used for headers and metadata only)."""
        if len(self._buf) - self._pos < size and not self._refill(size):
            raise self._truncated()
        data = self._buf[self._pos : self._pos + size]
        self._pos += size
        return data

    def skip_data(self, size: int) -> None:
        """Skip ``size`` data bytes of the current member and its padding.

        Raises:
            AssetError: the stream ends first.
        """
        self._skip((size + BLOCK - 1) & ~(BLOCK - 1))

    def _skip(self, count: int) -> None:
        remaining = count
        while remaining:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill(1):
                    raise self._truncated()
                avail = len(self._buf)
            step = avail if avail < remaining else remaining
            self._pos += step
            remaining -= step

    def take_data(self, size: int) -> memoryview | None:
        """Return the current member's ``size`` data bytes if they are already buffered, and skip them.

        The view stays valid after later reads (chunks are immutable ``bytes``).

        Returns:
            A read-only view of the data, or None (nothing consumed) if the data is not all buffered yet.
        """
        pos = self._pos
        padded_end = pos + ((size + BLOCK - 1) & ~(BLOCK - 1))
        if padded_end > len(self._buf):
            return None
        self._pos = padded_end
        return self._view[pos : pos + size]

    def write_data(self, fd: int, size: int) -> None:
        """Write ``size`` data bytes of the current member to ``fd``, then skip its padding.

        Raises:
            AssetError: the stream ends first.
            OSError: writing failed.
        """
        remaining = size
        write = os.write
        while remaining:
            pos = self._pos
            avail = len(self._buf) - pos
            if not avail:
                if not self._refill(1):
                    raise self._truncated()
                pos = 0
                avail = len(self._buf)
            step = avail if avail < remaining else remaining
            view = self._view[pos : pos + step]
            written = write(fd, view)
            while written < step:
                written += write(fd, view[written:])
            self._pos = pos + step
            remaining -= step
        if size % BLOCK:
            self._skip(BLOCK - size % BLOCK)

    def _read_meta(self, size: int, kind: str) -> bytes:
        if size > self._max_meta:
            raise UnsafeArchiveError(
                f"a {kind} header of {size} bytes after member {display_name(self._last_name) or '(start)'} "
                f"exceeds the limit of {self._max_meta} bytes"
            )
        data = self._take(size)
        if size % BLOCK:
            self._skip(BLOCK - size % BLOCK)
        return data

    def drain(self, limit: int) -> None:
        """Read up to ``limit`` bytes past the end of the archive, so the decompressor checks its trailer."""
        remaining = limit - (len(self._buf) - self._pos)
        self._set_buffer(b"")
        while remaining > 0:
            chunk = self._read(min(CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)

    def next(self) -> Member | None:
        """Parse the next member's headers.

        Returns:
            The member, or None at the end of the archive.

        Raises:
            AssetError: the stream is truncated or a header is corrupt.
            UnsafeArchiveError: a metadata header is too large.
        """
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            if len(self._buf) - self._pos < BLOCK and not self._refill(BLOCK):
                if self._pos == len(self._buf) and not pax and long_name is None and long_link is None:
                    return None  # end of stream without the end-of-archive blocks: accepted, as GNU tar does
                raise self._truncated()
            pos = self._pos
            block = self._buf[pos : pos + BLOCK]
            self._pos = pos + BLOCK
            if block == _ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    raise self._truncated()
                return None
            try:
                member = self._parse_header(block)
            except (ValueError, IndexError) as error:
                after = display_name(self._last_name) if self._last_name else "(start)"
                raise AssetError(f"corrupt tar header after member {after}: {error}") from None
            kind = member.type
            if kind in _META_TYPES:
                if kind == b"x" or kind == b"X":
                    try:
                        pax.update(_parse_pax(self._read_meta(member.size, "pax")))
                    except ValueError as error:
                        raise AssetError(
                            f"corrupt pax header after member {display_name(self._last_name)}: {error}"
                        ) from None
                elif kind == b"g":
                    self._read_meta(member.size, "pax global")
                elif kind == b"L":
                    long_name = self._read_meta(member.size, "long name").split(b"\0", 1)[0]
                else:
                    long_link = self._read_meta(member.size, "long link").split(b"\0", 1)[0]
                continue
            if long_name is not None:
                member.name = long_name
            if long_link is not None:
                member.linkname = long_link
            if pax:
                self._apply_pax(member, pax)
            self._last_name = member.name
            return member

    @staticmethod
    def _parse_header(block: bytes) -> Member:
        stored = _number(block[148:156])
        computed = sum(block) - sum(block[148:156]) + _CHECKSUM_SPACES
        if stored != computed:
            signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + _CHECKSUM_SPACES
            if stored != signed:
                raise ValueError("bad checksum")
        size = _number(block[124:136])
        if size < 0:
            raise ValueError("negative size")
        name = block[0:100].split(b"\0", 1)[0]
        if block[257:263] == _POSIX_MAGIC and block[345] != 0:
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        return Member(
            name,
            block[156:157],
            _number(block[100:108]),
            _number(block[108:116]),
            _number(block[116:124]),
            size,
            _number(block[136:148]) * 1_000_000_000,
            block[157:257].split(b"\0", 1)[0],
        )

    def _apply_pax(self, member: Member, pax: dict[bytes, bytes]) -> None:
        try:
            if b"path" in pax:
                member.name = pax[b"path"]
            if b"linkpath" in pax:
                member.linkname = pax[b"linkpath"]
            if b"size" in pax:
                member.size = int(pax[b"size"])
            if b"mtime" in pax:
                member.mtime_ns = _pax_time_ns(pax[b"mtime"])
            if b"uid" in pax:
                member.uid = int(pax[b"uid"])
            if b"gid" in pax:
                member.gid = int(pax[b"gid"])
        except ValueError as error:
            raise AssetError(f"corrupt pax header for member {display_name(member.name)}: {error}") from None
        if member.size < 0:
            raise AssetError(f"corrupt pax header for member {display_name(member.name)}: negative size")
        if any(key.startswith(b"GNU.sparse.") for key in pax):
            member.type = b"S"  # the data is in GNU's sparse layout, not the file's bytes
