"""Frames through the bridge: overhead against an in-process loop, and drops of four 1080p30 cameras.

1. Overhead: a no-op app (``get`` -> ``put``) at 1920x1080 runs as its own process through the bridge
   (lockstep, shared-memory slots, no HDMI sink) and, as the peer, in-process: a loop handing the same
   frames from the same camera source to the same function. Both print frames per second; the overhead is
   the difference of their per-frame times (target: under 0.5 ms).
2. Realtime: four synthetic 1920x1080@30 cameras on one no-op app in realtime mode; the drop rate is the
   share of frames produced while the app ran that it never got (target: under 1 %).

Run: ``python bench/frames.py [--frames 1500] [--seconds 20]``; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from runtime.bridge import SDK_DIR, Runtime
from runtime.bridge.testing import app_plan, code_node, launch_app
from runtime.media.camera import ArraySource
from runtime.media.sources import open_source

WIDTH, HEIGHT = 1920, 1080

APP_BODY = """
def process(app):
    streams = app.inputs.video_in.get()
    app.outputs.video_out.put(streams)
"""

BRIDGE_APP = (
    "import panoramasdk\n"
    + APP_BODY
    + textwrap.dedent(
        """
        class App(panoramasdk.node):
            pass

        app = App()
        while True:
            process(app)
        """
    )
)


class _StillSource(ArraySource):
    """A camera whose frames cost nothing: ``read_into`` leaves the buffer as it is (isolates the bridge)."""

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        return out if out is not None and out.shape == self._frames[0].shape else self._frames[0]


def _source(still: bool) -> ArraySource:
    return (_StillSource if still else ArraySource)(_frames(), name="camera_node")


def _frames(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


class _InProcessPort:
    """The in-process peer's ports: ``get`` reads the camera into one buffer, ``put`` drops the frames."""

    def __init__(self, source: ArraySource, media_type: type) -> None:
        self.source = source
        self.media = media_type
        self.buffer = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        self.puts = 0

    def get(self) -> list[object]:
        frame = self.source.read_into(self.buffer)
        return [self.media(frame.image, "camera_node", self.source.uri, (0, 0), False)]

    def put(self, streams: list[object]) -> None:
        self.puts += len(streams) > 0


class _InProcessApp:
    def __init__(self, port: _InProcessPort) -> None:
        self.inputs = type("Inputs", (), {"video_in": port})()
        self.outputs = type("Outputs", (), {"video_out": port})()


def in_process(frames: int, still: bool = False) -> float:
    """Frames per second of the app function fed in-process."""
    sys.path.insert(0, str(SDK_DIR))
    try:
        from panoramasdk import media  # the same media class the app gets through the bridge
    finally:
        sys.path.remove(str(SDK_DIR))
    namespace: dict[str, object] = {}
    exec(APP_BODY, namespace)
    process = namespace["process"]
    assert callable(process)
    port = _InProcessPort(_source(still), media)
    app = _InProcessApp(port)
    for _ in range(50):
        process(app)
    started = time.perf_counter()
    for _ in range(frames):
        process(app)
    return frames / (time.perf_counter() - started)


def through_bridge(frames: int, workdir: Path, still: bool = False) -> tuple[float, dict[str, object]]:
    """Frames per second of the same app through the bridge (lockstep), and the runtime's metrics."""
    script = workdir / "noop_app.py"
    script.write_text(BRIDGE_APP)
    source = _source(still)
    runtime = Runtime(
        app_plan(code_node()), workdir / "run", cameras={"camera_node": source}, hdmi=None, models=None
    )
    try:
        runtime.start()
        app = launch_app(runtime, "code_node", script)
        warm = 100
        if not runtime.wait_for_outputs(warm, 60):
            raise SystemExit(f"the app did not start: {app.communicate(timeout=5)[1].decode()[-2000:]}")
        started = time.perf_counter()
        runtime.wait_for_outputs(warm + frames, None)
        fps = frames / (time.perf_counter() - started)
        metrics = runtime.metrics()
        app.kill()
        app.wait()
    finally:
        runtime.stop()
    return fps, metrics


def realtime(seconds: float, workdir: Path, cameras: int = 4) -> dict[str, object]:
    """Drop figures of ``cameras`` synthetic 1080p30 cameras on a no-op app in realtime mode."""
    script = workdir / "noop_app.py"
    script.write_text(BRIDGE_APP)
    names = [f"camera_{index}" for index in range(cameras)]
    sources = {name: open_source(f"synthetic:{WIDTH}x{HEIGHT}@30", name=name) for name in names}
    runtime = Runtime(
        app_plan(code_node(cameras=names)),
        workdir / "run-rt",
        cameras=sources,
        hdmi=None,
        models=None,
        mode="realtime",
    )
    try:
        runtime.start()
        app = launch_app(runtime, "code_node", script)
        if not runtime.wait_for_outputs(30, 60):
            raise SystemExit(f"the app did not start: {app.communicate(timeout=5)[1].decode()[-2000:]}")
        time.sleep(1.0)
        before = runtime.metrics()
        time.sleep(seconds)
        after = runtime.metrics()
        app.kill()
        app.wait()
    finally:
        runtime.stop()
        for source in sources.values():
            source.close()
    per_camera = {}
    produced = dropped = 0
    for name in names:
        first, last = before["cameras"][name], after["cameras"][name]  # type: ignore[index]
        made = last["frames_produced"] - first["frames_produced"]
        lost = last["frames_dropped"] - first["frames_dropped"]
        per_camera[name] = {"produced": made, "dropped": lost, "fps": round(made / seconds, 2)}
        produced += made
        dropped += lost
    node = after["nodes"]["code_node"]  # type: ignore[index]
    return {
        "seconds": seconds,
        "cameras": per_camera,
        "produced": produced,
        "dropped": dropped,
        "drop_rate": dropped / produced if produced else None,
        "app_gets_per_s": node["fps"],
        "latency_ms": node["latency_ms"],
    }


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames timed in the overhead run")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured in the realtime run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        workdir = Path(tmp)
        local = in_process(args.frames)
        bridged, metrics = through_bridge(args.frames, workdir)
        overhead_ms = 1000.0 / bridged - 1000.0 / local
        node = metrics["nodes"]["code_node"]  # type: ignore[index]
        print(f"1920x1080 no-op app, {args.frames} frames")
        print(f"  in-process loop : {local:8.1f} fps  ({1000.0 / local:.3f} ms/frame)")
        print(f"  through bridge  : {bridged:8.1f} fps  ({1000.0 / bridged:.3f} ms/frame)")
        print(f"  overhead        : {overhead_ms:8.3f} ms/frame  (target < 0.5 ms)")
        print(f"  get->put latency: p50 {node['latency_ms']['p50']} ms, p99 {node['latency_ms']['p99']} ms")
        still_local = in_process(args.frames, still=True)
        still_bridged, _ = through_bridge(args.frames, workdir, still=True)
        still_ms = 1000.0 / still_bridged - 1000.0 / still_local
        print("same, with a camera that costs nothing (the bridge's own round trip, no pixel copy anywhere)")
        print(f"  in-process loop : {still_local:8.1f} fps  ({1000.0 / still_local:.3f} ms/frame)")
        print(f"  through bridge  : {still_bridged:8.1f} fps  ({1000.0 / still_bridged:.3f} ms/frame)")
        print(f"  overhead        : {still_ms:8.3f} ms/frame")
        live = realtime(args.seconds, workdir)
        rate = live["drop_rate"]
        print(f"4 x synthetic 1920x1080@30, realtime, no-op app, {args.seconds:g} s")
        for name, figures in live["cameras"].items():  # type: ignore[attr-defined]
            made, lost, fps = figures["produced"], figures["dropped"], figures["fps"]
            print(f"  {name}: {made} produced ({fps} fps), {lost} dropped")
        shown = f"{100 * rate:.3f} %" if rate is not None else "no frames"
        print(f"  drop rate       : {shown}  (target < 1 %)")
        print(f"  app gets        : {live['app_gets_per_s']} /s; latency {live['latency_ms']}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "in_process_fps": local,
                        "bridge_fps": bridged,
                        "overhead_ms": overhead_ms,
                        "still_in_process_fps": still_local,
                        "still_bridge_fps": still_bridged,
                        "still_overhead_ms": still_ms,
                        "bridge_latency_ms": node["latency_ms"],
                        "realtime": live,
                    },
                    indent=2,
                )
            )


if __name__ == "__main__":
    main()
