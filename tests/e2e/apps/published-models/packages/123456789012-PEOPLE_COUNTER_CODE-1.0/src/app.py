"""A people counter in the shape of the published samples (written for these tests, not copied).

Each frame is resized to the detector's 512 x 512, normalised with ImageNet's mean and deviation and laid
out NCHW; the SSD model node answers (class ids, scores, boxes), iterated in that order. Detections above the
``threshold`` parameter (in percent) are boxed, persons (VOC class 14) counted; the count is labelled on the
frame and written to the app's storage before the frame is put. Logging goes to app.log through a
RotatingFileHandler; a module-level ``main()`` loops inside a try/except that logs and returns.
"""

import json
import logging
from logging.handlers import RotatingFileHandler

import cv2
import numpy as np
import panoramasdk

MODEL_NODE = "model_node"
SIZE = 512
PERSON = 14.0
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
STORAGE = "/opt/aws/panorama/storage/people_count.json"

log = logging.getLogger("people_counter")


def preprocess(image):
    resized = cv2.resize(image, (SIZE, SIZE)).astype(np.float32) / 255.0
    normalised = (resized - MEAN) / STD
    return np.expand_dims(normalised.transpose(2, 0, 1), 0)


class Application(panoramasdk.node):
    def __init__(self):
        self.frames = 0
        self.total = 0
        self.threshold = 50.0
        try:
            self.threshold = self.inputs.threshold.get()
        except Exception:
            log.exception("cannot read the threshold")
        log.info("threshold %s", self.threshold)

    def process_streams(self):
        streams = self.inputs.video_in.get()
        people = 0
        for stream in streams:
            people += self.process_media(stream)
        self.frames += 1
        self.total += people
        with open(STORAGE, "w") as handle:
            json.dump({"frames": self.frames, "people": people, "total": self.total}, handle)
        self.outputs.video_out.put(streams)

    def process_media(self, stream):
        results = self.call({"data": preprocess(stream.image)}, MODEL_NODE)
        class_ids, scores, boxes = (output[0] for output in results)
        people = 0
        for index in range(len(scores)):
            if not scores[index][0] * 100 > self.threshold:
                continue
            left, top, right, bottom = np.clip(boxes[index] / SIZE, 0, 1)
            stream.add_rect(left, top, right, bottom)
            if class_ids[index][0] == PERSON:
                people += 1
        stream.add_label(f"# people {people}", 0.1, 0.1)
        log.info("# people %d", people)
        return people


def main():
    handler = RotatingFileHandler("/opt/aws/panorama/logs/app.log", maxBytes=10000000, backupCount=2)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        app = Application()
        while True:
            app.process_streams()
    except Exception:
        log.exception("Exception during processing loop")


main()
