"""The panorama-cli commands that shape a project, on the ``panorama-emulator`` command line.

``init-project``, ``create-package``, ``add-panorama-package``, ``import-application``,
``package-application``, ``add-raw-model`` (also ``--model-s3-uri``), the deprecated ``build`` and
``install-alias`` (a ``panorama-cli`` script that runs this command line). Same flags and output as
panorama-cli; the work is done by :mod:`emulator.project_tools` and :mod:`emulator.packaging`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from emulator.cli import err_console, reports_errors

__all__ = ["register"]

_ACCOUNT_HELP = (
    "The account id (panorama-cli asks AWS). Default: $PANORAMA_EMULATOR_ACCOUNT_ID, else the caller's AWS "
    "account when boto3 and credentials are there, else 123456789012."
)


def _say(line: str) -> None:
    click.echo(line)


def _tell_account(account: object) -> None:
    from emulator.project_tools import AccountId

    if isinstance(account, AccountId) and account.source == "default":
        err_console.print(
            f"account id {account.value} (no AWS account found; set PANORAMA_EMULATOR_ACCOUNT_ID or pass "
            "--account-id to choose one)",
            markup=False,
            highlight=False,
        )


@click.command("init-project")
@click.option("--name", required=True, help="Name of the project.")
@reports_errors
def init_project_command(name: str) -> None:
    """Create the folders of a new project (assets/, graphs/NAME/graph.json, packages/), as panorama-cli."""
    from emulator.project_tools import init_project

    root, created = init_project(Path.cwd(), name)
    if not created:
        click.echo(f"Application {name} already exists")
        return
    click.echo(f"Successfully created the project skeleton at {root}")


@click.command("create-package")
@click.option("--name", required=True, help="Name of the package.")
@click.option(
    "--type",
    "package_type",
    default="Container",
    show_default=True,
    help="Type of the package: Model, Camera, Datasink or Container.",
)
@click.option("--version", default="1.0", show_default=True, help="Version of the package.")
@click.option("-camera", "camera", is_flag=True, help="Same as --type Camera.")
@click.option("-model", "model", is_flag=True, help="Same as --type Model.")
@click.option("--account-id", help=_ACCOUNT_HELP)
@reports_errors
def create_package_command(
    name: str, package_type: str, version: str, camera: bool, model: bool, account_id: str | None
) -> None:
    """Create packages/<account>-NAME-VERSION and add it to the graph's packages, as panorama-cli.

    Nothing is registered with AWS (panorama-cli's create-package call to AWS Panorama).
    """
    from emulator.project import Project
    from emulator.project_tools import create_package, resolve_account_id

    if camera:
        package_type = "Camera"
    elif model and package_type not in {"Camera", "Datasink"}:
        package_type = "Model"
    account = resolve_account_id(account_id)
    created = create_package(
        Project(Path.cwd()), name, package_type=package_type, version=version, account=account
    )
    if not created.created:
        click.echo(f"Package {name} already exists")
        return
    _tell_account(account)
    click.echo(f"Successfully created package {name}")


@click.command("add-panorama-package")
@click.option("--type", "package_type", required=True, help="Type of the package: camera or data_sink.")
@click.option("--name", required=True, help="Name of the package node.")
@reports_errors
def add_panorama_package_command(package_type: str, name: str) -> None:
    """Add an abstract camera or the HDMI data sink node to the graph, as panorama-cli."""
    from emulator.project import Project
    from emulator.project_tools import add_panorama_package

    if not add_panorama_package(Project(Path.cwd()), package_type, name):
        click.echo(f"Package {name} already exists")


@click.command("import-application")
@click.option("--account-id", help=_ACCOUNT_HELP)
@reports_errors
def import_application_command(account_id: str | None) -> None:
    """Give the project's packages your account id: folder names, graph.json, override.json, package.json."""
    from emulator.project import Project
    from emulator.project_tools import import_application, resolve_account_id

    account = resolve_account_id(account_id)
    imported = import_application(Project(Path.cwd()), account)
    _tell_account(account)
    for old, new in imported.renamed.items():
        err_console.print(f"packages/{old} -> packages/{new}", markup=False, highlight=False, soft_wrap=True)
    click.echo("Sucessfully imported application")


@click.command("package-application")
@click.option(
    "--packages-path",
    multiple=True,
    help="Register only these package folders (one or more; all are checked).",
)
@click.argument("more_packages", nargs=-1, metavar="")
@click.option(
    "--deploy",
    "deploy_url",
    metavar="DEVICE_URL",
    help="Then upload the application to the running `serve` at this URL and deploy it there.",
)
@click.option("--token", envvar="PANORAMA_EMULATOR_TOKEN", help="The server's token for --deploy.")
@click.option("--state-dir", help="The state directory of the local registry (default as for run).")
@reports_errors
def package_application_command(
    packages_path: tuple[str, ...],
    more_packages: tuple[str, ...],
    deploy_url: str | None,
    token: str | None,
    state_dir: str | None,
) -> None:
    """Check the application as a device would accept it and register its package versions locally.

    Where panorama-cli uploads assets to S3 and registers each package version with AWS Panorama, this checks
    every package, asset (its SHA-256) and graph (with its override.json) and writes the patch version
    (SHA-256 of package.json) to <state-dir>/registry/<account>/<package>/<version>/.
    """
    from emulator.packaging import deploy_to, package_application
    from emulator.project import Project

    if more_packages and not packages_path:
        raise click.UsageError(f"unexpected argument {more_packages[0]!r}")
    project = Project(Path.cwd())
    package_application(
        project,
        [Path(path) for path in (*packages_path, *more_packages)],
        state_dir=Path(state_dir) if state_dir else None,
        say=_say,
    )
    if deploy_url:
        answer = deploy_to(project, deploy_url, token)
        status = answer.get("status")
        boots = status.get("boots") if isinstance(status, dict) else "?"
        click.echo(f"Deployed {answer.get('app')} to {deploy_url} (boot {boots})")


@click.command("add-raw-model")
@click.option("--model-asset-name", required=True, help="Name of the model asset.")
@click.option("--model-local-path", help="The model archive (.tar.gz).")
@click.option(
    "--model-s3-uri",
    help="An s3:// URI of the model archive, fetched with your AWS credentials (needs boto3 installed).",
)
@click.option("--descriptor-path", required=True, help="The model's descriptor (mlModelDescriptor JSON).")
@click.option(
    "--packages-path", multiple=True, help="Package folder(s) whose package.json get the asset (one or more)."
)
@click.argument("more_packages", nargs=-1, metavar="")
@reports_errors
def add_raw_model_command(
    model_asset_name: str,
    model_local_path: str | None,
    model_s3_uri: str | None,
    descriptor_path: str,
    packages_path: tuple[str, ...],
    more_packages: tuple[str, ...],
) -> None:
    """Add a model archive as a model asset, as panorama-cli add-raw-model does.

    Give --model-local-path or --model-s3-uri. --packages-path takes one or more folders, like panorama-cli
    (``--packages-path A B``).
    """
    import tempfile

    from emulator.builder import MODEL_MESSAGE, add_raw_model
    from emulator.builder.s3_model import fetch_s3_object
    from emulator.project import Project

    if more_packages and not packages_path:
        raise click.UsageError(f"unexpected argument {more_packages[0]!r}")
    if bool(model_local_path) == bool(model_s3_uri):
        raise click.UsageError("give one of --model-local-path and --model-s3-uri")
    project = Project(Path.cwd())
    with tempfile.TemporaryDirectory(prefix="panorama-model-") as temp:
        source = Path(model_local_path) if model_local_path else Path(temp) / "model.tar.gz"
        if model_s3_uri:
            fetch_s3_object(model_s3_uri, source)
        built = add_raw_model(
            project,
            model_asset_name,
            source,
            Path(descriptor_path),
            [Path(path) for path in (*packages_path, *more_packages)],
            console=Console(highlight=False),
        )
    click.echo(json.dumps(built.asset, indent=4))
    click.echo(f"{MODEL_MESSAGE} {built.asset_path}")


_ALIAS = """#!{python}
# panorama-cli -> panorama-emulator: written by `panorama-emulator install-alias`.
import sys

from emulator.cli import main

sys.exit(main(prog_name="panorama-cli"))
"""
_MARK = "written by `panorama-emulator install-alias`"


@click.command("install-alias")
@click.option("--bin-dir", help="Where to write it (default: the folder of this environment's scripts).")
@click.option("--remove", is_flag=True, help="Remove the alias written before.")
@click.option("--force", is_flag=True, help="Replace a panorama-cli that this command did not write.")
@reports_errors
def install_alias_command(bin_dir: str | None, remove: bool, force: bool) -> None:
    """Write a `panorama-cli` script that runs panorama-emulator, so unmodified notebooks use the emulator.

    Opt-in: nothing named panorama-cli is installed otherwise. Every panorama-cli command that the emulator
    has (build-container, package-application, ...) then runs locally.
    """
    import os
    import sys

    from emulator.errors import ProjectError

    folder = Path(bin_dir) if bin_dir else Path(sys.executable).parent
    target = folder / "panorama-cli"
    ours = target.is_file() and _MARK in target.read_text(encoding="utf-8", errors="replace")
    if remove:
        if target.exists() and not ours:
            raise ProjectError(
                "not removed: this panorama-cli was not written by install-alias", file=str(target)
            )
        target.unlink(missing_ok=True)
        click.echo(f"removed {target}")
        return
    if target.exists() and not ours and not force:
        raise ProjectError("a panorama-cli is already there (pass --force to replace it)", file=str(target))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(_ALIAS.format(python=sys.executable), encoding="utf-8")
        os.chmod(target, 0o755)
    except OSError as error:
        raise ProjectError(f"cannot write the alias: {error.strerror or error}", file=str(target)) from None
    click.echo(f"wrote {target}: panorama-cli now runs panorama-emulator")


def register(group: click.Group) -> None:
    """Add the project commands to ``group`` (the ``panorama-emulator`` command line)."""
    for command in (
        init_project_command,
        create_package_command,
        add_panorama_package_command,
        import_application_command,
        package_application_command,
        add_raw_model_command,
        install_alias_command,
    ):
        group.add_command(command)
    build_container = group.commands["build-container"]
    group.add_command(
        click.Command(
            "build",
            callback=build_container.callback,
            params=list(build_container.params),
            help="(Deprecated) Use build-container instead. Build the package.",
            short_help="(Deprecated) Use build-container instead.",
        )
    )
