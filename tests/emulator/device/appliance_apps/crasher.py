"""Crashes at once with a traceback."""

import os

print(f"crasher starting as pid {os.getpid()}", flush=True)
print(1 / 0)
