"""Benchmark: the developer's loop, from saving app.py to the first frame the new code takes.

The people-counter sample is copied and built once (warm engine cache). Then, in the same run, for several
rounds each way, a one-line change to its app.py (a line printed when the new code has its first frame):

- the loop without ``dev``: ``panorama-emulator build-container --local-image`` then
  ``panorama-emulator run --frames 1``, from the save until the new line comes out of ``run`` (the figure the
  issue of the loop measured as 4.2 s + 2.0 s), and the two commands' whole wall time;
- ``dev`` (``emulator.dev.DevSession``, running): from the save until the new line comes out of the node.

    python bench/devloop.py [--rounds 5] [--record]

`--record` writes the figures into bench/BENCHMARKS.md under "Developer loop".
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "panorama-emulator-bench" / "devloop"
BENCHMARKS = Path(__file__).resolve().parent / "BENCHMARKS.md"
SECTION = "## Developer loop"
SAMPLE = "people-counter"
ASSET = "code"
PACKAGE = "123456789012-PEOPLE_COUNTER_CODE-1.0"
CLI = str(Path(sys.executable).parent / "panorama-emulator")
GET = "        streams = self.inputs.video_in.get()\n"


def prepare() -> Path:
    """Copy the sample into the work directory and build its asset once (the engine's cache warm)."""
    from rich.console import Console

    from emulator.builder import build_container, ensure_base_image
    from emulator.project import Project

    ensure_base_image(console=Console(file=io.StringIO()))
    project = WORK / SAMPLE
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(REPO / "sample-apps" / SAMPLE, project)
    build_container(
        Project(project), ASSET, project / "packages" / PACKAGE, local_image=True,
        console=Console(file=io.StringIO()),
    )  # fmt: skip
    return project


def save(project: Path, original: str, marker: str) -> float:
    """Write app.py with a line printed at the new code's first frame; the time of the save."""
    if GET not in original:
        raise SystemExit("the sample's app.py changed: the benchmark cannot place its line")
    text = original.replace(
        GET, GET + f'        if not getattr(self, "_said", 0):\n            self._said = 1\n'
        f'            print("{marker}", flush=True)\n', 1,
    )  # fmt: skip
    app = project / "packages" / PACKAGE / "src" / "app.py"
    started = time.perf_counter()
    app.write_text(text)
    return started


def baseline_round(project: Path, original: str, state: Path, number: int) -> tuple[float, float]:
    """(save -> new line, save -> both commands done) of build-container + run --frames 1."""
    marker = f"devloop-bench: baseline {number}"
    started = save(project, original, marker)
    subprocess.run(
        [CLI, "build-container", "--container-asset-name", ASSET, "--package-path", f"packages/{PACKAGE}",
         "--local-image"],
        cwd=project, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run = subprocess.Popen(
        [CLI, "run", "--frames", "1", "--device", "bench-baseline", "--state-dir", str(state)],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    seen = 0.0
    assert run.stdout is not None
    for line in run.stdout:
        if marker in line and not seen:
            seen = time.perf_counter()
    if run.wait() != 0 or not seen:
        raise SystemExit(f"run --frames 1 failed (status {run.returncode}) or the new line never came")
    return seen - started, time.perf_counter() - started


def dev_rounds(project: Path, original: str, state: Path, rounds: int) -> tuple[list[float], list[float]]:
    """(save -> new line, the loop's own save -> first frame figure) for each round with ``dev``."""
    from emulator.dev import DevSession

    seen: dict[str, float] = {}
    arrived = threading.Condition()

    def echo(node: str, line: str) -> None:
        with arrived:
            seen.setdefault(line, time.perf_counter())
            arrived.notify_all()

    session = DevSession(project, device="bench-dev", state_dir=state, echo=echo)
    session.start()
    try:
        times, reported = [], []
        for number in range(rounds + 1):
            marker = f"devloop-bench: dev {number}"
            before = len([event for event in session.events if event.kind == "restart"])
            started = save(project, original, marker)
            with arrived:
                if not arrived.wait_for(lambda marker=marker: marker in seen, timeout=300):  # type: ignore[misc]
                    raise SystemExit(f"dev: the new line never came; events: {session.events}")
            deadline = time.monotonic() + 60
            while len([event for event in session.events if event.kind == "restart"]) == before:
                if time.monotonic() > deadline:
                    raise SystemExit("dev printed no restart line")
                time.sleep(0.02)
            if number == 0:
                continue  # the first save after the boot: the page cache of the rootfs is still warming up
            times.append(seen[marker] - started)
            event = [event for event in session.events if event.kind == "restart"][-1]
            if event.seconds is not None:
                reported.append(event.seconds)
            time.sleep(1.0)
        if any(event.kind == "rebuild" for event in session.events):
            raise SystemExit("dev rebuilt the asset for a change of app.py")
        return times, reported
    finally:
        session.close()


def section(
    base: list[float], whole: list[float], dev: list[float], reported: list[float], rounds: int
) -> str:
    b, w, d = statistics.median(base), statistics.median(whole), statistics.median(dev)
    return "\n".join([
        SECTION,
        "",
        f"`python bench/devloop.py --rounds {rounds}` - {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}, as {'root' if os.geteuid() == 0 else 'an ordinary user'}. "
        "people-counter (synthetic 1920x1080 camera), a one-line change to its app.py per round, "
        f"{rounds} rounds each way in the same run; median wall times.",
        "",
        "| | save -> first frame of the new code | worst round |",
        "|---|---|---|",
        f"| `build-container --local-image` + `run --frames 1` (warm engine cache) | **{b:.2f} s** "
        f"| {max(base):.2f} s |",
        f"| `dev` (node restarted over the saved sources, no rebuild) | **{d:.2f} s** | {max(dev):.2f} s |",
        f"| **ratio dev / build + run** | **{d / b:.2f}x** | |",
        "",
        f"The two commands' whole wall time (build, then run to its end): {w:.2f} s median. `dev`'s own "
        f"restart line reported {statistics.median(reported):.2f} s median from the file's modification "
        "time to the node's first frame.",
        "",
        "Target: save -> first frame under 0.25x of `build-container` + `run --frames 1`.",
        "",
    ])  # fmt: skip


def record(text: str) -> None:
    document = (
        BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nLatest figures from `bench/`.\n\n"
    )
    start = document.find(SECTION + "\n")
    if start < 0:
        document = document.rstrip("\n") + "\n\n" + text
    else:
        following = document.find("\n## ", start + len(SECTION))
        document = document[:start] + text + ("\n" + document[following + 1 :] if following >= 0 else "")
    BENCHMARKS.write_text(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="write the figures into bench/BENCHMARKS.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    state = WORK / "state"
    shutil.rmtree(state, ignore_errors=True)
    try:
        project = prepare()
        original = (project / "packages" / PACKAGE / "src" / "app.py").read_text()
        base, whole = [], []
        for number in range(args.rounds):
            seen, done = baseline_round(project, original, state, number)
            base.append(seen)
            whole.append(done)
        dev, reported = dev_rounds(project, original, state, args.rounds)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    text = section(base, whole, dev, reported, args.rounds)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
