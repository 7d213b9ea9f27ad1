"""The storage browser's path checks: nothing outside the app's storage is ever listed or read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emulator.api.errors import NotFoundError, RequestError
from emulator.api.storage import list_storage, open_storage_file, resolve_storage_path, storage_file


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    (root / "sub").mkdir(parents=True)
    (root / "count.txt").write_text("3")
    (root / "sub" / "inner.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "escape")
    os.symlink("/etc", root / "etc-link")
    os.symlink("count.txt", root / "alias")
    return root


def test_lists_a_folder_sorted_with_kinds_and_sizes(storage: Path) -> None:
    entries = {entry.name: entry for entry in list_storage(storage)}
    assert sorted(entries) == ["alias", "count.txt", "escape", "etc-link", "sub"]
    assert (entries["count.txt"].kind, entries["count.txt"].size) == ("file", 1)
    assert entries["sub"].kind == "dir"
    assert entries["alias"].kind == "file"  # a link that stays inside is followed
    assert entries["escape"].kind == entries["etc-link"].kind == "link"  # never followed
    assert [entry.path for entry in list_storage(storage, "sub")] == ["sub/inner.json"]


def test_absent_root_lists_empty(tmp_path: Path) -> None:
    assert list_storage(tmp_path / "never-made") == []


@pytest.mark.parametrize(
    "path",
    ["..", "../secret.txt", "sub/../../secret.txt", "/etc/passwd", "/", "sub/..", "a\x00b", "..\\secret.txt"],
)
def test_refuses_paths_that_leave_or_are_absolute(storage: Path, path: str) -> None:
    with pytest.raises(RequestError):
        resolve_storage_path(storage, path)
    with pytest.raises(RequestError):
        storage_file(storage, path)


@pytest.mark.parametrize("path", ["escape", "etc-link", "etc-link/passwd"])
def test_refuses_links_leading_out(storage: Path, path: str) -> None:
    with pytest.raises(RequestError, match="leads out"):
        storage_file(storage, path)
    with pytest.raises(RequestError):
        list_storage(storage, path)


def test_reads_files_and_links_inside(storage: Path) -> None:
    handle, size = open_storage_file(storage, "sub/inner.json")
    with handle:
        assert (handle.read(), size) == (b"{}", 2)
    handle, _ = open_storage_file(storage, "./alias")
    with handle:
        assert handle.read() == b"3"


def test_missing_and_wrong_kinds(storage: Path) -> None:
    with pytest.raises(NotFoundError):
        storage_file(storage, "nope.txt")
    with pytest.raises(RequestError, match="not a regular file"):
        storage_file(storage, "sub")
    with pytest.raises(RequestError, match="not a folder"):
        list_storage(storage, "count.txt")
    with pytest.raises(RequestError):
        storage_file(storage, "")
