"""An app in the shape of the published Panorama samples (written for these tests, not copied).

A module-level ``main()`` loops on ``process_streams`` inside a try/except that logs and returns; logging goes
to /opt/aws/panorama/logs/app.log through a RotatingFileHandler; ``super().__init__()`` is not called; cached
streams are skipped; overlays are computed from pixel sizes in ways that leave [0, 1], as published code does
(a box from a detector whose coordinates overshoot the frame, width and height swapped; a column of labels
``0.1 + 0.1 * j`` that runs past the bottom).
"""

import json
import logging
import sys
from logging.handlers import RotatingFileHandler

import panoramasdk

log = logging.getLogger("published_shape")


class Application(panoramasdk.node):
    def __init__(self):
        self.frame_count = 0

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            if stream.is_cached:
                return
            height, width = stream.image.shape[:2]
            stream.image[:, :, :] = 0  # a privacy mask over the whole frame: only the overlays remain
            # x / h and y / w: the axes swapped, and a box that overshoots the frame on three sides.
            stream.add_rect(-40 / height, 270 / width, (width + 300) / height, (height + 500) / width * 2)
            for j in range(12):
                stream.add_label(f"line {j}", 0.1, 0.1 + 0.1 * j)
        self.outputs.video_out.put(streams)
        self.frame_count += 1
        if self.frame_count == 1:
            report = {"executable": sys.executable, "version": list(sys.version_info[:2])}
            print("published-shape " + json.dumps(report), flush=True)
            log.info("first frame on Python %s", sys.version.split()[0])


def main():
    handler = RotatingFileHandler("/opt/aws/panorama/logs/app.log", maxBytes=1 << 20, backupCount=3)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        app = Application()
        while True:
            app.process_streams()
    except Exception:
        log.exception("Exception during processing loop")


main()
