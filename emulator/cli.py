"""The `panorama-emulator` command line: a thin layer over the Python API.

Every command turns an ``EmulatorError`` into one line on stderr (one per manifest problem) and exit status 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from emulator.errors import EmulatorError

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True, highlight=False)


def reports_errors(func: F) -> F:
    """Turn an EmulatorError raised by a command into its message on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EmulatorError as error:
            for line in str(error).splitlines() or [type(error).__name__]:
                err_console.print(f"[bold red]error:[/] {line}", markup=True, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="panorama-emulator")
def main() -> None:
    """An AWS Panorama appliance on your Linux machine.

    Build panorama-cli compatible assets, then run them as the appliance does.
    """
