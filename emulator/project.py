"""A panorama-cli project on disk: its graphs, package folders and content-addressed assets.

assets/<sha256>.tar.gz, <sha256>.json
graphs/<app>/graph.json
packages/<account>-<name>-<version>/package.json
"""

from __future__ import annotations

import re
from pathlib import Path

from emulator.errors import ProjectError
from emulator.manifests import Package, load_package, package_folder_parts

__all__ = ["Project", "split_package_dirname"]

_APP_NAME = re.compile(r"^[A-Za-z0-9_.$-]+$")


def split_package_dirname(dirname: str) -> tuple[str, str, str]:
    """Split a package folder name into account, package name and version, as panorama-cli does.

    Args:
        dirname: a folder name such as ``123456789012-SAMPLE_CODE-1.0``.

    Returns:
        ``("123456789012", "SAMPLE_CODE", "1.0")``; the name is everything between the first and last hyphen.

    Raises:
        ProjectError: the name is not ``<account>-<name>-<version>``.
    """
    parts = package_folder_parts(dirname)
    if parts is None:
        raise ProjectError(
            f"package folder {dirname!r} is not named <account>-<package>-<version> "
            "(for example 123456789012-SAMPLE_CODE-1.0)"
        )
    return parts


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    numbers = tuple(int(part) for part in re.findall(r"\d+", version))
    return numbers, version


class Project:
    """A panorama-cli project rooted at ``root``.

    Args:
        root: the project directory (it holds ``packages/`` and ``graphs/``).

    Raises:
        ProjectError: ``root`` is not a directory or lacks ``packages/`` or ``graphs/``.
    """

    def __init__(self, root: Path) -> None:
        given = Path(root)
        if not given.is_dir():
            raise ProjectError("the project directory does not exist", file=str(given))
        self.root = given.resolve()
        self.assets_dir = self.root / "assets"
        self.graphs_dir = self.root / "graphs"
        self.packages_dir = self.root / "packages"
        missing = [f"{path.name}/" for path in (self.packages_dir, self.graphs_dir) if not path.is_dir()]
        if missing:
            raise ProjectError(
                f"not a panorama-cli project: no {' and no '.join(missing)} directory "
                "(run from the project root or pass --project)",
                file=str(self.root),
            )

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    def resolve_file(self, path: str | Path) -> Path:
        """Find a file given absolute, relative to the current directory, or relative to the project root.

        Args:
            path: the file as the user gave it.

        Returns:
            the existing file.

        Raises:
            ProjectError: no such file.
        """
        given = Path(path)
        candidates = [given] if given.is_absolute() else [Path.cwd() / given, self.root / given]
        for candidate in candidates:
            if _is_file(candidate):
                return candidate
        if any(_is_dir(candidate) for candidate in candidates):
            raise ProjectError("is a directory, expected a file", file=str(path))
        where = "" if given.is_absolute() else " (looked in the current directory and the project root)"
        raise ProjectError(f"file not found{where}", file=str(path))

    def graph_path(self, graph: Path | None = None) -> Path:
        """Return the application graph: the given one, else the only ``graphs/*/graph.json``.

        Args:
            graph: a graph file (absolute, relative to the current directory or to the project root), or None.

        Returns:
            the graph file.

        Raises:
            ProjectError: the file is missing, or there is no graph or more than one to choose from.
        """
        if graph is not None:
            return self.resolve_file(graph)
        found = sorted(path for path in self.graphs_dir.glob("*/graph.json") if path.is_file())
        if not found:
            raise ProjectError("no graphs/<app>/graph.json in the project", file=str(self.graphs_dir))
        if len(found) > 1:
            names = ", ".join(str(path.relative_to(self.root)) for path in found)
            raise ProjectError(f"several application graphs ({names}): choose one with --graph")
        return found[0]

    def app_name(self, graph_path: Path) -> str:
        """Return the application name of a graph: ``graphs/<app>/graph.json`` gives ``<app>``.

        A graph outside ``graphs/`` is named after its folder.

        Args:
            graph_path: the graph file.

        Returns:
            the application name (safe as a single folder name).

        Raises:
            ProjectError: the name cannot be used as a folder name.
        """
        path = Path(graph_path).absolute()
        try:
            relative = path.resolve().relative_to(self.graphs_dir.resolve())
            name = relative.parts[0] if len(relative.parts) > 1 else path.parent.name
        except ValueError:
            name = path.parent.name
        if not _APP_NAME.fullmatch(name) or name in {".", ".."}:
            raise ProjectError(
                f"application name {name!r} (the graph's folder) must use only letters, digits and _ . $ -",
                file=str(graph_path),
            )
        return name

    def _package_versions(self) -> dict[str, dict[str, Path]]:
        versions: dict[str, dict[str, Path]] = {}
        try:
            children = sorted(self.packages_dir.iterdir())
        except OSError as error:
            raise ProjectError(
                f"cannot list packages: {error.strerror or error}", file=str(self.packages_dir)
            ) from None
        for child in children:
            parts = package_folder_parts(child.name)
            if parts is None or not child.is_dir():
                continue
            account, name, version = parts
            versions.setdefault(f"{account}::{name}", {})[version] = child
        return versions

    def package_dirs(self) -> dict[str, Path]:
        """Map every package of the project to its folder.

        Returns:
            ``{"account::NAME": packages/account-NAME-version}``; when a package has several version folders,
            the highest version.
        """
        result = {}
        for ref, versions in self._package_versions().items():
            result[ref] = versions[max(versions, key=_version_key)]
        return result

    def package_dir(self, ref: str, version: str | None = None) -> Path:
        """Return the folder of package ``ref`` (``account::NAME``).

        Args:
            ref: the package reference as a graph names it.
            version: the version the graph asks for; None accepts the only (or highest) version.

        Returns:
            ``packages/<account>-<NAME>-<version>``.

        Raises:
            ProjectError: no such package folder (or not in that version).
        """
        account, sep, name = ref.partition("::")
        if not sep or not account or not name:
            raise ProjectError(f"package reference {ref!r} is not <account>::<package>")
        versions = self._package_versions().get(ref)
        if not versions:
            raise ProjectError(
                f"package {ref} not found: no folder packages/{account}-{name}-<version>",
                file=str(self.packages_dir),
            )
        if version is None:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            have = ", ".join(sorted(versions, key=_version_key))
            raise ProjectError(
                f"package {ref} version {version} not found: no folder packages/{account}-{name}-{version} "
                f"(found version {have})",
                file=str(self.packages_dir),
            )
        return versions[version]

    def add_raw_model_hint(self, asset: str, package_dir: Path) -> str:
        """How to put a missing model asset back: the ``add-raw-model`` command line for its package.

        Args:
            asset: the model asset's name in package.json.
            package_dir: the model package's folder.

        Returns:
            ``add it with: panorama-emulator add-raw-model ...``, the package folder relative to the project.
        """
        try:
            shown = package_dir.relative_to(self.root)
        except ValueError:
            shown = package_dir
        return (
            f"add it with: panorama-emulator add-raw-model --model-asset-name {asset} "
            f"--model-local-path MODEL.tar.gz --descriptor-path DESCRIPTOR.json --packages-path {shown}"
        )

    def resolve_package_path(self, path: str | Path) -> Path:
        """Check a ``--package-path``: an existing folder directly inside ``packages/``.

        Args:
            path: absolute, relative to the current directory, or relative to the project root.

        Returns:
            the resolved package folder.

        Raises:
            ProjectError: the folder does not exist, is outside ``packages/`` or is not named
                ``<account>-<name>-<version>``.
        """
        given = Path(path)
        if given.is_absolute():
            candidate = given
        else:
            candidate = Path.cwd() / given
            if not _is_dir(candidate):
                candidate = self.root / given
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            raise ProjectError("package path cannot be resolved", file=str(path)) from None
        if not _is_dir(resolved):
            raise ProjectError("package path is not a directory", file=str(path))
        if resolved.parent != self.packages_dir.resolve():
            raise ProjectError(
                f"package path must be a folder directly inside {self.packages_dir}", file=str(path)
            )
        split_package_dirname(resolved.name)
        return resolved

    def load_package(self, ref: str, version: str | None = None) -> Package:
        """Load the ``package.json`` of package ``ref``.

        Args:
            ref: ``account::NAME``.
            version: the version the graph asks for, or None.

        Returns:
            the package.

        Raises:
            ProjectError: no such package folder or no package.json.
            ManifestError: package.json is invalid.
        """
        return load_package(self.package_dir(ref, version) / "package.json")

    def asset_path(self, uri: str) -> Path:
        """Return ``assets/<uri>``, which must exist and stay inside ``assets/``.

        Args:
            uri: an ``assetUri`` or ``descriptorUri`` from package.json (a plain file name).

        Returns:
            the blob.

        Raises:
            ProjectError: the name is not a plain file name or the blob is missing (``asset=uri``).
        """
        if not isinstance(uri, str) or not uri or uri in {".", ".."} or any(c in uri for c in "/\\\0"):
            raise ProjectError("is not a plain file name inside assets/", asset=str(uri))
        path = self.assets_dir / uri
        if not _is_file(path):
            raise ProjectError(
                f"not found in {self.assets_dir} (build the package first, or restore the file)", asset=uri
            )
        if path.resolve().parent != self.assets_dir.resolve():
            raise ProjectError(f"resolves outside {self.assets_dir}", asset=uri)
        return path
