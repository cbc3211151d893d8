#!/usr/bin/env python3
"""Build `retinaface_mobilenet_int8.onnx`: the detector with int8 convolutions.

Static, per-channel QDQ quantization of the Conv layers only (the anchor
decoding and NMS stay float). Calibrated on mosaics of *training* photos at
random sizes (../shared/data/train/{lfw,humans}, never the evaluation set), so
that small and large faces both set the activation ranges.

    pip install onnx onnxruntime opencv-python-headless numpy
    python tools/quantize_detector.py [--train ../shared/data/train]

The result is checked by benchmarks/detector_precision.py (same faces found as
the float model on the evaluation photos, and the speed of each).
"""

from __future__ import annotations

import argparse
import glob
import tempfile
from pathlib import Path

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "anonyface" / "models"


class MosaicReader(CalibrationDataReader):
    """Calibration inputs: 640×640 canvases with six training photos pasted at 40–320 px."""

    def __init__(self, train: Path, count: int = 12, seed: int = 0) -> None:
        files = sorted(glob.glob(str(train / "lfw" / "*.jpg")))[::200][:24]
        files += sorted(glob.glob(str(train / "humans" / "*.jpg")))[::300][:12]
        if not files:
            raise SystemExit(f"no training photos under {train}")
        photos = [cv2.imread(f)[..., ::-1] for f in files]
        rng = np.random.default_rng(seed)
        self.batches = []
        for _ in range(count):
            canvas = np.zeros((640, 640, 3), np.uint8) + rng.integers(0, 255, 3).astype(np.uint8)
            for _ in range(6):
                size = int(rng.integers(40, 320))
                x, y = rng.integers(0, 640 - size, 2)
                canvas[y : y + size, x : x + size] = cv2.resize(photos[rng.integers(len(photos))], (size, size))
            self.batches.append({"x:0": canvas[None].astype(np.float32)})
        self._it = iter(self.batches)

    def get_next(self):
        return next(self._it, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    ap.add_argument("--src", type=Path, default=MODELS / "retinaface_mobilenet.onnx")
    ap.add_argument("--out", type=Path, default=MODELS / "retinaface_mobilenet_int8.onnx")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(args.src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(args.out), MosaicReader(args.train), quant_format=QuantFormat.QDQ, per_channel=True,
            op_types_to_quantize=["Conv"], activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
