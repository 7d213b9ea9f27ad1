"""A panorama-cli project on disk: graphs, package folders, assets, and paths that must stay inside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.errors import ManifestError, ProjectError
from emulator.project import Project, split_package_dirname


def make_project(root: Path, *, packages: tuple[str, ...] = (), apps: tuple[str, ...] = ("app",)) -> Project:
    """A project like ``panorama-cli init-project`` makes, with empty package folders and graphs."""
    for sub in ("assets", "graphs", "packages"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for app in apps:
        (root / "graphs" / app).mkdir()
        (root / "graphs" / app / "graph.json").write_text("{}")
    for folder in packages:
        (root / "packages" / folder).mkdir()
    return Project(root)


def test_split_package_dirname() -> None:
    assert split_package_dirname("123456789012-SAMPLE_CODE-1.0") == ("123456789012", "SAMPLE_CODE", "1.0")
    assert split_package_dirname("123456789012-my-pkg-1.0") == ("123456789012", "my-pkg", "1.0")
    with pytest.raises(ProjectError, match="not named <account>-<package>-<version>"):
        split_package_dirname("SAMPLE_CODE")


def test_project_dirs(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert project.root == tmp_path.resolve()
    assert project.assets_dir == project.root / "assets"
    assert project.graphs_dir == project.root / "graphs"
    assert project.packages_dir == project.root / "packages"


@pytest.mark.parametrize(("present", "missing"), [(("graphs",), "packages/"), (("packages",), "graphs/")])
def test_not_a_project(tmp_path: Path, present: tuple[str, ...], missing: str) -> None:
    for sub in present:
        (tmp_path / sub).mkdir()
    with pytest.raises(ProjectError, match=f"no {missing} directory") as caught:
        Project(tmp_path)
    assert caught.value.file == str(tmp_path.resolve())


def test_project_root_missing(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        Project(tmp_path / "nowhere")


def test_assets_dir_is_optional(tmp_path: Path) -> None:
    (tmp_path / "graphs").mkdir()
    (tmp_path / "packages").mkdir()
    assert Project(tmp_path).assets_dir == tmp_path.resolve() / "assets"


def test_graph_path_finds_the_only_graph(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert project.graph_path() == project.root / "graphs/app/graph.json"
    assert project.app_name(project.graph_path()) == "app"


def test_graph_path_none_or_several(tmp_path: Path) -> None:
    project = make_project(tmp_path, apps=())
    with pytest.raises(ProjectError, match=r"no graphs/<app>/graph\.json"):
        project.graph_path()
    for app in ("one", "two"):
        (tmp_path / "graphs" / app).mkdir()
        (tmp_path / "graphs" / app / "graph.json").write_text("{}")
    with pytest.raises(ProjectError, match=r"several application graphs \(graphs/one/graph.json, graphs/two"):
        project.graph_path()


def test_graph_path_given_relative_to_root_or_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path / "proj", apps=("one", "two"))
    (tmp_path / "proj/graphs/one/graph_with_hdmi.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert project.graph_path(Path("graphs/two/graph.json")) == project.root / "graphs/two/graph.json"
    chosen = project.graph_path(Path("graphs/one/graph_with_hdmi.json"))
    assert project.app_name(chosen) == "one"
    (elsewhere / "mine.json").write_text("{}")
    assert project.graph_path(Path("mine.json")) == elsewhere / "mine.json"
    assert project.app_name(elsewhere / "mine.json") == "elsewhere"
    with pytest.raises(ProjectError, match="file not found") as caught:
        project.graph_path(Path("graphs/three/graph.json"))
    assert caught.value.file == "graphs/three/graph.json"
    with pytest.raises(ProjectError, match="is a directory"):
        project.resolve_file("graphs/one")


def test_app_name_must_be_a_safe_folder_name(tmp_path: Path) -> None:
    project = make_project(tmp_path, apps=("my app",))
    with pytest.raises(ProjectError, match="application name 'my app'"):
        project.app_name(project.graph_path())


def test_package_dirs(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        packages=(
            "123456789012-SAMPLE_CODE-1.0",
            "123456789012-SAMPLE_CODE-1.10",
            "123456789012-SAMPLE_CODE-1.9",
            "123456789012-my-model-1.0",
            "not_a_package",
        ),
    )
    (tmp_path / "packages" / "123456789012-FILE-1.0").write_text("a file, not a folder")
    assert project.package_dirs() == {
        "123456789012::SAMPLE_CODE": project.packages_dir / "123456789012-SAMPLE_CODE-1.10",
        "123456789012::my-model": project.packages_dir / "123456789012-my-model-1.0",
    }
    assert project.package_dir("123456789012::SAMPLE_CODE", "1.9").name == "123456789012-SAMPLE_CODE-1.9"
    assert project.package_dir("123456789012::my-model").name == "123456789012-my-model-1.0"


def test_package_dir_errors_name_the_package(tmp_path: Path) -> None:
    project = make_project(tmp_path, packages=("123456789012-SAMPLE_CODE-1.0",))
    with pytest.raises(ProjectError, match=r"package 123456789012::OTHER not found: no folder packages/"):
        project.package_dir("123456789012::OTHER")
    with pytest.raises(ProjectError, match=r"version 2.0 not found.*found version 1.0"):
        project.package_dir("123456789012::SAMPLE_CODE", "2.0")
    with pytest.raises(ProjectError, match="is not <account>::<package>"):
        project.package_dir("SAMPLE_CODE")


def test_load_package(tmp_path: Path) -> None:
    project = make_project(tmp_path, packages=("123456789012-SAMPLE_CODE-1.0",))
    package_json = project.packages_dir / "123456789012-SAMPLE_CODE-1.0" / "package.json"
    with pytest.raises(ProjectError, match="file not found"):
        project.load_package("123456789012::SAMPLE_CODE")
    doc = {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "interfaces": [{"name": "interface", "category": "business_logic"}],
        }
    }
    package_json.write_text(json.dumps(doc))
    package = project.load_package("123456789012::SAMPLE_CODE")
    assert (package.name, package.version) == ("SAMPLE_CODE", "1.0")
    package_json.write_text("{")
    with pytest.raises(ManifestError):
        project.load_package("123456789012::SAMPLE_CODE")


def test_resolve_package_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path / "proj", packages=("123456789012-SAMPLE_CODE-1.0", "badly_named"))
    expected = project.packages_dir / "123456789012-SAMPLE_CODE-1.0"
    monkeypatch.chdir(project.root)
    assert project.resolve_package_path("packages/123456789012-SAMPLE_CODE-1.0") == expected
    assert project.resolve_package_path("packages/123456789012-SAMPLE_CODE-1.0/") == expected
    monkeypatch.chdir(tmp_path)
    assert project.resolve_package_path(Path("packages/123456789012-SAMPLE_CODE-1.0")) == expected
    assert project.resolve_package_path(expected) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("packages/123456789012-MISSING-1.0", "not a directory"),
        ("packages", "directly inside"),
        ("graphs/app", "directly inside"),
        ("packages/../graphs/app", "directly inside"),
        ("packages/123456789012-SAMPLE_CODE-1.0/src", "directly inside"),
        ("packages/badly_named", "not named <account>-<package>-<version>"),
        ("packages/escape-LINK-1.0", "directly inside"),
        ("/", "directly inside"),
    ],
)
def test_resolve_package_path_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, message: str
) -> None:
    project = make_project(tmp_path / "proj", packages=("123456789012-SAMPLE_CODE-1.0", "badly_named"))
    (project.packages_dir / "123456789012-SAMPLE_CODE-1.0" / "src").mkdir()
    outside = tmp_path / "outside-PKG-1.0"
    outside.mkdir()
    (project.packages_dir / "escape-LINK-1.0").symlink_to(outside)
    monkeypatch.chdir(project.root)
    with pytest.raises(ProjectError, match=message):
        project.resolve_package_path(path)


def test_asset_path(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    blob = project.assets_dir / ("a" * 64 + ".tar.gz")
    blob.write_bytes(b"x")
    assert project.asset_path("a" * 64 + ".tar.gz") == blob
    with pytest.raises(ProjectError, match="not found in") as caught:
        project.asset_path("b" * 64 + ".json")
    assert caught.value.asset == "b" * 64 + ".json"
    assert "build the package first" in str(caught.value)


@pytest.mark.parametrize(
    "uri", ["", ".", "..", "../graphs/app/graph.json", "a/b.json", "/etc/passwd", "a\\b", "x\0"]
)
def test_asset_path_never_leaves_assets(tmp_path: Path, uri: str) -> None:
    project = make_project(tmp_path)
    with pytest.raises(ProjectError, match="plain file name"):
        project.asset_path(uri)


def test_names_too_long_for_the_file_system(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    long_name = "\u00e9" * 200  # 400 bytes: more than a file name may have
    with pytest.raises(ProjectError, match="not found"):
        project.asset_path(long_name + ".json")
    with pytest.raises(ProjectError, match="file not found"):
        project.graph_path(Path(long_name))
    with pytest.raises(ProjectError, match="not a directory"):
        project.resolve_package_path("packages/" + long_name)


def test_asset_symlink_out_of_assets_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (project.assets_dir / "link.json").symlink_to(secret)
    with pytest.raises(ProjectError, match="resolves outside"):
        project.asset_path("link.json")
