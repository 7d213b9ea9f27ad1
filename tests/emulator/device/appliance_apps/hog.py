"""Takes more than its limits allow, bounded: HOG=memory allocates up to HOG_MIB MiB in 16 MiB steps,
HOG=fork starts up to HOG_FORKS sleeping children and reports how many the kernel refused. Then idles."""

import os
import time

kind = os.environ.get("HOG", "memory")
print(f"hog: {kind} start", flush=True)
if kind == "memory":
    chunks = []
    for step in range(int(os.environ.get("HOG_MIB", "4096")) // 16):
        chunks.append(b"\x01" * (16 << 20))
        print(f"hog: holding {(step + 1) * 16} MiB", flush=True)
    print("hog: allocated everything", flush=True)
elif kind == "fork":
    started = refused = 0
    error = ""
    for _ in range(int(os.environ.get("HOG_FORKS", "5000"))):
        try:
            pid = os.fork()
        except OSError as failure:
            refused += 1
            error = failure.__class__.__name__
            continue
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        started += 1
    print(f"hog: forks started {started} refused {refused} {error}", flush=True)
while True:
    time.sleep(1)
