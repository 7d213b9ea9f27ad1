"""Benchmark: `panorama-emulator build-container` against `panorama-cli build-container` (PyPI `panoramacli`).

Both build the same package, on the same Docker engine, with `--local-image`, in two copies of one project.
The package's image is the stand-in base image plus a layer of generated data (half random, half text), at two
sizes, so that the asset is several hundred megabytes and grows between the two sizes. An untimed first build
of each tool fills the engine's build cache; then the tools run in alternating order, each command in a fresh
wrapper process that reports the peak resident memory of its process tree (`RUSAGE_CHILDREN`). Printed: median
wall times, peak memory, and the ratios ours / panorama-cli.

panorama-cli is installed into its own venv under the cache directory (it needs the docker CLI). The package's
interface already names the asset, so panorama-cli never asks AWS STS for an account id: no AWS is needed.
Containers that panorama-cli leaves behind (`docker create` without `docker rm`) and the bench images are
removed afterwards.

    python bench/build.py [--sizes 200,600] [--runs 3] [--record]

`--record` writes the figures into bench/BENCHMARKS.md under "Build".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample-apps" / "people-counter"
PACKAGE = "packages/123456789012-BENCH_CODE-1.0"
ASSET = "bench"
CACHE = Path(
    os.environ.get("PANORAMA_EMULATOR_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panorama-emulator"
)
PANORAMACLI_VENV = CACHE / "bench-panoramacli-venv"
PANORAMACLI = "panoramacli==1.1.6"
WORK = Path(tempfile.gettempdir()) / "panorama-emulator-bench" / "build"
BENCHMARKS = Path(__file__).resolve().parent / "BENCHMARKS.md"
SECTION = "## Build"

# Runs a command and prints, as JSON, its exit status, wall time and the peak RSS of its process tree.
_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"status": done.returncode, "seconds": seconds, "peak_kb": peak,
                  "stderr": done.stderr.decode(errors="replace")[-2000:]}))
"""

_GENERATE = """\
import os

megabytes = {megabytes}
os.makedirs("/data", exist_ok=True)
with open("/data/random.bin", "wb") as out:
    for _ in range(megabytes // 2):
        out.write(os.urandom(1 << 20))
line = b"frame 000123: 3 people, mean brightness 201.5, threshold 200\\n"
block = (line * ((1 << 20) // len(line) + 1))[: 1 << 20]
with open("/data/text.log", "wb") as out:
    for _ in range(megabytes - megabytes // 2):
        out.write(block)
"""


def panorama_cli() -> Path:
    """panorama-cli from PyPI in its own venv (created once)."""
    script = PANORAMACLI_VENV / "bin" / "panorama-cli"
    if script.exists():
        return script
    print(f"installing {PANORAMACLI} into {PANORAMACLI_VENV}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(PANORAMACLI_VENV)], check=True)
    pip = [str(PANORAMACLI_VENV / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    # panorama-cli imports pkg_resources, which newer setuptools no longer ship.
    subprocess.run([*pip, "install", PANORAMACLI, "setuptools<81"], check=True)
    return script


def make_project(where: Path, megabytes: int) -> Path:
    """The sample project with a bench package whose image carries ``megabytes`` MB of generated data."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(SAMPLE, where)
    sample_package = next((where / "packages").iterdir())
    package = where / PACKAGE
    sample_package.rename(package)
    (package / "generate.py").write_text(_GENERATE.format(megabytes=megabytes))
    (package / "Dockerfile").write_text(
        "FROM public.ecr.aws/panorama/panorama-application\n"
        "COPY generate.py /tmp/generate.py\n"
        "RUN python3 /tmp/generate.py && rm /tmp/generate.py\n"
        "COPY src /panorama\n"
    )
    document = json.loads((package / "package.json").read_text())
    document["nodePackage"]["name"] = "BENCH_CODE"
    # The interface names the asset: neither tool adds one, so panorama-cli does not call AWS STS.
    document["nodePackage"]["interfaces"][0]["asset"] = ASSET
    (package / "package.json").write_text(json.dumps(document, indent=4))
    return where


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout)
    if figures["status"] != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{figures['stderr']}")
    return figures


def asset_size(project: Path) -> int:
    document = json.loads((project / PACKAGE / "package.json").read_text())
    uri = document["nodePackage"]["assets"][-1]["implementations"][0]["assetUri"]
    return (project / "assets" / uri).stat().st_size


def containers() -> set[str]:
    listing = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True, check=True
    )
    return set(listing.stdout.split())


def image_id(reference: str) -> str | None:
    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference], capture_output=True, text=True
    )
    return found.stdout.strip() or None


def run_size(megabytes: int, runs: int, cli: Path, images: set[str]) -> dict[str, Any]:
    ours_project = make_project(WORK / f"ours-{megabytes}", megabytes)
    theirs_project = make_project(WORK / f"panorama-cli-{megabytes}", megabytes)
    env = dict(os.environ)
    env["PATH"] = f"{cli.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    args = ["build-container", "--container-asset-name", ASSET, "--package-path", PACKAGE, "--local-image"]
    ours = [sys.executable, "-c", "from emulator.cli import main; main()", *args]
    theirs = [str(cli), *args]
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "panorama-cli": []}
    before = containers()
    try:
        print(f"[{megabytes} MB] warming the build cache", file=sys.stderr)
        measure(ours, ours_project, env)
        measure(theirs, theirs_project, env)
        built = image_id(f"{ASSET}:latest")
        if built:
            images.add(built)
        for run in range(runs):
            order = [("ours", ours, ours_project), ("panorama-cli", theirs, theirs_project)]
            for name, command, project in order if run % 2 == 0 else reversed(order):
                subprocess.run(["sync"], check=False)
                figures = measure(command, project, env)
                figures["asset_bytes"] = asset_size(project)
                results[name].append(figures)
                print(
                    f"[{megabytes} MB] {name:13s} {figures['seconds']:7.2f} s "
                    f"{figures['peak_kb'] / 1024:8.1f} MB peak, "
                    f"asset {figures['asset_bytes'] / 2**20:.0f} MB",
                    file=sys.stderr,
                )
    finally:
        leftover = containers() - before
        if leftover:
            subprocess.run(["docker", "rm", *sorted(leftover)], capture_output=True, check=False)
        for project in (ours_project, theirs_project):
            shutil.rmtree(project, ignore_errors=True)
    summary: dict[str, Any] = {"megabytes": megabytes, "leftover_containers": len(leftover)}
    for name, rows in results.items():
        summary[name] = {
            "seconds": statistics.median(row["seconds"] for row in rows),
            "peak_mb": max(row["peak_kb"] for row in rows) / 1024,
            "asset_mb": statistics.median(row["asset_bytes"] for row in rows) / 2**20,
        }
    summary["time_ratio"] = summary["ours"]["seconds"] / summary["panorama-cli"]["seconds"]
    summary["memory_ratio"] = summary["ours"]["peak_mb"] / summary["panorama-cli"]["peak_mb"]
    return summary


def report(summaries: list[dict[str, Any]], runs: int) -> str:
    lines = [
        SECTION,
        "",
        f"`python bench/build.py --runs {runs}` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        "`build-container --local-image` of a package FROM the stand-in base image plus a layer of "
        "generated data (half random, half text), both tools on the same engine with a warm build cache; "
        "median wall time of the runs, peak RSS of each command's process tree; panorama-cli is PyPI "
        "`panoramacli` 1.1.6.",
        "",
        "| data layer | asset | panorama-cli | ours | time ours / panorama-cli "
        "| panorama-cli peak | ours peak | memory ours / panorama-cli |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        ours, theirs = summary["ours"], summary["panorama-cli"]
        lines.append(
            f"| {summary['megabytes']} MB | {ours['asset_mb']:.0f} MB | {theirs['seconds']:.2f} s "
            f"| {ours['seconds']:.2f} s | **{summary['time_ratio']:.2f}x** | {theirs['peak_mb']:.0f} MB "
            f"| {ours['peak_mb']:.0f} MB | **{summary['memory_ratio']:.2f}x** |"
        )
    if len(summaries) >= 2:
        small, large = summaries[0], summaries[-1]
        growth = large["ours"]["asset_mb"] - small["ours"]["asset_mb"]
        lines += [
            "",
            f"From the smaller to the larger asset (+{growth:.0f} MB), our peak memory went from "
            f"{small['ours']['peak_mb']:.0f} MB to {large['ours']['peak_mb']:.0f} MB; panorama-cli's from "
            f"{small['panorama-cli']['peak_mb']:.0f} MB to {large['panorama-cli']['peak_mb']:.0f} MB "
            "(it reads the whole .tar.gz into memory to hash it).",
        ]
    lines += ["", "Targets: time <= 0.7x; peak memory independent of the asset size."]
    return "\n".join(lines) + "\n"


def record(section: str) -> None:
    text = (
        BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nLatest figures from `bench/`.\n\n"
    )
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[following + 1 :] if following >= 0 else "")
    BENCHMARKS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="200,600", help="MB of generated data, comma separated")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each tool per size")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/BENCHMARKS.md")
    args = parser.parse_args()
    if shutil.which("docker") is None:
        raise SystemExit("panorama-cli needs the docker CLI")
    cli = panorama_cli()
    WORK.mkdir(parents=True, exist_ok=True)
    images: set[str] = set()
    try:
        summaries = [run_size(int(size), args.runs, cli, images) for size in args.sizes.split(",")]
    finally:
        # The bench images hold hundreds of megabytes of generated data: remove them (and their layers).
        if images:
            subprocess.run(["docker", "rmi", *sorted(images)], capture_output=True, check=False)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "build.json").write_text(json.dumps(summaries, indent=2))
    section = report(summaries, args.runs)
    print()
    print(section)
    if args.record:
        record(section)
        print(f"recorded in {BENCHMARKS}")


if __name__ == "__main__":
    main()
