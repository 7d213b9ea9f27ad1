"""Where a Dockerfile's COPY and ADD put a package's files, and which files only a build brings in."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from emulator.builder.copies import image_sources


def package(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_copied_folder_lands_at_its_target_and_requirements_need_a_build(tmp_path: Path) -> None:
    folder = package(
        tmp_path,
        "FROM base\nCOPY requirements.txt /panorama/requirements.txt\n"
        "RUN python3 -m pip install -r /panorama/requirements.txt\nCOPY src /panorama\n",
        {"requirements.txt": "", "src/app.py": "", "src/lib/util.py": "", "notes.md": ""},
    )
    sources = image_sources(folder)
    assert sources.targets(PurePosixPath("src/app.py")) == ["/panorama/app.py"]
    assert sources.targets(PurePosixPath("src/lib/util.py")) == ["/panorama/lib/util.py"]
    assert sources.targets(PurePosixPath("notes.md")) == []
    assert sources.needs_build(PurePosixPath("requirements.txt"))
    assert sources.needs_build(PurePosixPath("Dockerfile"))
    assert sources.needs_build(PurePosixPath("descriptor.json"))
    assert not sources.needs_build(PurePosixPath("src/app.py"))


def test_workdir_relative_targets_wildcards_json_form_and_flags(tmp_path: Path) -> None:
    folder = package(
        tmp_path,
        'FROM base\nWORKDIR /opt\nWORKDIR app\nCOPY --chown=0:0 ["main.py", "./"]\nCOPY *.cfg conf/\n'
        "COPY one.txt /etc/one\nRUN pip install -r requirements.txt\n",
        {"main.py": "", "a.cfg": "", "b.cfg": "", "one.txt": ""},
    )
    sources = image_sources(folder)
    assert sources.targets(PurePosixPath("main.py")) == ["/opt/app/main.py"]
    assert sources.targets(PurePosixPath("a.cfg")) == ["/opt/app/conf/a.cfg"]
    assert sources.targets(PurePosixPath("one.txt")) == ["/etc/one"]
    assert sources.read_by_run(PurePosixPath("requirements.txt"))


def test_copy_into_an_existing_folder_of_the_image_keeps_the_name(tmp_path: Path) -> None:
    folder = package(tmp_path / "pkg", "FROM base\nCOPY app.py /panorama\n", {"app.py": ""})
    rootfs = tmp_path / "rootfs"
    (rootfs / "panorama").mkdir(parents=True)
    assert image_sources(folder, rootfs).targets(PurePosixPath("app.py")) == ["/panorama/app.py"]
    assert image_sources(folder).targets(PurePosixPath("app.py")) == ["/panorama"]


def test_earlier_stages_add_archives_and_copy_from_need_a_build(tmp_path: Path) -> None:
    folder = package(
        tmp_path,
        "FROM base AS build\nCOPY tool.c /src/\nRUN make\nFROM base\nCOPY --from=build /out /out\n"
        "ADD bundle.tar.gz /opt/\nCOPY . /panorama/\n",
        {"tool.c": "", "bundle.tar.gz": "", "app.py": ""},
    )
    sources = image_sources(folder)
    assert sources.needs_build(PurePosixPath("tool.c"))
    assert sources.needs_build(PurePosixPath("bundle.tar.gz"))
    assert sources.targets(PurePosixPath("app.py")) == ["/panorama/app.py"]
    assert not sources.needs_build(PurePosixPath("app.py"))
