"""Benchmark: boot and reboot times of the appliance, with the root filesystem already unpacked.

Two sample apps are built with the build stage (from the stand-in base image) and deployed once to a fresh
device (the first deploy, which copies and unpacks the assets, is timed too). Then, for several rounds:

- boot -> entry point: ``Appliance.boot()`` until the first line the boot-counter app prints at start
  reaches the host (sandbox set-up, Python start-up inside the rootfs, the app's first statements);
- reboot -> entry point: ``Appliance.reboot()`` of the running boot-counter (graceful: SIGTERM, the app
  exits, a new boot) until its first line again;
- boot -> first frame and reboot -> first frame: the people-counter app with a synthetic 1920x1080 camera,
  until the first output reaches the HDMI sink (the frame went camera -> app -> HDMI).

    python bench/boot.py [--rounds 10] [--record]

`--record` writes the figures into bench/BENCHMARKS.md under "Boot".
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from emulator import Appliance

REPO = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "panorama-emulator-bench" / "boot"
BENCHMARKS = Path(__file__).resolve().parent / "BENCHMARKS.md"
SECTION = "## Boot"
IDLE = 0.5  # seconds between the app's start and the next reboot or shutdown: it is in its idle loop by then
SAMPLES = {
    "boot-counter": ("boot_counter_code", "123456789012-BOOT_COUNTER-1.0"),
    "people-counter": ("code", "123456789012-PEOPLE_COUNTER_CODE-1.0"),
}


def build(sample: str) -> Path:
    """Copy a sample app into the work directory and build its container asset."""
    from rich.console import Console

    from emulator.builder import build_container, ensure_base_image
    from emulator.project import Project

    ensure_base_image(console=Console(file=io.StringIO()))
    project = WORK / sample
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(REPO / "sample-apps" / sample, project)
    asset, package = SAMPLES[sample]
    build_container(
        Project(project), asset, project / "packages" / package, local_image=True,
        console=Console(file=io.StringIO()),
    )  # fmt: skip
    return project


class FirstLine:
    """Records when the boot-counter app prints its start-up report (not any other line)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.at = 0.0

    def arm(self) -> None:
        self._event.clear()

    def __call__(self, node: str, line: str) -> None:
        if line.startswith("boot-counter: {") and not self._event.is_set():
            self.at = time.perf_counter()
            self._event.set()

    def wait(self) -> float:
        if not self._event.wait(timeout=300):
            raise SystemExit("the app printed nothing within 300 s")
        return self.at


def measure_entry(project: Path, state: Path, rounds: int) -> dict[str, object]:
    line = FirstLine()
    device = Appliance(project, device="bench", state_dir=state, quiet=True, on_line=line)
    started = time.perf_counter()
    device.deploy()
    deploy_s = time.perf_counter() - started
    boots, boot_calls, reboots, shutdowns = [], [], [], []
    for _ in range(rounds):
        line.arm()
        started = time.perf_counter()
        device.boot()
        boot_calls.append(time.perf_counter() - started)
        boots.append(line.wait() - started)
        time.sleep(IDLE)
        line.arm()
        started = time.perf_counter()
        device.reboot()
        reboots.append(line.wait() - started)
        time.sleep(IDLE)
        started = time.perf_counter()
        device.shutdown()
        shutdowns.append(time.perf_counter() - started)
    device.close()
    return {
        "deploy_s": deploy_s,
        "boot_call_ms": statistics.median(boot_calls) * 1000,
        "boot_to_entry_ms": statistics.median(boots) * 1000,
        "boot_to_entry_max_ms": max(boots) * 1000,
        "reboot_to_entry_ms": statistics.median(reboots) * 1000,
        "reboot_to_entry_max_ms": max(reboots) * 1000,
        "shutdown_ms": statistics.median(shutdowns) * 1000,
    }


def measure_frames(project: Path, state: Path, rounds: int) -> dict[str, object]:
    device = Appliance(
        project, device="bench", state_dir=state, quiet=True, mode="lockstep",
        cameras={"camera_node": "synthetic:1920x1080@30"},
    )  # fmt: skip
    device.deploy()
    boots, reboots = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        device.boot()
        if not device.wait_for_frames(1, timeout=300):
            raise SystemExit("no frame reached HDMI within 300 s")
        boots.append(time.perf_counter() - started)
        started = time.perf_counter()
        device.reboot()
        if not device.wait_for_frames(1, timeout=300):
            raise SystemExit("no frame reached HDMI within 300 s after a reboot")
        reboots.append(time.perf_counter() - started)
        device.shutdown()
    device.close()
    return {
        "boot_to_frame_ms": statistics.median(boots) * 1000,
        "boot_to_frame_max_ms": max(boots) * 1000,
        "reboot_to_frame_ms": statistics.median(reboots) * 1000,
        "reboot_to_frame_max_ms": max(reboots) * 1000,
    }


def section(entry: dict[str, object], frames: dict[str, object], rounds: int) -> str:
    def ms(value: object) -> str:
        return f"{float(str(value)):.0f} ms"

    cpus = os.cpu_count()
    return "\n".join([
        SECTION,
        "",
        f"`python bench/boot.py --rounds {rounds}` - {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{cpus} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}, "
        f"as {'root' if os.geteuid() == 0 else 'an ordinary user (user namespaces)'}, bubblewrap sandboxes, "
        "root filesystems already unpacked (the first deploy is shown apart).",
        "",
        "| | median | worst of the rounds | target |",
        "|---|---|---|---|",
        f"| boot -> entry point (boot-counter prints its first line) | **{ms(entry['boot_to_entry_ms'])}** "
        f"| {ms(entry['boot_to_entry_max_ms'])} | |",
        "| reboot -> entry point (SIGTERM, app exits, boot, first line) | "
        f"**{ms(entry['reboot_to_entry_ms'])}** "
        f"| {ms(entry['reboot_to_entry_max_ms'])} | |",
        f"| boot -> first frame on HDMI (people-counter, synthetic 1920x1080) | "
        f"**{ms(frames['boot_to_frame_ms'])}** | {ms(frames['boot_to_frame_max_ms'])} | < 1000 ms |",
        f"| reboot -> first frame on HDMI | **{ms(frames['reboot_to_frame_ms'])}** "
        f"| {ms(frames['reboot_to_frame_max_ms'])} | < 1500 ms |",
        "",
        f"`boot()` itself returns in {ms(entry['boot_call_ms'])} (boot count, run and shared-memory "
        f"directories, runtime, sandboxes started); a graceful shutdown of the idle boot-counter takes "
        f"{ms(entry['shutdown_ms'])}, most of it the app noticing SIGTERM in its 0.2 s idle loop "
        "(the reboot figures include it). "
        f"First deploy of boot-counter to a new device (verify, copy and unpack a "
        f"{_asset_mb(WORK / 'boot-counter')} MB asset): {float(str(entry['deploy_s'])):.1f} s, once.",
        "",
    ])  # fmt: skip


def _asset_mb(project: Path) -> str:
    sizes = [path.stat().st_size for path in (project / "assets").glob("*.tar.gz")]
    return f"{sum(sizes) / 1e6:.0f}"


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
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--record", action="store_true", help="write the figures into bench/BENCHMARKS.md")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    state = WORK / "state"
    shutil.rmtree(state, ignore_errors=True)
    try:
        entry = measure_entry(build("boot-counter"), state, args.rounds)
        frames = measure_frames(build("people-counter"), state, args.rounds)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    text = section(entry, frames, args.rounds)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
