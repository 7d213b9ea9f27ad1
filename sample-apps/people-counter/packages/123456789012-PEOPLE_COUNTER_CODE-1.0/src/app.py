"""People counter: an AWS Panorama application.

Finds moving bright blobs (people under a bright light, or the synthetic camera's "people" scene) in every
camera stream, marks each with a rectangle and a label on the HDMI output, and keeps a running count in the
application's persistent storage. Needs only numpy and the Panorama application SDK; runs unchanged on an
appliance and on panorama-emulator.

Parameters (graph.json value nodes):
    threshold  float32  pixels at least this bright (0-255) can belong to a person
    label      string   the word drawn next to every detection
"""

import json
import logging
import os
import signal
import time
from logging.handlers import RotatingFileHandler

import numpy as np
import panoramasdk

STORAGE_DIR = "/opt/aws/panorama/storage"
LOG_DIR = "/opt/aws/panorama/logs"
COUNT_FILE = os.path.join(STORAGE_DIR, "people_count.json")

STEP = 8  # analyse every 8th pixel of every 8th row
MIN_CELLS = 6  # blobs smaller than this many sampled pixels are noise
GAP = 3  # regions this close (in sampled pixels) are one blob
MOTION = 2  # a blob moved when at least this many of its sampled pixels changed since the last frame
SAVE_EVERY = 30  # frames between two writes of the count file

logger = logging.getLogger("people_counter")


def setup_logging():
    logger.setLevel(logging.INFO)
    handler = None
    try:
        handler = RotatingFileHandler(os.path.join(LOG_DIR, "app.log"), maxBytes=10000000, backupCount=2)
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


def _runs(row):
    """(start, end) of every run of True in a 1-D boolean array, end exclusive."""
    padded = np.concatenate(([0], row.view(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _root(parent, index):
    while parent[index] != index:
        parent[index] = parent[parent[index]]
        index = parent[index]
    return index


def find_blobs(gray, previous, threshold):
    """Bounding boxes, in sampled-pixel units, of the bright connected regions that moved.

    gray and previous are 2-D uint8 arrays of the same shape (previous is None for a stream's first frame).
    Regions are found run by run (a run is a horizontal stretch of bright pixels), so the work grows with the
    number of runs, not of pixels.
    """
    bright = np.ascontiguousarray(gray >= threshold)
    changed_sums = None
    if previous is not None:
        changed = np.abs(gray.astype(np.int16) - previous.astype(np.int16)) > 24
        zeros = np.zeros((changed.shape[0], 1), np.int32)
        changed_sums = np.concatenate((zeros, changed.cumsum(axis=1)), axis=1)
    runs = []  # (row, start, end)
    parent = []
    above = []  # indexes of the previous row's runs
    for row in np.flatnonzero(bright.any(axis=1)).tolist():
        current = []
        for start, end in _runs(bright[row]):
            index = len(runs)
            runs.append((row, start, end))
            parent.append(index)
            current.append(index)
            for other in above:
                other_row, other_start, other_end = runs[other]
                if other_row == row - 1 and other_start < end and start < other_end:
                    parent[_root(parent, index)] = _root(parent, other)
        above = current
    blobs = {}
    for index, (row, start, end) in enumerate(runs):
        root = _root(parent, index)
        moved = 0 if changed_sums is None else int(changed_sums[row, end] - changed_sums[row, start])
        blob = blobs.get(root)
        if blob is None:
            blobs[root] = [start, row, end, row + 1, end - start, moved]
        else:
            blob[0], blob[1] = min(blob[0], start), min(blob[1], row)
            blob[2], blob[3] = max(blob[2], end), max(blob[3], row + 1)
            blob[4] += end - start
            blob[5] += moved
    boxes = []
    for left, top, right, bottom, cells, moved in merge_close(blobs.values()):
        if cells >= MIN_CELLS and (changed_sums is None or moved >= max(MOTION, cells // 50)):
            boxes.append((left, top, right, bottom))
    return sorted(boxes)


def merge_close(blobs, gap=GAP):
    """Join regions that overlap or lie within gap sampled pixels of each other (a head above its body).

    A region is [left, top, right, bottom, cells, moved]; joined regions add their cells and moved cells.
    """
    blobs = [list(blob) for blob in blobs]
    joined = True
    while joined:
        joined = False
        for i in range(len(blobs)):
            for j in range(i + 1, len(blobs)):
                a, b = blobs[i], blobs[j]
                if a[0] - gap < b[2] and b[0] - gap < a[2] and a[1] - gap < b[3] and b[1] - gap < a[3]:
                    blobs[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]),
                                a[4] + b[4], a[5] + b[5]]
                    del blobs[j]
                    joined = True
                    break
            if joined:
                break
    return blobs


class Counter(object):
    """The running count, kept across reboots in the application's storage."""

    def __init__(self, path):
        self.path = path
        self.state = {"boots": 0, "frames": 0, "detections": 0, "current": 0, "peak": 0}
        try:
            with open(path) as handle:
                saved = json.load(handle)
            for key in self.state:
                if isinstance(saved.get(key), int):
                    self.state[key] = saved[key]
        except (OSError, ValueError, AttributeError):
            pass
        self.state["boots"] += 1
        self.save()

    def update(self, people):
        self.state["frames"] += 1
        self.state["detections"] += people
        self.state["current"] = people
        self.state["peak"] = max(self.state["peak"], people)
        if self.state["frames"] % SAVE_EVERY == 0:
            self.save()

    def save(self):
        temp = self.path + ".tmp"
        try:
            with open(temp, "w") as handle:
                json.dump(dict(self.state, updated=time.time()), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as error:
            logger.warning("cannot save the count to %s: %s", self.path, error)


class Application(panoramasdk.node):
    def __init__(self):
        # Like many Panorama apps, this one does not call super().__init__(): the SDK copes.
        self.threshold = float(self.inputs.threshold.get())
        self.label = str(self.inputs.label.get())
        self.previous = {}
        self.counter = Counter(COUNT_FILE)
        state = self.counter.state
        logger.info(
            "people counter started: threshold %.1f, label %r, boot %d",
            self.threshold, self.label, state["boots"],
        )
        print(
            "people-counter: boot {}; kept in storage from earlier boots: {} frames, {} detections".format(
                state["boots"], state["frames"], state["detections"]),
            flush=True,
        )

    def process_streams(self):
        streams = self.inputs.video_in.get()
        people = 0
        for stream in streams:
            if stream.is_cached:
                continue
            image = stream.image
            height, width = image.shape[:2]
            gray = image[::STEP, ::STEP].max(axis=2)
            previous = self.previous.get(stream.stream_id)
            if previous is not None and previous.shape != gray.shape:
                previous = None
            boxes = find_blobs(gray, previous, self.threshold)
            self.previous[stream.stream_id] = gray
            for left, top, right, bottom in boxes:
                box = (
                    min(left * STEP / width, 1.0),
                    min(top * STEP / height, 1.0),
                    min(right * STEP / width, 1.0),
                    min(bottom * STEP / height, 1.0),
                )
                stream.add_rect(*box)
                stream.add_label(self.label, box[0], max(box[1] - 0.03, 0.0))
            people += len(boxes)
            stream.add_label("{}s: {}".format(self.label, len(boxes)), 0.02, 0.04)
        self.counter.update(people)
        self.outputs.video_out.put(streams)


def stop(signum, frame):
    raise SystemExit(0)


def main():
    setup_logging()
    # The appliance stops an application with SIGTERM: save the count then. A power cut gives no warning,
    # and loses at most the last SAVE_EVERY frames.
    signal.signal(signal.SIGTERM, stop)
    app = None
    try:
        app = Application()
        logger.info("processing streams")
        while True:
            app.process_streams()
    except Exception:
        logger.exception("the processing loop failed")
        raise
    finally:
        if app is not None:
            app.counter.save()
            print("people-counter: stopping; {} frames counted over {} boots".format(
                app.counter.state["frames"], app.counter.state["boots"]), flush=True)


if __name__ == "__main__":
    main()
