"""Write the members of a tar stream into a directory, safely by construction.

Every file system call is made relative to a directory file descriptor that was opened, component by
component from the root, with ``O_NOFOLLOW | O_DIRECTORY``; nothing is ever created with a path, so no
member can reach outside the root, whatever links earlier members planted:

- member paths that are absolute or contain ``..`` are refused; so is a path whose parent is a symbolic
  link or a file (writing *through* a link placed earlier is the classic escape);
- regular files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: an existing entry (say, a symlink to a
  host file) is unlinked first, never opened, so data always goes into a fresh inode;
- symbolic links are kept as they are when absolute (they resolve inside the rootfs at run time, because
  it is mounted at ``/``); relative ones whose ``..`` steps climb above the root are refused;
- hard links must name a member already extracted, looked up with the same no-follow walk, and are made
  with ``linkat`` without following a final symlink;
- device nodes and FIFOs are skipped (the sandbox provides ``/dev``); setuid, setgid and sticky bits are
  dropped from every mode; member count and total size are bounded.

Small files (whose data is already in the decompressed chunk at hand) are written by a few writer threads,
because creating a file costs a round trip to the file system that several threads can overlap. The member
loop stays the only place that decides anything: it walks and creates directories, and a writer only runs
``open(O_EXCL) / write / utime / close`` under a parent descriptor it was given. Before the loop touches a
path that a writer may still be creating (a duplicate, a hard link target, a parent directory) it waits
for that write, so the result is the same as writing in archive order.

Host code must likewise never follow links inside an unpacked rootfs: an absolute symlink there names a
path of the sandbox, not of the host.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from emulator.device._tarstream import Member, TarStream, display_name
from emulator.errors import AssetError, DeviceError, EmulatorError, UnsafeArchiveError

__all__ = ["ExtractStats", "Extractor", "current_umask"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_MAX_OPEN_DIRS = 256
_WRITERS = 4
_MAX_IN_FLIGHT = 64
_MAX_IN_FLIGHT_BYTES = 16 << 20
_MAX_SKIPPED_LISTED = 50
_REGULAR = frozenset((b"0", b"\0", b"7"))
_SKIPPED_TYPES = {b"3": "character device", b"4": "block device", b"6": "FIFO"}
_UNSUPPORTED_TYPES = {
    b"S": "GNU sparse file",
    b"M": "multi-volume continuation",
    b"N": "GNU long-name extension",
}
_HOST_ERRNOS = frozenset(
    (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.EACCES,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    )
)


def current_umask() -> int:
    """Return the process umask without changing it (read from /proc; falls back to set-and-restore)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass
class ExtractStats:
    """What an extraction wrote and what it left out."""

    members: int = 0
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    special_bits_dropped: int = 0


class _NotADirectory(Exception):
    """A path component inside the root is a symbolic link or a non-directory."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.key = key


class Extractor:
    """Extract tar members under one root directory file descriptor.

    Args:
        root_fd: an open directory file descriptor of the (empty) destination; not closed by ``close()``.
        max_members: refuse archives with more members than this.
        max_total_bytes: refuse archives whose members hold more data than this.
        max_path_bytes: refuse member paths longer than this.
        keep_owner: set member owners (default: only when running as root, where it is cheap).
        writers: threads that write small files (default 4; 1 writes everything in the calling thread).
    """

    def __init__(
        self,
        root_fd: int,
        *,
        max_members: int,
        max_total_bytes: int,
        max_path_bytes: int,
        keep_owner: bool | None = None,
        writers: int | None = None,
    ) -> None:
        self._root_fd = root_fd
        self._dirs: dict[bytes, int] = {b"": root_fd}
        self._pending: dict[bytes, tuple[int, int | None, int, int]] = {}
        self._skipped: set[bytes] = set()
        self._umask = current_umask()
        self._owner = (os.geteuid(), os.getegid())
        self._keep_owner = self._owner[0] == 0 if keep_owner is None else keep_owner
        self._max_members = max_members
        self._max_total = max_total_bytes
        self._max_path = max_path_bytes
        self.stats = ExtractStats()
        writers = _WRITERS if writers is None else writers
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="unpack-writer") if writers > 1 else None
        self._in_flight: dict[bytes, tuple[Future[bool], Member, int, memoryview]] = {}
        self._in_flight_bytes = 0

    # -- the member loop ------------------------------------------------------------------------------------

    def extract(self, stream: TarStream) -> None:
        """Extract every member of ``stream``.

        Raises:
            UnsafeArchiveError: a member is not allowed (the message names it); nothing was written outside.
            AssetError: the archive is corrupt or truncated, or a member cannot be created.
            DeviceError: the host refused a write (disk full, read-only, permissions).
        """
        stats = self.stats
        while True:
            member = stream.next()
            if member is None:
                self._drain()
                return
            stats.members += 1
            stats.bytes += member.size
            if stats.members > self._max_members:
                raise UnsafeArchiveError(
                    f"member {display_name(member.name)}: "
                    f"the archive has more than {self._max_members} members"
                )
            if stats.bytes > self._max_total:
                raise UnsafeArchiveError(
                    f"member {display_name(member.name)}: the archive's members hold more than "
                    f"{self._max_total} bytes"
                )
            if len(self._dirs) > _MAX_OPEN_DIRS:
                self._close_dirs()
            try:
                self._member(member, stream)
            except _NotADirectory as error:
                raise UnsafeArchiveError(
                    f"member {display_name(member.name)}: its path goes through {display_name(error.key)}, "
                    "which is a symbolic link or not a directory"
                ) from None
            except OSError as error:
                raise _os_error(f"member {display_name(member.name)}", error) from None

    def _member(self, member: Member, stream: TarStream) -> None:
        kind = member.type
        key = self._key(member.name, member, "path")
        if self._in_flight and key in self._in_flight:
            self._settle(key)
        if self._skipped:
            self._skipped.discard(key)
        if kind in _REGULAR and not (kind != b"7" and member.name.endswith(b"/")):
            self._file(key, member, stream)
            return
        if kind == b"5" or kind == b"D" or kind in _REGULAR:
            self._directory(key, member)
        elif kind == b"2":
            self._symlink(key, member)
        elif kind == b"1":
            self._hardlink(key, member)
        elif kind in _SKIPPED_TYPES or kind == b"V":
            self._skip(key, member)
        else:
            what = _UNSUPPORTED_TYPES.get(kind, "unknown")
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: "
                f"unsupported member type {kind.decode('latin-1')!r} ({what})"
            )
        stream.skip_data(member.size)

    def _key(self, name: bytes, member: Member, what: str) -> bytes:
        """Normalise a member path (or hard link target) to ``a/b/c`` relative to the root."""
        if name[:1] == b"/":
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: the {what} {display_name(name)} is absolute "
                "(a rootfs archive holds relative paths)"
            )
        parts = name.split(b"/")
        if b".." in parts:
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: the {what} {display_name(name)} contains '..'"
            )
        if b"" in parts or b"." in parts:
            parts = [part for part in parts if part and part != b"."]
        key = b"/".join(parts)
        if len(key) > self._max_path or b"\0" in key:
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: the {what} is too long or has a NUL byte"
            )
        return key

    # -- directories ----------------------------------------------------------------------------------------

    def _dir_fd(self, key: bytes, *, create: bool = True) -> int:
        """Return an open fd of directory ``key``, opening (or making) each component without following links.

        Raises:
            _NotADirectory: a component is a symbolic link or not a directory.
            FileNotFoundError: a component is missing and ``create`` is false.
        """
        fd = self._dirs.get(key)
        if fd is not None:
            return fd
        missing = []
        base = key
        while fd is None:
            base, _, part = base.rpartition(b"/")
            missing.append(part)
            fd = self._dirs.get(base)
        for part in reversed(missing):
            base = base + b"/" + part if base else part
            if self._in_flight and base in self._in_flight:
                self._settle(base)
            fd = self._open_dir(fd, part, base, create)
            self._dirs[base] = fd
        return fd

    def _open_dir(self, parent_fd: int, part: bytes, key: bytes, create: bool) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(part, 0o700, dir_fd=parent_fd)
            self._pending.setdefault(key, (0o755, None, -1, -1))
            return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as error:
            if error.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _NotADirectory(key) from None
            raise

    def _close_dirs(self) -> None:
        self._drain()  # writers hold some of these descriptors
        self._close_fds()

    def _close_fds(self) -> None:
        for key, fd in self._dirs.items():
            if key:
                os.close(fd)
        self._dirs = {b"": self._root_fd}

    def _directory(self, key: bytes, member: Member) -> None:
        mode = self._mode(member)
        self.stats.directories += 1
        if not key:
            return  # the root keeps the mode the rootfs needs (0755)
        if key not in self._dirs:
            parent, _, base = key.rpartition(b"/")
            parent_fd = self._dir_fd(parent)
            try:
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(base, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                    os.unlink(base, dir_fd=parent_fd)
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
        self._pending[key] = (mode, member.mtime_ns, member.uid, member.gid)

    # -- files and links ------------------------------------------------------------------------------------

    def _mode(self, member: Member) -> int:
        if member.mode & 0o7000:
            self.stats.special_bits_dropped += 1
        return member.mode & 0o777

    def _owned_by_other(self, member: Member) -> bool:
        return self._keep_owner and (member.uid, member.gid) != self._owner

    def _file(self, key: bytes, member: Member, stream: TarStream) -> None:
        if not key:
            raise UnsafeArchiveError(f"member {display_name(member.name)}: a file cannot replace the root")
        parent, _, base = key.rpartition(b"/")
        parent_fd = self._dir_fd(parent)
        mode = self._mode(member)
        if self._pool is not None:
            data = stream.take_data(member.size)
            if data is not None:
                future = self._pool.submit(self._write_new, parent_fd, base, mode, member, data)
                self._in_flight[key] = (future, member, parent_fd, data)
                self._in_flight_bytes += member.size
                self.stats.files += 1
                if len(self._in_flight) > _MAX_IN_FLIGHT or self._in_flight_bytes > _MAX_IN_FLIGHT_BYTES:
                    self._settle(next(iter(self._in_flight)))
                return
        try:
            fd = os.open(base, _FILE_FLAGS, mode, dir_fd=parent_fd)
        except FileExistsError:
            self._replace(parent_fd, base, key, member)
            fd = os.open(base, _FILE_FLAGS, mode, dir_fd=parent_fd)
        try:
            stream.write_data(fd, member.size)
            if mode & self._umask:
                os.fchmod(fd, mode)
            if self._owned_by_other(member):
                os.fchown(fd, member.uid, member.gid)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1

    def _write_new(self, parent_fd: int, base: bytes, mode: int, member: Member, data: memoryview) -> bool:
        """Create ``base`` with ``data`` (in a writer thread); return False, writing nothing, if it exists."""
        try:
            fd = os.open(base, _FILE_FLAGS, mode, dir_fd=parent_fd)
        except FileExistsError:
            return False
        try:
            written = os.write(fd, data) if data else 0
            while written < len(data):
                written += os.write(fd, data[written:])
            if mode & self._umask:
                os.fchmod(fd, mode)
            if self._owned_by_other(member):
                os.fchown(fd, member.uid, member.gid)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        finally:
            os.close(fd)
        return True

    def _settle(self, key: bytes) -> None:
        """Wait for the write of ``key``; if an earlier member was in its way, replace it and write again."""
        future, member, parent_fd, data = self._in_flight.pop(key)
        self._in_flight_bytes -= member.size
        try:
            if future.result():
                return
            base = key.rpartition(b"/")[2]
            self._replace(parent_fd, base, key, member)
            if not self._write_new(parent_fd, base, member.mode & 0o777, member, data):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        except OSError as error:
            raise _os_error(f"member {display_name(member.name)}", error) from None

    def _drain(self) -> None:
        """Wait for every write in flight (in archive order), raising the first failure."""
        while self._in_flight:
            self._settle(next(iter(self._in_flight)))

    def _replace(self, parent_fd: int, base: bytes, key: bytes, member: Member) -> None:
        """Remove what an earlier member left at ``key``, not following it (later members win, as in tar)."""
        if stat.S_ISDIR(os.stat(base, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            self._drain()  # a pending write may be about to fill this directory, or use its descriptor
            try:
                os.rmdir(base, dir_fd=parent_fd)
            except OSError:
                raise UnsafeArchiveError(
                    f"member {display_name(member.name)}: it would replace the non-empty directory "
                    f"{display_name(key)}"
                ) from None
            fd = self._dirs.pop(key, None)
            if fd is not None:
                os.close(fd)
            self._pending.pop(key, None)
        else:
            os.unlink(base, dir_fd=parent_fd)

    def _symlink(self, key: bytes, member: Member) -> None:
        target = member.linkname
        if not key:
            raise UnsafeArchiveError(f"member {display_name(member.name)}: a link cannot replace the root")
        if not target or b"\0" in target:
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: symbolic link with an empty target"
            )
        if target[:1] != b"/":
            depth = key.count(b"/")
            for part in target.split(b"/"):
                if part == b"..":
                    depth -= 1
                    if depth < 0:
                        raise UnsafeArchiveError(
                            f"member {display_name(member.name)}: symbolic link to {display_name(target)} "
                            "points outside the root"
                        )
                elif part and part != b".":
                    depth += 1
        parent, _, base = key.rpartition(b"/")
        parent_fd = self._dir_fd(parent)
        try:
            os.symlink(target, base, dir_fd=parent_fd)
        except FileExistsError:
            self._replace(parent_fd, base, key, member)
            os.symlink(target, base, dir_fd=parent_fd)
        os.utime(base, ns=(member.mtime_ns, member.mtime_ns), dir_fd=parent_fd, follow_symlinks=False)
        if self._owned_by_other(member):
            os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        self.stats.symlinks += 1

    def _hardlink(self, key: bytes, member: Member) -> None:
        target_key = self._key(member.linkname, member, "hard link target")
        if self._in_flight and target_key in self._in_flight:
            self._settle(target_key)
        if target_key in self._skipped:
            self._skip(key, member)
            return
        if not key or not target_key:
            raise UnsafeArchiveError(
                f"member {display_name(member.name)}: a hard link cannot involve the root"
            )
        if target_key == key:
            return
        missing = UnsafeArchiveError(
            f"member {display_name(member.name)}: hard link to {display_name(member.linkname)}, "
            "which is not a member extracted before it"
        )
        target_parent, _, target_base = target_key.rpartition(b"/")
        try:
            target_parent_fd = self._dir_fd(target_parent, create=False)
        except FileNotFoundError:
            raise missing from None
        parent, _, base = key.rpartition(b"/")
        parent_fd = self._dir_fd(parent)
        for attempt in (1, 2):
            try:
                os.link(
                    target_base,
                    base,
                    src_dir_fd=target_parent_fd,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
                break
            except FileNotFoundError:
                raise missing from None
            except FileExistsError:
                if attempt == 2:
                    raise
                self._replace(parent_fd, base, key, member)
            except PermissionError:
                target_mode = os.stat(target_base, dir_fd=target_parent_fd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(target_mode):
                    raise UnsafeArchiveError(
                        f"member {display_name(member.name)}: hard link to the directory "
                        f"{display_name(member.linkname)}"
                    ) from None
                raise
        self.stats.hardlinks += 1

    def _skip(self, key: bytes, member: Member) -> None:
        self._skipped.add(key)
        self.stats.skipped += 1
        if len(self.stats.skipped_names) < _MAX_SKIPPED_LISTED:
            self.stats.skipped_names.append(display_name(member.name))

    # -- after the last member ------------------------------------------------------------------------------

    def make_dirs(self, paths: Iterable[str]) -> None:
        """Create directories (mount points) that the image lacks; a file or link in their place is replaced.

        Raises:
            AssetError: a parent of one of them is a symbolic link or a file in the image.
        """
        self._drain()
        for path in paths:
            key = path.strip("/").encode()
            parent, _, base = key.rpartition(b"/")
            try:
                parent_fd = self._dir_fd(parent)
                try:
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
                except FileExistsError:
                    if stat.S_ISDIR(os.stat(base, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                        continue
                    os.unlink(base, dir_fd=parent_fd)
                    os.mkdir(base, 0o700, dir_fd=parent_fd)
                self._pending.setdefault(key, (0o755, None, -1, -1))
            except _NotADirectory as error:
                raise AssetError(
                    f"the mount point /{path} cannot be created: /{display_name(error.key)} "
                    "is a symbolic link or a file in the image"
                ) from None
            except OSError as error:
                raise _os_error(f"mount point /{path}", error) from None

    def finish(self) -> None:
        """Give directories their modes and times, deepest first (their contents changed their times).

        Raises:
            DeviceError: the host refused the change.
        """
        self._drain()
        try:
            for key in sorted(self._pending, key=lambda k: k.count(b"/"), reverse=True):
                mode, mtime_ns, uid, gid = self._pending[key]
                fd = self._dirs.pop(key, None)
                if fd is None:
                    parent, _, base = key.rpartition(b"/")
                    if len(self._dirs) > _MAX_OPEN_DIRS:
                        self._close_dirs()
                    fd = os.open(base, _DIR_FLAGS, dir_fd=self._dir_fd(parent, create=False))
                try:
                    os.fchmod(fd, mode)
                    if self._keep_owner and uid >= 0 and (uid, gid) != self._owner:
                        os.fchown(fd, uid, gid)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
            os.fchmod(self._root_fd, 0o755)
        except (OSError, _NotADirectory) as error:
            raise DeviceError(f"cannot set directory modes in the rootfs: {error}") from None

    def close(self) -> None:
        """Stop the writers and close the directory descriptors opened so far (not the root's)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()
        self._close_fds()


def _os_error(where: str, error: OSError) -> EmulatorError:
    """Classify an OSError: the host's fault (disk full, ...) or the archive's (a name too long, ...)."""
    reason = error.strerror or str(error)
    if error.errno in _HOST_ERRNOS:
        return DeviceError(f"cannot unpack {where}: {reason}")
    return AssetError(f"cannot unpack {where}: {reason}")
