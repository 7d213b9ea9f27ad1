"""The appliance's side of the bridge to apps: sockets, shared-memory frames, camera pacing, metrics, and the
call service that lends each app connection its call buffer and channel to the model server.

``Runtime`` serves the code nodes of one application plan for one boot; ``node_env`` gives the environment
an app needs to find its bridge, and the ``SANDBOX_*`` paths say where the run directory and the SDK
(``SDK_DIR`` on the host) are mounted in a sandbox.
"""

from runtime.bridge.contracts import ModelCaller
from runtime.bridge.runtime import SDK_DIR, Runtime
from runtime.sdk.panoramasdk._protocol import (
    ENV_BRIDGE,
    ENV_NODE,
    SANDBOX_RUN_DIR,
    SANDBOX_SDK_DIR,
)

__all__ = [
    "ENV_BRIDGE",
    "ENV_NODE",
    "SANDBOX_RUN_DIR",
    "SANDBOX_SDK_DIR",
    "SDK_DIR",
    "ModelCaller",
    "Runtime",
]
