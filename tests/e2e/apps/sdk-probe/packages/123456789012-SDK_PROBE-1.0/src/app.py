"""SDK probe: exercises the panoramasdk inside the appliance's sandbox and reports what it saw.

Every report is one line on stdout, ``e2e-report {json}``, which the tests read back from the node's
``console_output``. What the probe does is chosen by the ``mode`` parameter (a graph value node):

- ``sdk``: typed parameters, error cases, media attributes, drawing on the image, overlays, time stamps,
  then frames forever with ``get(timeout=1)`` so that a paused camera shows up as a timeout;
- ``multicam``: one report per batch (stream ids, is_cached, shapes, time stamps);
- ``lockstep``: ``count`` frames drawn with state carried from frame to frame, then it stops taking frames;
- ``steady``: frames forever, each held for a moment before it is put (so a kill lands mid-frame);
- ``counted``: frames forever, each labelled ``probe <k>`` (k counts this boot's frames from 1); after each
  put it finishes the frame's work and saves ``frames_done`` (k) to storage, as apps that count then save do.

Python 3.8, numpy and the SDK only.
"""

import json
import os
import sys
import time

import numpy as np
import panoramasdk

MARKER = (255, 0, 255)  # BGR magenta, drawn into the pixels: HDMI must show it
MARKER_BOX = (500, 580, 920, 1000)  # rows, then columns, on a 1920x1080 frame
SDK_LABEL = "e2e-sdk-label"


def report(kind, **fields):
    fields["kind"] = kind
    sys.stdout.write("e2e-report " + json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def outcome(action):
    """What calling ``action`` did: None when it returned, else the exception's type, message and kind."""
    try:
        action()
    except Exception as error:  # the probe reports whatever happened
        return {
            "type": type(error).__name__,
            "message": str(error),
            "value_error": isinstance(error, ValueError),
            "key_error": isinstance(error, KeyError),
            "type_error": isinstance(error, TypeError),
        }
    return None


def typed(value):
    return {"type": type(value).__name__, "value": value}


def stamp_ok(stamp):
    return (
        isinstance(stamp, tuple)
        and len(stamp) == 2
        and all(isinstance(part, int) and not isinstance(part, bool) for part in stamp)
        and 0 <= stamp[1] < 1000000
    )


class Probe(panoramasdk.node):
    def __init__(self):
        # Deliberately no super().__init__(): the ports must work anyway, as for many real apps.
        self.mode = self.inputs.mode.get()

    # --- sdk -----------------------------------------------------------------------------------------------

    def run_sdk(self):
        report(
            "params",
            mode=typed(self.inputs.mode.get()),
            threshold=typed(self.inputs.threshold.get()),
            count=typed(self.inputs.count.get()),
            flag=typed(self.inputs.flag.get()),
            title=typed(self.inputs.title.get()),
            fallback=typed(self.inputs.fallback.get()),
            inputs=sorted(port.name for port in self.inputs),
            outputs=sorted(port.name for port in self.outputs),
            descriptor_env=os.environ.get("E2E_FROM_DESCRIPTOR"),
            dockerfile_env=os.environ.get("E2E_FROM_DOCKERFILE"),
            is_node=isinstance(self, panoramasdk.node),
        )
        data = np.zeros((1, 3, 8, 8), np.float32)
        report(
            "errors",
            put_empty=outcome(lambda: self.outputs.video_out.put([])),
            put_empty_tuple=outcome(lambda: self.outputs.video_out.put(())),
            call_unknown=outcome(lambda: self.call({"data": data}, "no_such_model_node")),
        )

        streams = self.inputs.video_in.get()
        first = streams[0]
        image = first.image
        top, bottom, left, right = MARKER_BOX
        before = image[(top + bottom) // 2, (left + right) // 2].tolist()
        checks = {
            "rect_negative": outcome(lambda: first.add_rect(-0.1, 0.1, 0.5, 0.5)),
            "rect_above_one": outcome(lambda: first.add_rect(0.1, 0.1, 1.5, 0.5)),
            "rect_left_not_less_than_right": outcome(lambda: first.add_rect(0.6, 0.1, 0.4, 0.5)),
            "rect_top_not_less_than_bottom": outcome(lambda: first.add_rect(0.1, 0.6, 0.4, 0.5)),
            "rect_nan": outcome(lambda: first.add_rect(float("nan"), 0.1, 0.4, 0.5)),
            "label_x_above_one": outcome(lambda: first.add_label("bad", 1.2, 0.5)),
            "label_y_negative": outcome(lambda: first.add_label("bad", 0.5, -0.01)),
            "label_not_a_number": outcome(lambda: first.add_label("bad", "left", 0.5)),
            "rect_bounds_inclusive": outcome(lambda: first.add_rect(0.0, 0.0, 1.0, 1.0)),
            "label_bounds_inclusive": outcome(lambda: first.add_label("edge", 1.0, 1.0)),
        }
        image[top:bottom, left:right] = MARKER
        first.add_rect(0.25, 0.25, 0.75, 0.75)
        first.add_label(SDK_LABEL, 0.02, 0.9)
        self.outputs.video_out.put(streams)
        report(
            "first",
            count=len(streams),
            stream_ids=[stream.stream_id for stream in streams],
            stream_uri=first.stream_uri,
            shape=list(image.shape),
            dtype=str(image.dtype),
            writeable=bool(image.flags.writeable),
            is_ndarray=isinstance(image, np.ndarray),
            is_media=isinstance(first, panoramasdk.media),
            time_stamp=list(first.time_stamp),
            time_stamp_type=type(first.time_stamp).__name__,
            time_stamp_ok=stamp_ok(first.time_stamp),
            seconds_from_now=first.time_stamp[0] - time.time(),
            is_cached=first.is_cached,
            pixel_before=before,
            checks=checks,
        )

        frames, cached, stamps_ok, increasing = 1, int(first.is_cached), True, True
        previous = first.time_stamp
        while frames < 20:
            streams = self.inputs.video_in.get(timeout=30)
            for stream in streams:
                cached += int(stream.is_cached)
                stamps_ok = stamps_ok and stamp_ok(stream.time_stamp)
                increasing = increasing and stream.time_stamp >= previous
                previous = stream.time_stamp
                self.mark(stream)
            self.outputs.video_out.put(streams)
            frames += 1
        report("frames", frames=frames, cached=cached, time_stamps_ok=stamps_ok, increasing=increasing)

        timeouts = 0
        waiting = False
        while True:
            try:
                streams = self.inputs.video_in.get(timeout=1.0)
            except TimeoutError as error:
                timeouts += 1
                waiting = True
                report(
                    "timeout",
                    number=timeouts,
                    type=type(error).__name__,
                    is_timeout_error=isinstance(error, TimeoutError),
                    is_port_timeout_error=isinstance(error, panoramasdk.PortTimeoutError),
                    message=str(error),
                )
                continue
            if waiting:
                waiting = False
                report("resumed", count=len(streams), is_cached=[stream.is_cached for stream in streams])
            for stream in streams:
                self.mark(stream)
            self.outputs.video_out.put(streams)

    def mark(self, stream):
        top, bottom, left, right = MARKER_BOX
        stream.image[top:bottom, left:right] = MARKER
        stream.add_rect(0.25, 0.25, 0.75, 0.75)
        stream.add_label(SDK_LABEL, 0.02, 0.9)

    # --- multicam ------------------------------------------------------------------------------------------

    def run_multicam(self):
        batch = 0
        while True:
            streams = self.inputs.video_in.get()
            batch += 1
            report(
                "batch",
                number=batch,
                streams=[
                    {
                        "id": stream.stream_id,
                        "cached": stream.is_cached,
                        "shape": list(stream.image.shape),
                        "time_stamp": list(stream.time_stamp),
                        "uri": stream.stream_uri,
                    }
                    for stream in streams
                ],
            )
            for stream in streams:
                stream.add_label("camera " + stream.stream_id, 0.05, 0.05)
            self.outputs.video_out.put(streams)

    # --- lockstep ------------------------------------------------------------------------------------------

    def run_lockstep(self):
        limit = self.inputs.count.get()
        average = None
        first = None
        frames = 0
        while frames < limit:
            streams = self.inputs.video_in.get()
            for stream in streams:
                image = stream.image
                small = image[::8, ::8].astype(np.int32)
                # State carried across frames: what HDMI shows depends on every frame so far, in order.
                average = small if average is None else (average * 3 + small) // 4
                if first is None:
                    first = int(small.sum())
                height, width = average.shape[:2]
                image[:height, :width] = average.astype(np.uint8)
                row, column = np.unravel_index(int(np.argmax(average.sum(axis=2))), (height, width))
                left, top = column / width, row / height
                stream.add_rect(left * 0.9, top * 0.9, left * 0.9 + 0.1, top * 0.9 + 0.1)
                stream.add_label(f"frame {frames}", 0.6, 0.05)
            self.outputs.video_out.put(streams)
            frames += 1
        report(
            "stopped",
            frames=frames,
            first_checksum=first,
            checksum=int(average.sum()) if average is not None else None,
        )
        while True:
            time.sleep(1)

    # --- steady --------------------------------------------------------------------------------------------

    def run_steady(self):
        report("started", frames=0)
        while True:
            streams = self.inputs.video_in.get()
            held = [stream.image for stream in streams]
            time.sleep(0.02)  # hold the frame a while: a kill now lands mid-frame
            for index, stream in enumerate(streams):
                held[index][:40, :40] = 255
                stream.add_label("steady", 0.05, 0.05)
            self.outputs.video_out.put(streams)

    # --- counted -------------------------------------------------------------------------------------------

    def run_counted(self):
        done = 0
        path = "/opt/aws/panorama/storage/frames_done"
        while True:
            streams = self.inputs.video_in.get()
            done += 1
            for stream in streams:
                stream.add_label(f"probe {done}", 0.05, 0.05)
            self.outputs.video_out.put(streams)
            time.sleep(0.05)  # the rest of the frame's work, after the put
            with open(path + ".tmp", "w") as file:
                file.write(str(done))
                file.flush()
                os.fsync(file.fileno())
            os.replace(path + ".tmp", path)


def main():
    probe = Probe()
    runner = getattr(probe, "run_" + probe.mode, None)
    if runner is None:
        report("bad-mode", mode=probe.mode)
        sys.exit(2)
    runner()


if __name__ == "__main__":
    main()
