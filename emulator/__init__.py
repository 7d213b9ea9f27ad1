"""panorama-emulator: an AWS Panorama appliance on a developer's Linux machine."""

# Imported under a private name: everything public here is in __all__ (tests/test_exports.py).
import typing as _typing

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

if _typing.TYPE_CHECKING:
    from emulator.device.appliance import Appliance
    from emulator.device.options import ApplianceOptions

__all__ = [
    "Appliance",
    "ApplianceOptions",
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


def __getattr__(name: str) -> _typing.Any:
    # The appliance pulls in the device and runtime modules: import them on first use only.
    if name == "Appliance":
        from emulator.device.appliance import Appliance

        return Appliance
    if name == "ApplianceOptions":
        from emulator.device.options import ApplianceOptions

        return ApplianceOptions
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
