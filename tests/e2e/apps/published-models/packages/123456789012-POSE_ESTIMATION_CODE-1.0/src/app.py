"""A pose estimator in the shape of the published samples (written for these tests, not copied).

Two MXNet model nodes: a yolo3 detector on the frame resized to 600 x 480, then a simple_pose network on a
batch of four person crops, each 192 x 256 (descriptor shape ``[4, 3, 256, 192]``). A box the detector gives
that is not usable (not finite, or empty once inside the image) is replaced by the whole image. Each
person's keypoints are the peaks of its heatmaps; they are drawn as small boxes. On the first frame the app
prints ``pose-estimation {json}``: the shapes and dtypes it sent and got back.
"""

import json
import logging
from logging.handlers import RotatingFileHandler

import cv2
import numpy as np
import panoramasdk

WIDTH, HEIGHT = 600, 480
POSE_WIDTH, POSE_HEIGHT = 192, 256
BATCH = 4
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

log = logging.getLogger("pose_estimation")


def normalise(image, width, height):
    resized = cv2.resize(image, (width, height)).astype(np.float32) / 255.0
    return ((resized - MEAN) / STD).transpose(2, 0, 1)


def crop_box(box):
    if not np.all(np.isfinite(box)):
        return 0, 0, WIDTH, HEIGHT
    left, top, right, bottom = (int(v) for v in np.clip(box, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]))
    if right - left < 2 or bottom - top < 2:
        return 0, 0, WIDTH, HEIGHT
    return left, top, right, bottom


class Application(panoramasdk.node):
    def __init__(self):
        self.frames = 0

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            self.process_media(stream)
        self.outputs.video_out.put(streams)
        self.frames += 1

    def process_media(self, stream):
        image = cv2.resize(stream.image, (WIDTH, HEIGHT))
        x = np.expand_dims(normalise(image, WIDTH, HEIGHT), 0)
        class_ids, scores, boxes = self.call({"data": x}, "detector_node")
        order = np.argsort(-np.nan_to_num(scores[0][:, 0], nan=-1.0))[:BATCH]
        crops = [crop_box(boxes[0][index]) for index in order]
        batch = np.stack(
            [
                normalise(image[top:bottom, left:right], POSE_WIDTH, POSE_HEIGHT)
                for left, top, right, bottom in crops
            ]
        )
        (heatmaps,) = self.call({"data": batch}, "pose_node")
        if self.frames == 0:
            sent = [list(x.shape), list(batch.shape)]
            got = [[list(o.shape), str(o.dtype)] for o in (class_ids, scores, boxes, heatmaps)]
            print("pose-estimation " + json.dumps({"sent": sent, "got": got}), flush=True)
        rows, columns = heatmaps.shape[2:]
        for index, (left, top, right, bottom) in enumerate(crops):
            stream.add_rect(left / WIDTH, top / HEIGHT, right / WIDTH, bottom / HEIGHT)
            for joint in heatmaps[index]:
                row, column = np.unravel_index(int(np.argmax(joint)), joint.shape)
                px = (left + (column + 0.5) / columns * (right - left)) / WIDTH
                py = (top + (row + 0.5) / rows * (bottom - top)) / HEIGHT
                stream.add_rect(px - 0.004, py - 0.004, px + 0.004, py + 0.004)
        log.info("%d people posed", len(crops))


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
