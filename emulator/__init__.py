"""panorama-emulator: an AWS Panorama appliance on a developer's Linux machine."""

from typing import TYPE_CHECKING, Any

from emulator.errors import (
    AssetError,
    BuildError,
    DeviceError,
    EmulatorError,
    EngineError,
    ManifestError,
    ModelError,
    Problem,
    ProjectError,
    SandboxError,
    SourceError,
    UnsafeArchiveError,
)

if TYPE_CHECKING:
    from emulator.device.appliance import Appliance

__all__ = [
    "Appliance",
    "AssetError",
    "BuildError",
    "DeviceError",
    "EmulatorError",
    "EngineError",
    "ManifestError",
    "ModelError",
    "Problem",
    "ProjectError",
    "SandboxError",
    "SourceError",
    "UnsafeArchiveError",
]


def __getattr__(name: str) -> Any:
    # The appliance pulls in the device and runtime modules: import it on first use only.
    if name == "Appliance":
        from emulator.device.appliance import Appliance

        return Appliance
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
