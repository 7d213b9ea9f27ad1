"""Dev loop test app: counts its starts in storage, passes frames to HDMI, and says which code took a frame.

At start it adds one to ``starts`` in ``/opt/aws/panorama/storage`` and prints ``dev-app: start N``; on the
first frame it prints ``dev-app: VERSION first frame``. The tests edit VERSION (and break the file) while
``panorama-emulator dev`` runs it.
"""

import os
import signal

import panoramasdk

VERSION = "v1"
STARTS = "/opt/aws/panorama/storage/starts"


def count_start():
    try:
        with open(STARTS) as file:
            count = int(file.read().strip() or 0)
    except (OSError, ValueError):
        count = 0
    count += 1
    with open(STARTS + ".tmp", "w") as file:
        file.write(f"{count}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(STARTS + ".tmp", STARTS)
    return count


class Application(panoramasdk.node):
    def __init__(self):
        self.frames = 0

    def process_streams(self):
        streams = self.inputs.video_in.get()
        if self.frames == 0:
            print(f"dev-app: {VERSION} first frame", flush=True)
        self.frames += 1
        for stream in streams:
            stream.add_label(VERSION, 0.05, 0.05)
        self.outputs.video_out.put(streams)


def main():
    signal.signal(signal.SIGTERM, lambda number, frame: os._exit(0))
    print(f"dev-app: start {count_start()}", flush=True)
    app = Application()
    while True:
        app.process_streams()


if __name__ == "__main__":
    main()
