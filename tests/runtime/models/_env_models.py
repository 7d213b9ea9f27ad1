"""Models made inside a backend environment, for the tests: run with the environment's interpreter as
``python _env_models.py KIND OUT_DIR [ARGS...]``.

Each writes its model files into OUT_DIR, plus ``input.npy`` (a fixed input of the declared shape) and
``expected.npz`` (``out0``, ``out1``... : what the framework itself returns for that input, in its own
process), and ``filled.npz``: the same for an input filled with FILL (what the end-to-end caller app sends,
converted to the model's dtype). Nothing is downloaded: every network is built with ``pretrained=False``
and a fixed seed.
"""

import os
import sys

import numpy as np

#: What the end-to-end caller app fills its input with.
FILL = 100.0


def gluoncv(out_dir, name, shape):
    import mxnet as mx
    from gluoncv import model_zoo

    mx.random.seed(7)
    np.random.seed(7)
    net = model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize(mx.init.Normal(0.05))
    net.hybridize()
    x = np.random.RandomState(7).uniform(-1, 1, size=shape).astype(np.float32)
    net(mx.nd.array(x))
    net.export(os.path.join(out_dir, "model"))
    # mxnet's own run of the export, as an app on a device would get it.
    block = mx.gluon.nn.SymbolBlock.imports(
        os.path.join(out_dir, "model-symbol.json"), ["data"], os.path.join(out_dir, "model-0000.params")
    )

    def run(array):
        result = block(mx.nd.array(array))
        outputs = result if isinstance(result, (list, tuple)) else [result]
        return [output.asnumpy() for output in outputs]

    save(out_dir, x, run(x), run(np.full(shape, FILL, np.float32)))


def tf_od_graph(out_dir, size, layers="0"):
    """A graph shaped like a TF Object Detection API export: uint8 image_tensor in, its four outputs out;
    ``layers`` more 3x3 convolutions of 64 channels give it the cost of a small SSD (for the benchmark)."""
    import tensorflow as tf

    size = int(size)
    rng = np.random.RandomState(7)
    width = 64 if int(layers) else 8
    kernel = rng.uniform(-0.1, 0.1, size=(3, 3, 3, width)).astype(np.float32)
    dense = rng.uniform(-0.1, 0.1, size=(width, 100 * 6)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [1, size, size, 3], name="image_tensor")
        x = tf.cast(image, tf.float32) / 255.0
        x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(kernel), strides=2, padding="SAME"))
        for _ in range(int(layers)):
            more = rng.normal(0, np.sqrt(2.0 / (9 * width)), size=(3, 3, width, width)).astype(np.float32)
            x = tf.nn.relu(tf.nn.conv2d(x, tf.constant(more), strides=1, padding="SAME"))
        x = tf.reduce_mean(x, axis=[1, 2])
        head = tf.reshape(tf.matmul(x, tf.constant(dense)), [1, 100, 6])
        tf.sigmoid(head[:, :, :4], name="detection_boxes")
        tf.sigmoid(head[:, :, 4], name="detection_scores")
        tf.floor(tf.abs(head[:, :, 5]) * 1000.0, name="detection_classes")
        tf.reduce_sum(tf.cast(head[:, :, 4] > 0, tf.float32), axis=1, name="num_detections")
    with open(os.path.join(out_dir, "frozen_inference_graph.pb"), "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())
    x = rng.randint(0, 256, size=(1, size, size, 3)).astype(np.uint8)
    names = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]
    with tf.compat.v1.Session(graph=graph) as session:
        fetches = [name + ":0" for name in names]
        outputs = session.run(fetches, {"image_tensor:0": x})
        filled = session.run(fetches, {"image_tensor:0": np.full(x.shape, FILL, np.float32).astype(np.uint8)})
    save(out_dir, x, outputs, filled)


def tf_savedmodel(out_dir):
    """A SavedModel with a float input and two named outputs."""
    import tensorflow as tf

    rng = np.random.RandomState(7)
    weights = tf.constant(rng.uniform(-1, 1, size=(16, 4)).astype(np.float32))

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([2, 16], tf.float32, name="features")])
        def serve(self, features):
            logits = tf.matmul(features, weights)
            return {"logits": logits, "best": tf.cast(tf.argmax(logits, axis=1), tf.float32)}

    module = Module()
    folder = os.path.join(out_dir, "saved_model")
    tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
    x = rng.uniform(-1, 1, size=(2, 16)).astype(np.float32)
    result = tf.saved_model.load(folder).signatures["serving_default"](features=tf.constant(x))
    outputs = [result["best"].numpy(), result["logits"].numpy()]
    save(out_dir, x, outputs, outputs)


def tf_raiser(out_dir):
    """A frozen graph whose output waits on an assertion: it raises for inputs of 100 and more."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4], name="data")
        check = tf.debugging.assert_less(x, 100.0, message="the input is too bright")
        with tf.control_dependencies([check]):
            tf.identity(x * 2.0, name="doubled")
    with open(os.path.join(out_dir, "raiser.pb"), "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    save(out_dir, x, [x * 2], [x * 2])


def save(out_dir, x, outputs, filled):
    np.save(os.path.join(out_dir, "input.npy"), x)
    np.savez(os.path.join(out_dir, "expected.npz"), **{f"out{i}": o for i, o in enumerate(outputs)})
    np.savez(os.path.join(out_dir, "filled.npz"), **{f"out{i}": o for i, o in enumerate(filled)})


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "gluoncv":
        gluoncv(out, sys.argv[3], tuple(int(dim) for dim in sys.argv[4].split(",")))
    elif kind == "tf-od-graph":
        tf_od_graph(out, *sys.argv[3:])
    elif kind == "tf-savedmodel":
        tf_savedmodel(out)
    elif kind == "tf-raiser":
        tf_raiser(out)
    else:
        sys.exit("unknown kind " + kind)
