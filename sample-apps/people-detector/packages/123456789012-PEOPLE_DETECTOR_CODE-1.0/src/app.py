"""People detector: an AWS Panorama application with a model node.

Every camera frame is resized to 224 x 224 and sent to the ``people_detector_model`` node with
``self.call``. The model answers with a heatmap (the probability that a person covers each 8 x 8 pixel cell
of the resized frame) and each cell's box; every connected group of cells whose probability is above the
threshold is one person, boxed by the union of its cells' boxes. Each person gets a rectangle and a
"person" label on the HDMI output, and a running count is kept in the application's persistent storage.

Needs numpy and OpenCV (both in the Panorama application base image) and the Panorama application SDK;
runs unchanged on an appliance and on panorama-emulator.

Parameters (graph.json value nodes):
    threshold  float32  heatmap cells above this probability (0-1) belong to a person
"""

import json
import logging
import os
import time
from logging.handlers import RotatingFileHandler

import cv2
import numpy as np
import panoramasdk

MODEL_NODE = "people_detector_model"
INPUT_SIZE = 224  # the model's input: [1, 3, 224, 224] float32, pixel values divided by 255
LABEL = "person"
STORAGE_DIR = "/opt/aws/panorama/storage"
LOG_DIR = "/opt/aws/panorama/logs"
COUNT_FILE = os.path.join(STORAGE_DIR, "people_count.json")
SAVE_EVERY = 30  # frames between two writes of the count file
LOG_EVERY = 30  # frames between two log lines when the number of people does not change

logger = logging.getLogger("people_detector")


def setup_logging():
    logger.setLevel(logging.INFO)
    try:
        handler = RotatingFileHandler(os.path.join(LOG_DIR, "app.log"), maxBytes=10000000, backupCount=2)
    except OSError:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


def preprocess(image):
    """The model's input for one BGR frame: 1 x 3 x 224 x 224 float32 in [0, 1]."""
    resized = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def detections(heatmap, boxes, threshold):
    """People found in the model's outputs, as (left, top, right, bottom) in [0, 1] frame coordinates.

    heatmap is [1, 1, H, W] and boxes [1, 4, H, W]; a person is a group of cells above the threshold that
    touch (sides or corners), boxed by the union of the boxes of its cells. Sorted left to right.
    """
    hot = (heatmap[0, 0] > threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(hot, connectivity=8)
    found = []
    for group in range(1, count):
        rows, cols = np.nonzero(labels == group)
        box = (
            boxes[0, 0, rows, cols].min(),
            boxes[0, 1, rows, cols].min(),
            boxes[0, 2, rows, cols].max(),
            boxes[0, 3, rows, cols].max(),
        )
        found.append(tuple(min(max(float(value), 0.0), 1.0) for value in box))
    return sorted(found)


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
        super(Application, self).__init__()
        self.threshold = float(self.inputs.threshold.get())
        self.counter = Counter(COUNT_FILE)
        self.frame = 0
        self.last_people = {}
        logger.info(
            "people detector started: model node %s, threshold %.2f, boot %d",
            MODEL_NODE,
            self.threshold,
            self.counter.state["boots"],
        )

    def detect(self, image):
        heatmap, boxes = self.call({"data": preprocess(image)}, MODEL_NODE)[:2]
        return detections(np.asarray(heatmap), np.asarray(boxes), self.threshold)

    def process_streams(self):
        streams = self.inputs.video_in.get()
        people = 0
        for stream in streams:
            if stream.is_cached:
                continue
            try:
                found = self.detect(stream.image)
            except Exception as error:  # one failed call must not stop the video
                logger.warning("model call failed on %s: %s", stream.stream_id, error)
                continue
            for left, top, right, bottom in found:
                stream.add_rect(left, top, right, bottom)
                stream.add_label(LABEL, left, max(top - 0.03, 0.0))
            stream.add_label("people: {}".format(len(found)), 0.02, 0.04)
            people += len(found)
            self.log(stream.stream_id, found)
        self.counter.update(people)
        self.frame += 1
        self.outputs.video_out.put(streams)

    def log(self, stream_id, found):
        """Log a stream's people when their number changes, and every LOG_EVERY frames."""
        if self.last_people.get(stream_id) == len(found) and self.frame % LOG_EVERY:
            return
        self.last_people[stream_id] = len(found)
        boxes = [[round(value, 5) for value in box] for box in found]
        logger.info("detections %s", json.dumps({"frame": self.frame, "stream": stream_id, "people": boxes}))


def main():
    setup_logging()
    try:
        app = Application()
        logger.info("processing streams")
        while True:
            app.process_streams()
    except Exception:
        logger.exception("the processing loop failed")
        raise


if __name__ == "__main__":
    main()
