"""``panorama-emulator backends``: list the inference backends, and make the backend environments."""

from __future__ import annotations

import click

from emulator.cli import reports_errors

__all__ = ["backends_command", "register"]


@click.group("backends", invoke_without_command=True)
@click.pass_context
@reports_errors
def backends_command(context: click.Context) -> None:
    """List the inference backends: the frameworks each serves, where it runs, its version, its state.

    Backends that run in a backend environment (mxnet, tensorflow, dlr) need it made once with
    `backends install NAME`; it is cached under the cache directory.
    """
    if context.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from emulator.backend_envs import backend_rows

    table = Table(box=None, header_style="bold")
    for column in ("backend", "frameworks", "runs in", "version", "state"):
        table.add_column(column, no_wrap=True)
    for row in backend_rows():
        table.add_row(row.backend, " ".join(row.frameworks), row.where, row.version, row.state)
    Console(highlight=False, width=160).print(table)


@backends_command.command("install")
@click.argument("names", nargs=-1, required=True, type=click.Choice(["mxnet", "tensorflow", "dlr"]))
@reports_errors
def install_command(names: tuple[str, ...]) -> None:
    """Make the backend environments NAMES (a second run finds them ready and does nothing)."""
    from emulator.backend_envs import install_environment

    for name in names:
        install_environment(name, progress=lambda line: click.echo(line, err=True))


def register(group: click.Group) -> None:
    """Add ``backends`` (and ``backends install``) to the command group."""
    group.add_command(backends_command)
