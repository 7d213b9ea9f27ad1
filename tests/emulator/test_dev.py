"""The dev loop without an engine: the binds that lay a package's sources over an image, what a save is."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from emulator.builder.copies import image_sources
from emulator.dev import overlay_binds, snapshot


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_folder_whose_image_copy_holds_only_its_files_is_bound_whole(tmp_path: Path) -> None:
    package = tree(tmp_path / "pkg", {"Dockerfile": "FROM base\nCOPY src /panorama\n", "src/app.py": "new"})
    rootfs = tree(
        tmp_path / "rootfs", {"panorama/app.py": "old", "panorama/__pycache__/app.cpython-38.pyc": ""}
    )
    binds = overlay_binds(package, image_sources(package, rootfs), rootfs)
    assert binds == ((package / "src", "/panorama"),)


def test_a_folder_sharing_its_target_with_other_files_is_bound_file_by_file(tmp_path: Path) -> None:
    package = tree(
        tmp_path / "pkg",
        {
            "Dockerfile": "FROM base\nCOPY requirements.txt /panorama/requirements.txt\nCOPY src /panorama\n",
            "requirements.txt": "",
            "src/app.py": "new",
            "src/lib/util.py": "",
            "src/brand_new.py": "",
        },
    )
    rootfs = tree(
        tmp_path / "rootfs",
        {"panorama/app.py": "old", "panorama/lib/util.py": "", "panorama/requirements.txt": ""},
    )
    binds = overlay_binds(package, image_sources(package, rootfs), rootfs)
    assert binds == (
        (package / "requirements.txt", "/panorama/requirements.txt"),
        (package / "src" / "app.py", "/panorama/app.py"),
        (package / "src" / "lib" / "util.py", "/panorama/lib/util.py"),
    )


def test_a_snapshot_leaves_out_editor_files_and_caches(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "app.py": "",
            ".app.py.swp": "",
            "app.py~": "",
            ".#app.py": "",
            "4913": "",
            "__pycache__/app.pyc": "",
        },
    )
    assert set(snapshot(tmp_path)) == {PurePosixPath("app.py")}
