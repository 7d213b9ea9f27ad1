"""HOG people: an AWS Panorama application that loads its model inside its own container.

Since device software 8.0.29, Panorama applications load and run their models themselves rather than
calling model nodes. This one uses OpenCV's built-in HOG + linear SVM people detector, whose coefficients
ship inside OpenCV: there is no weight file to package. Every frame is scaled down to ``detect_width``
pixels wide for detection; each person found is marked with a rectangle and a label on the HDMI output, and a
label gives the number of people and the time the detection took. The number of frames processed is kept in
the application's persistent storage across reboots. Needs only OpenCV and numpy (both in the Panorama
application base image) and the application SDK; runs unchanged on an appliance and on panorama-emulator.

Parameters (graph.json value nodes):
    detect_width  int32    frames are scaled to this width (pixels) before detection; smaller is faster
    min_score     float32  detections whose detector score is lower are dropped
"""

import json
import logging
import os
import signal
import time
from logging.handlers import RotatingFileHandler

import cv2
import numpy as np
import panoramasdk

STORAGE_DIR = "/opt/aws/panorama/storage"
LOG_DIR = "/opt/aws/panorama/logs"
COUNT_FILE = os.path.join(STORAGE_DIR, "hog_people.json")

SAVE_EVERY = 10  # frames between two writes of the count file (it is also written at shutdown)
LABEL = "HOG people"

logger = logging.getLogger("hog_people")


def setup_logging():
    logger.setLevel(logging.INFO)
    try:
        handler = RotatingFileHandler(os.path.join(LOG_DIR, "app.log"), maxBytes=10000000, backupCount=2)
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


class PeopleDetector(object):
    """OpenCV's default HOG people detector, loaded once (the app's model)."""

    def __init__(self, width, min_score):
        started = time.perf_counter()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.width = max(64, int(width))  # the detection window is 64 x 128 pixels
        self.min_score = float(min_score)
        self.load_ms = (time.perf_counter() - started) * 1000.0

    def detect(self, image):
        """People in a BGR image, as (left, top, right, bottom, score) with coordinates in [0, 1]."""
        height, width = image.shape[:2]
        scale = min(1.0, float(self.width) / width)
        small = image
        if scale < 1.0:
            size = (self.width, max(1, int(round(height * scale))))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_height, small_width = small.shape[:2]
        if small_height < 128 or small_width < 64:
            return []
        rects, scores = self.hog.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
        found = []
        for (x, y, w, h), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(scores).reshape(-1)):
            if score < self.min_score:
                continue
            left = min(max(x / float(small_width), 0.0), 1.0)
            top = min(max(y / float(small_height), 0.0), 1.0)
            right = min(max((x + w) / float(small_width), 0.0), 1.0)
            bottom = min(max((y + h) / float(small_height), 0.0), 1.0)
            if left < right and top < bottom:
                found.append((left, top, right, bottom, float(score)))
        return found


class Counter(object):
    """Frames processed and people found, kept across reboots in the application's storage."""

    def __init__(self, path):
        self.path = path
        self.state = {"boots": 0, "frames": 0, "detections": 0}
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
        super().__init__()
        self.detector = PeopleDetector(self.inputs.detect_width.get(), self.inputs.min_score.get())
        self.counter = Counter(COUNT_FILE)
        logger.info(
            "HOG people detector loaded in %.1f ms: detection width %d, minimum score %.2f, boot %d",
            self.detector.load_ms, self.detector.width, self.detector.min_score, self.counter.state["boots"],
        )

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            if stream.is_cached:
                continue
            started = time.perf_counter()
            people = self.detector.detect(stream.image)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            for left, top, right, bottom, score in people:
                stream.add_rect(left, top, right, bottom)
                stream.add_label("person {:.2f}".format(score), left, max(top - 0.03, 0.0))
            stream.add_label("{}: {} ({:.0f} ms)".format(LABEL, len(people), elapsed_ms), 0.02, 0.04)
            self.counter.update(len(people))
        self.outputs.video_out.put(streams)


def stop(signum, frame):
    raise SystemExit(0)


def main():
    setup_logging()
    signal.signal(signal.SIGTERM, stop)  # the appliance stops apps with SIGTERM: save the count first
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
            logger.info("stopped after %d frames in all", app.counter.state["frames"])


if __name__ == "__main__":
    main()
