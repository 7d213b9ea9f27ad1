"""panorama-emulator: an AWS Panorama appliance on a developer's Linux machine."""

from emulator.errors import (
    AssetError,
    BridgeError,
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

__all__ = [
    "AssetError",
    "BridgeError",
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
