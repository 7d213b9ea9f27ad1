"""A car tracker in the shape of the published samples (written for these tests, not copied).

Each frame goes to a TF Object Detection API model node as uint8 RGB ``[1, 300, 300, 3]``. The outputs are
told apart by their shapes, as published code does: ``[..., 4]`` boxes, ``[..., 100]`` classes when the first
value is at least 1, else scores. Boxes are drawn from pixel sizes with width and height swapped, so their
coordinates can leave [0, 1]. On the first frame the app prints ``car-tracker {json}``: what it sent and the
shapes and dtypes it got back.
"""

import json
import logging
import sys
from logging.handlers import RotatingFileHandler

import cv2
import numpy as np
import panoramasdk

MODEL_NODE = "model_node"
SIZE = 300
MARGIN = 400

log = logging.getLogger("car_tracker")


class Application(panoramasdk.node):
    def __init__(self):
        self.frames = 0

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            if stream.is_cached:
                return
            self.process_media(stream)
        self.outputs.video_out.put(streams)
        self.frames += 1

    def process_media(self, stream):
        rgb = cv2.cvtColor(cv2.resize(stream.image, (SIZE, SIZE)), cv2.COLOR_BGR2RGB)
        x = np.expand_dims(rgb, 0).astype(np.uint8)
        outputs = self.call({"image_tensor": x}, MODEL_NODE)
        boxes = scores = classes = None
        for output in outputs:
            if output.shape[-1] == 4:
                boxes = output[0]
            elif output.shape[-1] == 100:
                if output[0][0] >= 1:
                    classes = output[0]
                else:
                    scores = output[0]
        if self.frames == 0:
            report = {
                "sent": {"shape": list(x.shape), "dtype": str(x.dtype)},
                "got": [{"shape": list(o.shape), "dtype": str(o.dtype)} for o in outputs],
                "found": [
                    name
                    for name, o in (("boxes", boxes), ("scores", scores), ("classes", classes))
                    if o is not None
                ],
            }
            print("car-tracker " + json.dumps(report), flush=True)
        height, width = stream.image.shape[:2]
        for index in range(10):
            ymin, xmin, ymax, xmax = boxes[index]
            # A track's search window: the box in pixels, widened by MARGIN, divided by the wrong sides
            # (width and height swapped), so it can run past the frame.
            left, top = (xmin * width - MARGIN) / height, (ymin * height - MARGIN) / width
            right, bottom = (xmax * width + MARGIN) / height, (ymax * height + MARGIN) / width
            stream.add_rect(left, top, right, bottom)
            if scores is not None and classes is not None:
                stream.add_label(f"car {classes[index]:.0f} {scores[index]:.2f}", left, top)


def main():
    handler = RotatingFileHandler("/opt/aws/panorama/logs/app.log", maxBytes=10000000, backupCount=2)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        app = Application()
        while True:
            app.process_streams()
    except Exception:
        log.exception("Exception during processing loop")
        sys.stdout.flush()


main()
