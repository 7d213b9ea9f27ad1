"""Takes the first camera frame and crashes on it."""

import panoramasdk


class Broken(panoramasdk.node):
    def run(self):
        streams = self.inputs.video_in.get()
        raise RuntimeError(f"cannot handle a frame of shape {streams[0].image.shape}")


Broken().run()
