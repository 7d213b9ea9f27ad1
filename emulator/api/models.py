"""Typed request and response bodies of the device API (they make its OpenAPI description)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AppInfo",
    "BundleResult",
    "CameraStatus",
    "DeployRequest",
    "DeviceStatus",
    "ErrorResponse",
    "HdmiStatus",
    "LogTail",
    "Metrics",
    "NodeFigures",
    "NodeStatus",
    "StorageEntryModel",
    "StorageListing",
]


class ErrorResponse(BaseModel):
    """Why a request failed, in one line."""

    detail: str


class NodeStatus(BaseModel):
    """A business-logic node of the app."""

    name: str
    state: str = Field(description="running, starting, restarting, stopped, failed ...")
    pid: int | None = Field(None, description="host process id of the node's sandbox, while it runs")
    restarts: int = Field(0, description="restarts since the last boot")
    exit_codes: list[int] = Field(default_factory=list, description="exit codes of the node's past processes")
    last_cause: str | None = Field(
        None, description="the limit that last ended the node's process, e.g. 'memory limit 2048 MiB'"
    )
    arch: str | None = Field(None, description="the CPU the node's rootfs is built for (aarch64, x86_64)")
    emulated: bool = Field(False, description="whether the node runs through qemu-user")


class CameraStatus(BaseModel):
    """A camera node of the app."""

    name: str
    paused: bool
    source: str | None = Field(None, description="what the camera shows: synthetic, a file, an URL")


class HdmiStatus(BaseModel):
    """The HDMI output."""

    outputs: int = Field(description="frames shown since the app was deployed")
    labels: list[str] = Field(description="every label text shown so far")


class AppInfo(BaseModel):
    """The deployed application."""

    name: str
    project: str = Field(description="the project folder it runs from")
    source: Literal["project", "bundle"]
    deployed_at: float = Field(description="seconds since the epoch")


class DeviceStatus(BaseModel):
    """The device and what runs on it."""

    device: str
    state: Literal["empty", "running", "off"] = Field(
        description="empty: nothing deployed; running: booted; off: shut down"
    )
    state_dir: str
    app: AppInfo | None
    boots: int
    uptime_s: float | None = Field(description="seconds since the last boot (None unless running)")
    nodes: list[NodeStatus]
    cameras: list[CameraStatus]
    hdmi: HdmiStatus | None
    storage_path: str | None = Field(description="the app's persistent storage on this machine")


class DeployRequest(BaseModel):
    """Deploy the application of a project folder on the machine that runs the server."""

    project: str = Field(min_length=1, max_length=4096, description="root with graphs/, packages/, assets/")
    graph: str | None = Field(
        None, min_length=1, max_length=4096, description="graph file if not the only one"
    )
    override: str | None = Field(None, min_length=1, max_length=4096, description="override.json to apply")


class BundleResult(BaseModel):
    """An uploaded bundle, unpacked and deployed."""

    app: str
    packages: list[str]
    assets: list[str]
    files: int
    unpacked_bytes: int
    status: DeviceStatus


class LogTail(BaseModel):
    """The last lines of a node's console output, or of another file of its log folder."""

    node: str
    file: str = Field(description="console_output (what the node printed) or a file the app wrote")
    files: list[str] = Field(description="the files of the node's log folder")
    lines: list[str]


class StorageEntryModel(BaseModel):
    """One entry of a storage folder."""

    name: str
    path: str = Field(description="relative to the storage root")
    kind: Literal["file", "dir", "link", "other"] = Field(
        description="link: a symbolic link leading out of the storage (never followed)"
    )
    size: int
    modified: float


class StorageListing(BaseModel):
    """A folder of the app's persistent storage."""

    path: str
    entries: list[StorageEntryModel]


class NodeFigures(BaseModel):
    """Supervision figures of one node."""

    up: bool
    restarts: int
    exits: int


class Metrics(BaseModel):
    """Figures of the device and its app (also at ``/metrics`` in the Prometheus format)."""

    device: str
    state: Literal["empty", "running", "off"]
    boots: int
    uptime_s: float | None = Field(description="seconds since the last boot (None unless running)")
    hdmi_outputs: int
    nodes: dict[str, NodeFigures]
    runtime: dict[str, Any] = Field(description="the app's figures: frame rates, latency, drops, model calls")
