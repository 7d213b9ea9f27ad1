"""Reports the process's view of the device as one JSON line, then idles."""

import json
import os
import socket
import sys
import time


def writable(directory):
    try:
        with open(os.path.join(directory, ".probe"), "w") as file:
            file.write("x")
        os.remove(os.path.join(directory, ".probe"))
        return "writable"
    except OSError as error:
        return error.strerror


def read(path):
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


print(
    "inspect: "
    + json.dumps(
        {
            "env": dict(os.environ),
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "uid": os.getuid(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "etc_hostname": read("/etc/hostname"),
            "sys_path0": sys.path[1] if len(sys.path) > 1 else None,
            "panorama": writable("/panorama"),
            "usr": writable("/usr"),
            "tmp": writable("/tmp"),
            "storage": writable("/opt/aws/panorama/storage"),
            "logs": writable("/opt/aws/panorama/logs"),
        }
    ),
    flush=True,
)
while True:
    time.sleep(1)
