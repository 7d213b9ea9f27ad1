"""Shows every camera frame on HDMI with a label, through the Panorama SDK."""

import panoramasdk


class Passthrough(panoramasdk.node):
    def run(self):
        print("passthrough: up", flush=True)
        while True:
            streams = self.inputs.video_in.get()
            for stream in streams:
                stream.add_label("passthrough", 0.1, 0.1)
            self.outputs.video_out.put(streams)


Passthrough().run()
