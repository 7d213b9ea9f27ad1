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


def test_a_file_dockerignore_leaves_out_is_not_overlaid_and_arg_paths_are_read(tmp_path: Path) -> None:
    package = tree(
        tmp_path / "pkg",
        {
            "Dockerfile": (
                "ARG BASE=base\nARG UNSEEN=/elsewhere\nFROM $BASE\nARG APP_DIR=/panorama\n"
                "ENV CONF_DIR=${APP_DIR}/conf\nWORKDIR $APP_DIR\nCOPY src .\nCOPY conf.json ${CONF_DIR}/\n"
                "COPY extra.txt ${UNSEEN}/extra.txt\n"
            ),
            ".dockerignore": "# not the secrets\nsrc/secret.txt\n**/*.bak\n",
            "conf.json": "{}",
            "extra.txt": "",
            "src/app.py": "new",
            "src/secret.txt": "",
            "src/lib/old.bak": "",
        },
    )
    rootfs = tree(tmp_path / "rootfs", {"panorama/app.py": "old", "panorama/conf/conf.json": "{}"})
    sources = image_sources(package, rootfs)
    assert sources.targets(PurePosixPath("src/app.py")) == ["/panorama/app.py"]
    assert sources.targets(PurePosixPath("conf.json")) == ["/panorama/conf/conf.json"]
    # A global ARG is seen inside a stage only when the stage declares it again.
    assert sources.targets(PurePosixPath("extra.txt")) == []
    for left_out in ("src/secret.txt", "src/lib/old.bak"):
        assert sources.targets(PurePosixPath(left_out)) == []
        assert not sources.needs_build(PurePosixPath(left_out))
    assert sources.needs_build(PurePosixPath(".dockerignore"))
    # src holds files the build leaves out: bound file by file, so they stay out of the app's view.
    assert overlay_binds(package, sources, rootfs) == (
        (package / "src" / "app.py", "/panorama/app.py"),
        (package / "conf.json", "/panorama/conf/conf.json"),
    )


def test_a_folder_holding_a_file_left_out_is_bound_file_by_file(tmp_path: Path) -> None:
    package = tree(
        tmp_path / "pkg",
        {
            "Dockerfile": "FROM base\nCOPY src /panorama\n",
            ".dockerignore": "src/secret.txt\n",
            "src/app.py": "new",
            "src/secret.txt": "",
        },
    )
    rootfs = tree(tmp_path / "rootfs", {"panorama/app.py": "old"})
    assert overlay_binds(package, image_sources(package, rootfs), rootfs) == (
        (package / "src" / "app.py", "/panorama/app.py"),
    )
