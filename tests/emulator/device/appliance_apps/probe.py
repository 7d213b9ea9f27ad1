"""Tries to reach a listener on the host at 127.0.0.1:TARGET_PORT and reports, then idles."""

import os
import socket
import time

try:
    socket.create_connection(("127.0.0.1", int(os.environ["TARGET_PORT"])), timeout=5).close()
    print("probe: connected", flush=True)
except OSError as error:
    print(f"probe: failed {error}", flush=True)
while True:
    time.sleep(1)
