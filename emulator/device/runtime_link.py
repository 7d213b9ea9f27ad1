"""The application runtime of one boot, as the appliance uses it: cameras, model nodes and the bridge.

``start_runtime`` opens every camera source, loads the model nodes and starts ``runtime.bridge.Runtime``;
``BootRuntime`` stops them all again. The appliance talks to the runtime only through this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulator.manifests import ModelDescriptor
from emulator.plan import AppPlan
from runtime.bridge.runtime import SDK_DIR, Runtime
from runtime.media.sources import open_source
from runtime.models import ModelEntry, ModelHost

__all__ = ["BootRuntime", "model_entry", "start_runtime"]


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

    def metrics(self) -> dict[str, object]:
        """The runtime's figures (nodes, cameras, frames out)."""
        return self.runtime.metrics()

    def model_metrics(self) -> dict[str, object]:
        """Per model node: calls, errors, latency percentiles."""
        return dict(self.models.metrics()) if self.models is not None else {}

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
