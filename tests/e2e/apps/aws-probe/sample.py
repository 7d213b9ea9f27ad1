"""An app in the shape of the developer guide's sample (written for these tests, not copied).

It counts frames and, every 150 frames, puts two CloudWatch metrics with a boto3 client made once at
start. The call is not guarded: if it raises, the app exits (and the device restarts it).
"""

import time

import boto3
import panoramasdk

EVERY = 150


class Application(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.frame_count = 0
        self.busy = 0.0
        self.cloudwatch = boto3.client("cloudwatch")

    def process_streams(self):
        streams = self.inputs.video_in.get()
        started = time.time()
        for stream in streams:
            stream.add_label(f"frame {self.frame_count}", 0.05, 0.1)
        self.outputs.video_out.put(streams)
        self.frame_count += 1
        self.busy += time.time() - started
        if self.frame_count % EVERY == 0:
            self.cloudwatch.put_metric_data(
                Namespace="EmulatorSample",
                MetricData=[
                    {"MetricName": "FramesSeen", "Value": float(EVERY), "Unit": "Count"},
                    {"MetricName": "BusySeconds", "Value": self.busy, "Unit": "Seconds"},
                ],
            )
            self.busy = 0.0


def main():
    app = Application()
    while True:
        app.process_streams()


main()
