"""Runs until stopped. SIGTERM ends it cleanly, unless IGNORE_SIGTERM is set."""

import os
import signal
import sys
import time


def stop(number, frame):
    os.write(1, b"steady: graceful stop\n")
    with open("/opt/aws/panorama/logs/stopped", "a") as marker:
        marker.write("graceful\n")
    sys.exit(0)


if os.environ.get("IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, stop)
print("steady: up", flush=True)
while True:
    time.sleep(1)
