"""A probe for arm64 base images: says which CPU it runs on, then hands every frame on to the HDMI output.

The image's build wrote ``/panorama/built-on`` from a RUN step (the CPU that step ran on); the first frame's
report carries both, so a test sees the build and the run went through qemu-user.
"""

import json
import platform
import sys

import panoramasdk


class Probe(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.frames = 0

    def run(self):
        while True:
            streams = self.inputs.video_in.get()
            if self.frames == 0:
                with open("/panorama/built-on") as handle:
                    built_on = handle.read().strip()
                report = {"machine": platform.machine(), "built_on": built_on, "executable": sys.executable}
                print("arm64-probe " + json.dumps(report), flush=True)
            for stream in streams:
                stream.add_label(platform.machine(), 0.05, 0.1)
            self.outputs.video_out.put(streams)
            self.frames += 1


Probe().run()
