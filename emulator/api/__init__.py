"""The local device API: an HTTP API and web console over one emulated appliance.

    from emulator import ApplianceOptions
    from emulator.api import ApplianceManager, create_app, run_server

    manager = ApplianceManager(ApplianceOptions(device="dev"))
    manager.deploy_project(Path("sample-apps/people-counter"))
    run_server(manager, host="127.0.0.1", port=8123)

``panorama-emulator serve`` does the same from the command line; ``panorama-emulator status | reboot |
power-cut | logs`` talk to it with :class:`DeviceClient`.
"""

from emulator.api.app import DEFAULT_MAX_UPLOAD_BYTES, create_app
from emulator.api.bundle import BundleInfo, BundleLimits, check_bundle, pack_project, unpack_bundle
from emulator.api.client import DEFAULT_URL, DeviceClient, client_url
from emulator.api.device import ApplianceFactory, DeviceLike
from emulator.api.errors import NotFoundError, PayloadTooLargeError, RequestError, http_status
from emulator.api.manager import ApplianceManager, Deployment
from emulator.api.security import is_loopback
from emulator.api.server import BackgroundServer, bind_socket, check_bind, run_server

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_URL",
    "ApplianceFactory",
    "ApplianceManager",
    "BackgroundServer",
    "BundleInfo",
    "BundleLimits",
    "Deployment",
    "DeviceClient",
    "DeviceLike",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestError",
    "bind_socket",
    "check_bind",
    "check_bundle",
    "client_url",
    "create_app",
    "http_status",
    "is_loopback",
    "pack_project",
    "run_server",
    "unpack_bundle",
]
