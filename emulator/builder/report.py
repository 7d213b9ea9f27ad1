"""What a person sees during a build: the engine's steps and output as they happen, and the export's
progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from emulator.builder.docker_build import BuildEvent

__all__ = ["BuildReporter", "export_progress", "progress_callback"]


class BuildReporter:
    """Prints build events on a console: steps in bold, step output as is, the engine's bookkeeping dimmed,
    pull progress once per layer and state.

    Args:
        console: where to print.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._statuses: set[str] = set()

    def __call__(self, event: BuildEvent) -> None:
        """Print one event."""
        if self.console.quiet:
            return
        if event.kind == "step":
            self.console.print(Text(event.text, style="bold"), soft_wrap=True)
        elif event.kind == "status":
            state = event.text.split(" [", 1)[0]
            if state not in self._statuses:
                self._statuses.add(state)
                self.console.print(Text(state, style="dim"), soft_wrap=True)
        elif event.text.startswith((" ---> ", "Removing intermediate container", "Successfully ")):
            self.console.print(Text(event.text, style="dim"), soft_wrap=True)
        else:
            # Step output keeps its colours (the classic builder paints stderr lines red).
            self.console.print(Text.from_ansi(event.text), soft_wrap=True)

    def say(self, text: str, style: str = "") -> None:
        """Print a line of the build stage's own."""
        self.console.print(Text(text, style=style), soft_wrap=True)


@contextmanager
def export_progress(console: Console, description: str, estimate: int) -> Iterator[Progress | None]:
    """A transient progress bar of exported bytes (none on a quiet console or one that is not a terminal).

    Args:
        console: where to show it.
        description: the bar's label.
        estimate: the expected number of bytes (the image size); the bar turns indeterminate beyond it.

    Returns:
        The progress (task id 0 is the export), or None when nothing is shown.
    """
    if console.quiet or not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(description, total=estimate or None)
        yield progress


def progress_callback(progress: Progress | None, estimate: int) -> Callable[[int], None]:
    """A callback for ``compress_to_assets`` that advances task 0 of ``progress``."""

    def update(done: int) -> None:
        if progress is not None:
            task = progress.tasks[0]
            total = estimate if done <= estimate else None
            progress.update(task.id, completed=done, total=total)

    return update
