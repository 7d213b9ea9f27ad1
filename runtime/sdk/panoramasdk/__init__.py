"""panoramasdk: the AWS Panorama Application SDK, as the panorama-emulator appliance provides it.

An app subclasses (or instantiates) :class:`node`, reads parameters and camera frames from ``self.inputs``,
puts frames on ``self.outputs`` for the HDMI output, and runs model nodes with ``self.call``. Frames are
:class:`media` objects. The app talks to the appliance through the bridge named by the
``PANORAMA_EMULATOR_BRIDGE`` environment variable; importing this package works anywhere, creating a node
needs the appliance.
"""

from ._errors import ApplianceConnectionError, ModelCallError, PortTimeoutError
from ._media import media
from ._node import node, port, ports

__all__ = [
    "ApplianceConnectionError",
    "ModelCallError",
    "PortTimeoutError",
    "media",
    "node",
    "port",
    "ports",
]

__version__ = "1.2.0"
