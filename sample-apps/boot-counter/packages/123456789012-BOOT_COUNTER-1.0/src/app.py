"""Boot counter: an AWS Panorama application that shows what survives a reboot of the appliance.

At every start it
- adds one to a counter kept in the application's persistent storage (``/opt/aws/panorama/storage``), written
  to a temporary file, fsync'ed and renamed over the old one, so that a power cut leaves either the old or
  the new count;
- looks for the scratch file the previous start left in ``/tmp`` (temporary paths are cleared at boot, so it
  must be gone) and writes a new one;
- tries to write to the application's own code (``/panorama``) and to ``/`` (the root filesystem is
  read-only on the appliance);
- logs to ``/opt/aws/panorama/logs/app.log`` and prints one ``boot-counter:`` line with a JSON report.

Then it idles, logging a heartbeat, until the appliance stops it (SIGTERM).
It has no camera, no model and no HDMI output, and does not use the Panorama SDK.
"""

import errno
import json
import logging
import os
import signal
import socket
import sys
import time

STORAGE_DIR = "/opt/aws/panorama/storage"
LOG_DIR = "/opt/aws/panorama/logs"
COUNT_FILE = os.path.join(STORAGE_DIR, "boot_count")
SCRATCH_FILE = "/tmp/boot-counter-scratch"
HEARTBEAT_SECONDS = 10

logger = logging.getLogger("boot_counter")


def setup_logging():
    logger.setLevel(logging.INFO)
    try:
        handler = logging.FileHandler(os.path.join(LOG_DIR, "app.log"))
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


def read_count():
    try:
        with open(COUNT_FILE) as file:
            return int(file.read().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        logger.warning("the boot count file is unreadable; starting again from 0")
        return 0


def write_durably(path, text):
    """Replace ``path`` with ``text`` so that a power cut leaves the old or the new content, never a mix."""
    directory = os.path.dirname(path)
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_write(directory):
    """'writable', or why a file cannot be created in ``directory`` (e.g. 'read-only file system')."""
    probe = os.path.join(directory, ".boot-counter-probe")
    try:
        with open(probe, "w") as file:
            file.write("probe")
    except OSError as error:
        return (error.strerror or errno.errorcode.get(error.errno, "error")).lower()
    os.remove(probe)
    return "writable"


def main():
    setup_logging()
    stopping = []
    signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))

    previous_scratch = os.path.exists(SCRATCH_FILE)
    count = read_count() + 1
    write_durably(COUNT_FILE, "%d\n" % count)
    with open(SCRATCH_FILE, "w") as file:
        file.write("written at boot %d\n" % count)

    report = {
        "boot": count,
        "previous_scratch_file_present": previous_scratch,
        "code_dir": try_write("/panorama"),
        "root_dir": try_write("/"),
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
    }
    print("boot-counter: " + json.dumps(report, sort_keys=True), flush=True)
    logger.info("boot %d: %s", count, json.dumps(report, sort_keys=True))
    if previous_scratch:
        logger.error("the scratch file of the previous boot is still in /tmp: temporary paths were not cleared")

    started = time.monotonic()
    while not stopping:
        time.sleep(0.2)
        if time.monotonic() - started >= HEARTBEAT_SECONDS:
            started = time.monotonic()
            logger.info("boot %d: running", count)
    logger.info("boot %d: stopping (signal %d)", count, stopping[0])
    print("boot-counter: stopping", flush=True)


if __name__ == "__main__":
    main()
