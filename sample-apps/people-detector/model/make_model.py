"""Make the people detector's model: a tiny fully convolutional net, written as model tarballs offline.

    python make_model.py OUT_DIR [--format pytorch] [--format onnx]

writes, for each format (both by default):

    OUT_DIR/people_detector_pytorch.tar.gz   model.pt   (TorchScript, needs torch)
    OUT_DIR/people_detector_pytorch.json     its mlModelDescriptor (framework PYTORCH)
    OUT_DIR/people_detector_onnx.tar.gz      model.onnx (needs onnx)
    OUT_DIR/people_detector_onnx.json        its mlModelDescriptor (framework ONNX)

The tarballs are laid out like the ones SageMaker Neo takes (the model file at the top level) and are
byte-for-byte reproducible, so their sha256 asset names stay the same from one run to the next. Feed one to
``panorama-emulator add-raw-model --model-local-path ... --descriptor-path ...``.

The model finds people the way the synthetic camera's "people" scene shows them: bright upright blobs on a
darker background. Its weights are set by hand, not trained (a fixed seed orders the neighbour weights of
its smoothing kernel), so nothing is downloaded and the same model comes out everywhere.

Input ``data``: float32 [1, 3, 224, 224], the frame resized to 224 x 224, pixel values divided by 255
(channel order does not matter: the net looks at brightness).

Outputs, in this order:
    heatmap  [1, 1, 28, 28]  probability that a person covers each 8 x 8 pixel cell
    boxes    [1, 4, 28, 28]  each cell's box (left, top, right, bottom) in [0, 1] frame coordinates;
                             a detection is the union of the boxes of a connected group of cells whose
                             heatmap is above 0.5
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

SIZE = 224
STRIDE = 8
GRID = SIZE // STRIDE
SEED = 20240531
THRESHOLD = 0.55  # mean cell brightness (0-1) at which the heatmap crosses 0.5
SHARPNESS = 24.0
INPUT_SHAPE = (1, 3, SIZE, SIZE)


def weights() -> dict[str, np.ndarray]:
    """The net's parameters.

    Returns:
        ``gray`` (1x3x1x1: brightness), ``score_w`` (1x1x3x3: a 3x3 smoothing of cell brightness, scaled so
        that sigmoid turns it into a probability), ``score_b`` (1) and ``grid`` (1x4x28x28: cell boxes).
    """
    rng = np.random.default_rng(SEED)
    gray = np.full((1, 3, 1, 1), 1.0 / 3.0, dtype=np.float32)
    # A cell counts most; its neighbours a little (in an order fixed by the seed, summing to the same).
    neighbours = rng.permutation(np.array([0.04, 0.04, 0.05, 0.05, 0.05, 0.05, 0.06, 0.06], dtype=np.float32))
    kernel = np.insert(neighbours, 4, 1.0 - neighbours.sum()).reshape(1, 1, 3, 3).astype(np.float32)
    score_w = (kernel * SHARPNESS).astype(np.float32)
    score_b = np.array([-SHARPNESS * THRESHOLD], dtype=np.float32)
    edges = np.arange(GRID + 1, dtype=np.float32) / GRID
    left, top = np.meshgrid(edges[:-1], edges[:-1])
    right, bottom = np.meshgrid(edges[1:], edges[1:])
    grid = np.stack([left, top, right, bottom])[None].astype(np.float32)
    return {"gray": gray, "score_w": score_w, "score_b": score_b, "grid": grid}


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the model computes, in numpy (for checking the exported files).

    Args:
        x: the input, [1, 3, 224, 224] float32.

    Returns:
        (heatmap, boxes) as the model returns them.
    """
    w = weights()
    brightness = np.tensordot(w["gray"][0, :, 0, 0], x[0], axes=1)
    cells = brightness.reshape(GRID, STRIDE, GRID, STRIDE).mean(axis=(1, 3))
    padded = np.pad(cells, 1)
    kernel = w["score_w"][0, 0]
    logits = (
        sum(kernel[i, j] * padded[i : i + GRID, j : j + GRID] for i in range(3) for j in range(3))
        + w["score_b"][0]
    )
    heatmap = (1.0 / (1.0 + np.exp(-logits)))[None, None].astype(np.float32)
    return heatmap, (w["grid"] * np.ones_like(heatmap)).astype(np.float32)


def torchscript_bytes() -> bytes:
    """The model as a traced TorchScript file.

    Returns:
        The bytes ``torch.jit.save`` writes.
    """
    import torch

    torch.manual_seed(SEED)
    w = {name: torch.from_numpy(value) for name, value in weights().items()}

    class PeopleDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gray = torch.nn.Conv2d(3, 1, 1, bias=False)
            self.pool = torch.nn.AvgPool2d(STRIDE, STRIDE)
            self.score = torch.nn.Conv2d(1, 1, 3, padding=1)
            with torch.no_grad():
                self.gray.weight.copy_(w["gray"])
                self.score.weight.copy_(w["score_w"])
                self.score.bias.copy_(w["score_b"])
            self.register_buffer("grid", w["grid"])

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            heatmap = torch.sigmoid(self.score(self.pool(self.gray(x))))
            return heatmap, self.grid * torch.ones_like(heatmap)

    with torch.no_grad():
        traced = torch.jit.trace(PeopleDetector().eval(), torch.zeros(INPUT_SHAPE))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def onnx_bytes() -> bytes:
    """The same model as an ONNX graph (opset 13), with every value's shape declared.

    Returns:
        The serialized ModelProto.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights()
    nodes = [
        helper.make_node("Conv", ["data", "gray"], ["brightness"]),
        helper.make_node(
            "AveragePool", ["brightness"], ["cells"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE]
        ),
        helper.make_node("Conv", ["cells", "score_w", "score_b"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["logits"], ["heatmap"]),
        # boxes = grid * ones_like(heatmap), as the TorchScript module computes it
        helper.make_node("Mul", ["heatmap", "zero"], ["heatmap_zero"]),
        helper.make_node("Add", ["heatmap_zero", "one"], ["heatmap_ones"]),
        helper.make_node("Mul", ["grid", "heatmap_ones"], ["boxes"]),
    ]
    initializers = [numpy_helper.from_array(w[name], name) for name in ("gray", "score_w", "score_b", "grid")]
    initializers += [
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        numpy_helper.from_array(np.ones((1,), np.float32), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "people_detector",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 1, GRID, GRID]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, GRID, GRID]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="people-detector"
    )
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def descriptor(framework: str) -> dict[str, object]:
    """The model's descriptor.json content.

    Args:
        framework: ``PYTORCH`` or ``ONNX``.

    Returns:
        An ``mlModelDescriptor`` document.
    """
    body: dict[str, object] = {"envelopeVersion": "2021-01-01", "framework": framework}
    if framework == "PYTORCH":
        body["frameworkVersion"] = "1.8"
    body["precisionMode"] = "FP16"
    body["inputs"] = [{"name": "data", "shape": list(INPUT_SHAPE)}]
    return {"mlModelDescriptor": body}


def tarball(member: str, data: bytes) -> bytes:
    """A reproducible .tar.gz holding one file at the top level.

    Args:
        member: the file's name in the archive.
        data: its content.

    Returns:
        The gzip-compressed tar bytes (no timestamps, owners or file names that vary between runs).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        archive.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as compressed:
        compressed.write(raw.getvalue())
    return packed.getvalue()


FORMATS = {
    "pytorch": ("PYTORCH", "model.pt", torchscript_bytes),
    "onnx": ("ONNX", "model.onnx", onnx_bytes),
}


def make(out_dir: Path, formats: tuple[str, ...] = tuple(FORMATS)) -> list[Path]:
    """Write the model tarballs and descriptors.

    Args:
        out_dir: where to write them (created if missing).
        formats: any of ``pytorch``, ``onnx``.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in formats:
        framework, member, build = FORMATS[name]
        archive = out_dir / f"people_detector_{name}.tar.gz"
        archive.write_bytes(tarball(member, build()))
        meta = out_dir / f"people_detector_{name}.json"
        meta.write_text(json.dumps(descriptor(framework), indent=4))
        written += [archive, meta]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the people detector model tarballs.")
    parser.add_argument("out_dir", type=Path, help="directory to write the tarballs and descriptors into")
    parser.add_argument("--format", action="append", choices=sorted(FORMATS), help="a format (default: all)")
    args = parser.parse_args(argv)
    try:
        for path in make(args.out_dir, tuple(args.format or FORMATS)):
            print(path)
    except ImportError as error:
        print(
            f"make_model: {error.name} is needed for this format: pip install {error.name}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
