"""The application runtime of one boot, as the appliance uses it: cameras, model nodes and the bridge.

``start_runtime`` opens every camera source, loads the model nodes and starts ``runtime.bridge.Runtime``;
``BootRuntime`` stops them all again. The appliance talks to the runtime only through this module.
``QuietPoint`` is how a lockstep wait for frames ended: every app quiet after the last frame, or not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.manifests import ModelDescriptor
from emulator.plan import AppPlan
from runtime.bridge.runtime import SDK_DIR, Runtime
from runtime.media.sources import open_source
from runtime.models import ModelEntry, ModelHost

__all__ = ["BootRuntime", "QuietPoint", "model_entry", "start_runtime"]


@dataclass(frozen=True)
class QuietPoint:
    """How a lockstep wait for ``frames`` HDMI outputs ended.

    Attributes:
        frames: the outputs asked for.
        outputs: the outputs the HDMI sink had when the wait ended.
        quiet: True when every business-logic node was then blocked in its next ``get()`` or had exited.
        busy: the nodes that were still working when the wait gave up.
        waited_s: seconds waited after the last output for the apps to be quiet.
        quiet_timeout_s: the most seconds that wait may last.
    """

    frames: int
    outputs: int
    quiet: bool
    busy: tuple[str, ...]
    waited_s: float
    quiet_timeout_s: float

    @property
    def note(self) -> str:
        """One line saying where the run ended."""
        if self.quiet:
            return f"ended at a quiet point: every app finished frame {self.outputs} and asked for the next"
        nodes = ", ".join(self.busy)
        return (
            f"{nodes} did not come back to get() within {self.quiet_timeout_s:g} s after frame "
            f"{self.outputs}: shut down while it was still working"
        )

    def as_dict(self) -> dict[str, object]:
        """The record as JSON-able data, with its ``note``."""
        return {
            "frames": self.frames,
            "outputs": self.outputs,
            "quiet": self.quiet,
            "busy": list(self.busy),
            "waited_s": round(self.waited_s, 3),
            "quiet_timeout_s": self.quiet_timeout_s,
            "note": self.note,
        }


class BootRuntime:
    """A started runtime with the camera sources and model host it owns.

    Args:
        runtime: the started bridge runtime.
        sources: the open camera sources (closed by ``stop``).
        models: the started model host, if the plan has model nodes.
    """

    def __init__(self, runtime: Runtime, sources: Mapping[str, Any], models: ModelHost | None) -> None:
        self.runtime = runtime
        self.sources = dict(sources)
        self.models = models
        self.sdk_dir: Path = SDK_DIR
        self._stopped = False

    def node_env(self, node: str) -> dict[str, str]:
        """Environment the app of ``node`` needs (bridge socket, node name, ``PYTHONPATH``)."""
        return self.runtime.node_env(node)

    @property
    def frames_out(self) -> int:
        """Outputs delivered to the HDMI sink in this boot."""
        return self.runtime.frames_out

    def wait_for_outputs(self, n: int, timeout: float | None) -> bool:
        """True once ``n`` outputs were delivered; False on timeout or stop."""
        return self.runtime.wait_for_outputs(n, timeout)

    def hold_frames(self, n: int) -> None:
        """Lockstep: cameras make only the frames ``n`` outputs of this boot need, then hold."""
        self.runtime.hold_frames(n)

    def release_frames(self) -> None:
        """Let held cameras run on."""
        self.runtime.release_frames()

    def wait_for_quiet(self, timeout: float | None) -> bool:
        """True once every code node waits in ``get()`` with nothing to take, or has exited."""
        return self.runtime.wait_for_quiet(timeout)

    def settle(self, frames: int, quiet_timeout: float, check: Callable[[], None]) -> QuietPoint:
        """Wait at most ``quiet_timeout`` s for every code node to be quiet after the last output.

        Args:
            frames: the outputs that were waited for.
            quiet_timeout: the most seconds to wait.
            check: called between waits; raises to stop waiting (a crashed node, a power-off).

        Returns:
            How the wait ended.
        """
        started = time.monotonic()
        deadline = started + quiet_timeout
        while True:
            quiet = self.runtime.wait_for_quiet(max(0.0, min(0.1, deadline - time.monotonic())))
            if quiet or time.monotonic() >= deadline:
                break
            check()
        busy = () if quiet else tuple(self.runtime.busy_nodes())
        waited = time.monotonic() - started
        return QuietPoint(frames, self.runtime.frames_out, quiet, busy, waited, quiet_timeout)

    def metrics(self) -> dict[str, object]:
        """The runtime's figures (nodes, cameras, frames out)."""
        return self.runtime.metrics()

    def model_metrics(self) -> dict[str, object]:
        """Per model node: calls, errors, latency percentiles, and the backend that serves it."""
        if self.models is None:
            return {}
        backends = self.models.backends
        return {
            node: {**figures, "backend": backends.get(node)}
            for node, figures in self.models.metrics().items()
        }

    def stop(self) -> None:
        """Stop the bridge and cameras, close the sources and the model host. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.runtime.stop()
        for source in self.sources.values():
            with contextlib.suppress(Exception):
                source.close()
        if self.models is not None:
            self.models.close()


def model_entry(node: str, path: Path, descriptor: ModelDescriptor) -> ModelEntry:
    """What the model host needs of a model node: the runtime's plain record of it.

    Args:
        node: the model node's name.
        path: its unpacked model directory (or model file).
        descriptor: its loaded descriptor.

    Returns:
        The entry: name, files, framework, precision mode and declared inputs.
    """
    return ModelEntry(
        node=node,
        path=path,
        framework=descriptor.framework,
        inputs=tuple((item.name, tuple(int(dim) for dim in item.shape)) for item in descriptor.inputs),
        precision_mode=descriptor.precision_mode,
    )


def start_runtime(
    plan: AppPlan,
    run_dir: Path,
    *,
    cameras: Mapping[str, str],
    hdmi: Any,
    model_dirs: Mapping[str, Path],
    mode: str,
) -> BootRuntime:
    """Open the cameras, load the models and start the bridge for one boot.

    Args:
        plan: the application plan.
        run_dir: the per-boot run directory (bridge sockets).
        cameras: camera node -> source spec.
        hdmi: the HDMI sink, or None when the app has no HDMI node.
        model_dirs: model node -> its unpacked model directory.
        mode: ``lockstep`` or ``realtime``.

    Returns:
        The started runtime; ``stop()`` it at shutdown.

    Raises:
        SourceError: a camera cannot be opened.
        ModelError: a model cannot be loaded.
        DeviceError: the bridge cannot start.
    """
    sources: dict[str, Any] = {}
    models: ModelHost | None = None
    try:
        for camera in plan.cameras:
            sources[camera.name] = open_source(cameras.get(camera.name, "synthetic"), name=camera.name)
        if plan.models:
            entries = [
                model_entry(model.name, model_dirs[model.name], model.descriptor) for model in plan.models
            ]
            models = ModelHost(entries)
            models.start()
        runtime = Runtime(plan, run_dir, cameras=sources, hdmi=hdmi, models=models, mode=mode)
        runtime.start()
    except BaseException:
        for source in sources.values():
            with contextlib.suppress(Exception):
                source.close()
        if models is not None:
            models.close()
        raise
    return BootRuntime(runtime, sources, models)
