"""How an appliance runs: the one options record the CLI, the HTTP API and the pytest plugin hand to it.

``ApplianceOptions`` is frozen and checked when made, so a bad mode, network or timeout fails where it was
given. A face builds one from its own flags, fixtures or settings and passes it on whole; ``changed`` makes a
copy with a few fields replaced (the device API turns ``quiet`` on, a deployment names its graph).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.device.limits import Limits
from emulator.device.sandbox import NETWORKS
from emulator.device.supervisor import Backoff
from emulator.errors import DeviceError

__all__ = ["AWS_MODES", "MODES", "NETWORKS", "ApplianceOptions"]

MODES = ("lockstep", "realtime")
"""Camera pacing: a camera waits for the app (``lockstep``) or runs at its frame rate (``realtime``)."""
AWS_MODES = ("none", "host", "local")
"""What the app's AWS SDK meets: no credentials, the caller's, or CloudWatch answered by the emulator."""


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


@dataclass(frozen=True)
class ApplianceOptions:
    """The options of one emulated appliance; every field has the default an ``Appliance`` gets.

    Args:
        device: the device name; its state lives in ``<state_dir>/devices/<device>``.
        state_dir: the state directory (default: ``$PANORAMA_EMULATOR_HOME`` or the user's data directory).
        graph: the graph file (default: the project's only ``graphs/*/graph.json``).
        override: an ``override.json`` to apply.
        cameras: camera node -> source (``synthetic``, a video file, a folder of images, a stream URL);
            cameras not named get ``synthetic``.
        mode: ``lockstep`` (a camera advances when the app has taken its frame) or ``realtime``.
        network: ``app`` (each app has a network namespace of its own with a way out, as on a device),
            ``host`` (the apps share the host's network, unlike a device) or ``none`` (loopback only).
        aws: what the app's AWS SDK meets: ``none`` (no credentials), ``host`` (the caller's credentials
            through a container credentials endpoint) or ``local`` (CloudWatch metrics kept by the emulator,
            nothing sent to AWS); see :mod:`emulator.device.aws`.
        hdmi_out: a folder where the HDMI sink keeps ``last.png``.
        hdmi_record: an MP4 file that records every screen the HDMI output shows.
        hdmi_every: also keep every K-th HDMI screen in ``hdmi_out`` as ``hdmi-<n>.png`` (n counts screens
            from 1); needs ``hdmi_out``.
        quiet: do not echo app output to the terminal (it still goes to ``console_output``).
        grace_period: seconds between SIGTERM and SIGKILL at shutdown.
        quiet_timeout: in lockstep, the most seconds ``wait_for_frames`` waits after the last frame for every
            app to come back to ``get()`` (or exit) before it returns anyway.
        backoff: restart policy for nodes that end.
        inbound_host: the host address routed ports listen on (``0.0.0.0`` to reach them from elsewhere).
        limits: memory and process limits of each app (see ``emulator.device.limits``).
        restart_on_exit: restart a node that ends, with ``backoff``; False leaves it stopped until
            ``Appliance.restart_node`` (``dev`` waits for the next save).

    Raises:
        DeviceError: a bad mode, network, AWS mode, grace period or quiet timeout.
    """

    device: str = "default"
    state_dir: Path | None = None
    graph: Path | None = None
    override: Path | None = None
    cameras: Mapping[str, str] = field(default_factory=dict)
    mode: str = "lockstep"
    network: str = "app"
    aws: str = "none"
    hdmi_out: Path | None = None
    hdmi_record: Path | None = None
    hdmi_every: int | None = None
    quiet: bool = False
    grace_period: float = 3.0
    quiet_timeout: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    inbound_host: str = "127.0.0.1"
    limits: Limits = field(default_factory=Limits)
    restart_on_exit: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DeviceError(f"mode must be lockstep or realtime, not {self.mode!r}")
        if self.network not in NETWORKS:
            raise DeviceError(f"network must be app, host or none, not {self.network!r}")
        if self.aws not in AWS_MODES:
            raise DeviceError(f"aws must be none, host or local, not {self.aws!r}")
        if not (self.quiet_timeout >= 0 and math.isfinite(self.quiet_timeout)):
            raise DeviceError(f"quiet_timeout must be a number of seconds >= 0, not {self.quiet_timeout}")
        if not (self.grace_period >= 0 and math.isfinite(self.grace_period)):
            raise DeviceError(f"grace_period must be a number of seconds >= 0, not {self.grace_period}")
        if self.hdmi_every is not None and (self.hdmi_every < 1 or self.hdmi_out is None):
            raise DeviceError(
                f"keeping every K-th HDMI screen needs --hdmi-out and K >= 1, found K={self.hdmi_every}"
            )
        # Paths given as strings become Paths; the cameras are copied so the caller's dict cannot change them.
        for name in ("state_dir", "graph", "override", "hdmi_out", "hdmi_record"):
            object.__setattr__(self, name, _path(getattr(self, name)))
        object.__setattr__(self, "cameras", dict(self.cameras or {}))

    def changed(self, **changes: Any) -> ApplianceOptions:
        """A copy with the given fields replaced (checked like a new record).

        Args:
            changes: field names and their new values.

        Returns:
            The new options.

        Raises:
            TypeError: a name is not a field of the options.
            DeviceError: a new value is not allowed.
        """
        return dataclasses.replace(self, **changes) if changes else self
