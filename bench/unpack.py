"""Benchmark: unpacking a container asset into a rootfs, against `tar -xzf` of the same file.

The asset is a `docker export` of a real image compressed with `gzip -1`, exactly as the build stage makes it
(by default the stand-in base image `public.ecr.aws/panorama/panorama-application:latest`; without a Docker
engine or that image, a tarball of the host's /usr/lib/python3* and /usr/share is used instead). Each round
extracts the asset with GNU tar and with `emulator.device.rootfs.unpack_asset` into fresh directories on the
same file system, in alternating order, after a `sync`; the median wall times and their ratio are printed.
A second `unpack_asset` on the finished rootfs (a second boot) is timed too.

    python bench/unpack.py [--image IMAGE | --asset FILE] [--rounds 5] [--scratch DIR ...] [--record]

`--scratch` picks where both extract (default: a directory on the same disk as the asset; give it twice,
e.g. `--scratch /tmp --scratch /dev/shm`, to measure a disk and tmpfs, which shows the pipeline without
the disk).

`--record` writes the figures into bench/BENCHMARKS.md under "Install (unpack)".
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
from typing import cast

from emulator.device.rootfs import is_unpacked, remove_tree, unpack_asset

DEFAULT_IMAGE = "public.ecr.aws/panorama/panorama-application:latest"
WORK = Path(tempfile.gettempdir()) / "panorama-emulator-bench" / "unpack"
BENCHMARKS = Path(__file__).resolve().parent / "BENCHMARKS.md"
SECTION = "## Install (unpack)"


def export_image(image: str) -> Path | None:
    """Return a cached `docker export | gzip -1` of ``image``, or None without an engine or the image."""
    try:
        import docker

        client = docker.from_env()
        image_id = client.images.get(image).id.split(":")[-1][:16]
    except Exception as error:  # no SDK, no engine, no image: fall back to host files
        print(f"no docker export of {image}: {error}", file=sys.stderr)
        return None
    asset = WORK / f"export-{image_id}.tar.gz"
    if asset.exists():
        return asset
    WORK.mkdir(parents=True, exist_ok=True)
    container = client.containers.create(image)
    partial = asset.with_suffix(".partial")
    try:
        with partial.open("wb") as out:
            gzip = subprocess.Popen(["gzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=out)
            assert gzip.stdin is not None
            for chunk in container.export(chunk_size=1 << 20):
                gzip.stdin.write(chunk)
            gzip.stdin.close()
            if gzip.wait() != 0:
                raise SystemExit("gzip failed")
    finally:
        container.remove()
    partial.rename(asset)
    return asset


def host_asset() -> Path:
    """Return a cached tarball of host directories of a realistic size and shape."""
    asset = WORK / "host-files.tar.gz"
    if asset.exists():
        return asset
    WORK.mkdir(parents=True, exist_ok=True)
    sources = [p for p in ("usr/lib/python3", "usr/lib/python3.11", "usr/share") if (Path("/") / p).exists()]
    with asset.with_suffix(".partial").open("wb") as out:
        tar = subprocess.Popen(["tar", "-C", "/", "-cf", "-", *sources], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-1", "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.wait()
    asset.with_suffix(".partial").rename(asset)
    return asset


def time_tar(asset: Path, dest: Path) -> float:
    dest.mkdir(parents=True)
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(asset), "-C", str(dest)], check=True)
    return time.perf_counter() - started


def time_ours(asset: Path, dest: Path) -> float:
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    unpack_asset(asset, dest, progress=False)
    return time.perf_counter() - started


def run(asset: Path, rounds: int, where: Path) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="unpack-bench-", dir=where))
    tar_times: list[float] = []
    our_times: list[float] = []
    reuse_times: list[float] = []
    marker: dict[str, object] = {}
    try:
        for index in range(rounds):
            tar_dest, our_dest = scratch / f"tar-{index}", scratch / "rootfs" / f"ours-{index}"
            order = [("tar", tar_dest), ("ours", our_dest)]
            for kind, dest in order if index % 2 == 0 else reversed(order):
                if kind == "tar":
                    tar_times.append(time_tar(asset, dest))
                else:
                    our_times.append(time_ours(asset, dest))
            assert is_unpacked(our_dest)
            started = time.perf_counter()
            unpack_asset(asset, our_dest, progress=False)
            reuse_times.append(time.perf_counter() - started)
            marker = json.loads((our_dest.parent / f".{our_dest.name}.complete").read_text())
            remove_tree(tar_dest)
            remove_tree(our_dest)
            print(
                f"round {index + 1}: tar {tar_times[-1]:.2f} s, unpack_asset {our_times[-1]:.2f} s",
                flush=True,
            )
    finally:
        remove_tree(scratch)
    tar_median, our_median = statistics.median(tar_times), statistics.median(our_times)
    return {
        "asset_bytes": asset.stat().st_size,
        "members": marker.get("members"),
        "data_bytes": marker.get("bytes"),
        "tar_s": tar_median,
        "ours_s": our_median,
        "ratio": our_median / tar_median,
        "ratio_range": (
            min(o / t for o, t in zip(our_times, tar_times, strict=True)),
            max(o / t for o, t in zip(our_times, tar_times, strict=True)),
        ),
        "reuse_ms": statistics.median(reuse_times) * 1000,
        "rounds": rounds,
        "where": f"{filesystem(where)} ({where})",
    }


def filesystem(path: Path) -> str:
    """Return the type of the file system holding ``path`` (ext4, tmpfs, ...)."""
    for command in (
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
        ["stat", "-f", "-c", "%T", str(path)],
    ):
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.split()[-1]  # the topmost of stacked mounts
    return "?"


def report(source: str, results: list[dict[str, object]]) -> str:
    tar_version = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    cpus = len(os.sched_getaffinity(0))
    first = results[0]
    data_mb = int(str(first["data_bytes"] or 0)) / 1e6
    lines = [
        SECTION,
        "",
        f"`python bench/unpack.py` - {time.strftime('%Y-%m-%d')}, {platform.machine()}, {cpus} CPUs "
        f"(load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
        f"{tar_version}, as {'root' if os.geteuid() == 0 else 'a user'}.",
        "",
        f"Asset: {source}, {int(str(first['asset_bytes'])) / 1e6:.0f} MB compressed, "
        f"{first['members']} members, {data_mb:.0f} MB of file data.",
        "",
        "| extracted into | `tar -xzf` | `unpack_asset` | **ratio** (target <= 1.0) | ratio per round "
        "| second call (reuse) |",
        "|---|---|---|---|---|---|",
    ]
    for figures in results:
        low, high = cast("tuple[float, float]", figures["ratio_range"])
        lines.append(
            f"| {figures['where']} | {figures['tar_s']:.2f} s | {figures['ours_s']:.2f} s "
            f"| **{figures['ratio']:.2f}** | {low:.2f} - {high:.2f} | {figures['reuse_ms']:.2f} ms |"
        )
    lines += [
        "",
        f"Median wall times of {first['rounds']} rounds, alternating order, `sync` before each extraction "
        "(write-back to disk not included for either). `tar -xzf` is GNU tar piping through gzip; "
        "`unpack_asset` decompresses with ISA-L in one thread, parses headers with a lean reader and "
        "writes small files from a few writer threads.",
        "",
    ]
    return "\n".join(lines)


def record(section: str) -> None:
    text = (
        BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nLatest figures from `bench/`.\n\n"
    )
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[following + 1 :] if following >= 0 else "")
    BENCHMARKS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help="image to docker export (default: %(default)s)"
    )
    parser.add_argument("--asset", type=Path, help="use this .tar.gz instead of exporting an image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scratch", type=Path, action="append", help="where to extract (repeatable)")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/BENCHMARKS.md")
    args = parser.parse_args()
    if shutil.which("tar") is None:
        raise SystemExit("GNU tar is needed for the comparison")
    if args.asset:
        asset, source = args.asset, f"`{args.asset.name}`"
    elif (exported := export_image(args.image)) is not None:
        asset, source = exported, f"`docker export` of `{args.image}` + `gzip -1`"
    else:
        asset, source = host_asset(), "tarball of the host's /usr/lib/python3* and /usr/share, `gzip -1`"
    results = []
    for where in args.scratch or [asset.parent]:
        print(f"extracting into {where}", flush=True)
        results.append(run(asset, args.rounds, where))
    section = report(source, results)
    print()
    print(section)
    if args.record:
        record(section)
        print(f"recorded in {BENCHMARKS}")


if __name__ == "__main__":
    main()
