"""The emulated device: its state directory, verified assets and the root filesystems unpacked from them.

Public names are re-exported here; each module keeps its own ``__all__`` (extend both when adding a module).
"""

from emulator.device.appliance import Appliance
from emulator.device.network import PortForwarder
from emulator.device.options import ApplianceOptions
from emulator.device.rootfs import MOUNT_POINTS, UnpackLimits, is_unpacked, remove_tree, unpack_asset
from emulator.device.sandbox import BwrapLauncher, SandboxSpec, build_argv
from emulator.device.store import DeviceStore, default_state_dir, sha256_file
from emulator.device.supervisor import Backoff, Supervisor

__all__ = [
    "MOUNT_POINTS",
    "Appliance",
    "ApplianceOptions",
    "Backoff",
    "BwrapLauncher",
    "DeviceStore",
    "PortForwarder",
    "SandboxSpec",
    "Supervisor",
    "UnpackLimits",
    "build_argv",
    "default_state_dir",
    "is_unpacked",
    "remove_tree",
    "sha256_file",
    "unpack_asset",
]
