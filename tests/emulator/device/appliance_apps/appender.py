"""Appends numbered, checksummed records to storage, fsync'ing each, and says so only after the fsync.

At start it checks the records already there, cuts a torn last record (a power cut in the middle of a
write), and reports what it found and what /tmp holds.
"""

import hashlib
import json
import os
import time

PATH = "/opt/aws/panorama/storage/records.log"
RECORD_SIZE = 32


def record(number):
    digest = hashlib.sha256(str(number).encode()).hexdigest()[:20]
    return f"{number:010d} {digest}\n".encode()


def main():
    tmp = sorted(os.listdir("/tmp"))
    fd = os.open(PATH, os.O_RDWR | os.O_CREAT, 0o644)
    data = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
    count = 0
    while data[count * RECORD_SIZE : (count + 1) * RECORD_SIZE] == record(count + 1):
        count += 1
    torn = len(data) - count * RECORD_SIZE
    if torn:
        os.ftruncate(fd, count * RECORD_SIZE)
        os.fsync(fd)
    os.lseek(fd, 0, os.SEEK_END)
    print("recovered " + json.dumps({"records": count, "torn_bytes": torn, "tmp": tmp}), flush=True)
    with open("/tmp/appender-was-here", "w") as scratch:
        scratch.write("x")
    number = count
    while True:
        number += 1
        os.write(fd, record(number))
        os.fsync(fd)
        print(f"committed {number}", flush=True)
        time.sleep(0.005)


main()
