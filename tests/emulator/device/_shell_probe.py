"""Test support, run in-process or as a script (``python _shell_probe.py ARGS_JSON``, e.g. as the test
account): boot a device whose app serves HTTP on its own loopback, then run ``panorama-emulator shell NODE
COMMAND`` that asks that port and tries a port the test listens on at the host's loopback. Prints (as a
script) or returns a JSON-able report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

NODE = "web"
PORT = 8080
ASK = r"""
import socket, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    print("app:", opener.open("http://localhost:%d/" % int(sys.argv[1]), timeout=30).read().decode().strip())
except OSError as error:
    print("app: refused", type(error).__name__)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5).close()
    print("host: reached")
except OSError as error:
    print("host: refused", type(error).__name__)
"""


def probe(asset: Path, base: Path, blocked_port: int, network: str) -> dict[str, Any]:
    """Boot the server app on a device of its own under ``base`` and ask it from a shell.

    Args:
        asset: the test-apps container asset.
        base: a new folder for the project and the state directory.
        blocked_port: a port listening on the host's 127.0.0.1.
        network: the device's network mode.
    """
    from _appliance_helpers import NodeSpec, make_project, wait_for

    from emulator import Appliance

    project = make_project(
        base / "project", "shell-net-app", asset, [NodeSpec(NODE, "server.py", env={"PORT": str(PORT)})]
    )
    state = base / "state"
    cli = str(Path(sys.executable).parent / "panorama-emulator")
    report: dict[str, Any] = {"uid": os.geteuid()}
    device = Appliance(project, device="shell-net", state_dir=state, quiet=True, network=network)
    with device:
        wait_for(lambda: "server: listening" in device.logs(NODE), what="the server")
        shell = subprocess.run(
            [cli, "shell", "--device", "shell-net", "--state-dir", str(state), NODE,
             "python3", "-c", ASK, str(PORT), str(blocked_port)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        report["code"] = shell.returncode
        report["stderr"] = shell.stderr
        for line in shell.stdout.splitlines():
            key, _, value = line.partition(": ")
            report[key] = value
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    args = json.loads(sys.argv[1])
    print(json.dumps(probe(Path(args["asset"]), Path(args["base"]), args["blocked"], args["network"])))
