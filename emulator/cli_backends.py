"""``panorama-emulator backends``: list the inference backends, and make the backend environments."""

from __future__ import annotations

import click

from emulator.cli import reports_errors

__all__ = ["backends_command", "register"]


@click.group("backends", invoke_without_command=True)
@click.pass_context
@reports_errors
def backends_command(context: click.Context) -> None:
    """List the inference backends: the frameworks and model files each serves, where it runs, its version,
    its state.

    Backends that run in a backend environment (mxnet, tensorflow, dlr) need it made once with
    `backends install NAME`; it is cached under the cache directory.
    """
    if context.invoked_subcommand is not None:
        return
    from emulator.backend_envs import backend_rows

    header = ("backend", "frameworks", "model files", "runs in", "version", "state")
    rows = [header] + [
        (row.backend, " ".join(row.frameworks), row.files, row.where, row.version, row.state)
        for row in backend_rows()
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    for row in rows:
        click.echo(
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        )


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
