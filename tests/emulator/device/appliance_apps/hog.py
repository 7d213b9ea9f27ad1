"""Takes more than its limits allow, bounded: HOG=memory allocates up to HOG_MIB MiB in 16 MiB steps,
HOG=fork starts up to HOG_FORKS sleeping children and reports how many the kernel refused, HOG=disk writes
up to HOG_MIB MiB to storage in 1 MiB steps and reports how far it got and the error. Then idles."""

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
elif kind == "disk":
    import errno

    written = 0
    reason = "none"
    with open("/opt/aws/panorama/storage/fill.bin", "wb", buffering=0) as fill:
        try:
            for _ in range(int(os.environ.get("HOG_MIB", "4096"))):
                written += fill.write(b"\x02" * (1 << 20))
            os.fsync(fill.fileno())
        except OSError as failure:
            reason = errno.errorcode.get(failure.errno or 0, str(failure.errno))
    print(f"hog: disk wrote {written} then {reason}", flush=True)
while True:
    time.sleep(1)
