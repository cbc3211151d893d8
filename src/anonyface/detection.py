"""Face detection: RetinaFace (MobileNet) through onnxruntime, multi-scale and tiled.

One pass at a fixed size misses the small faces of a large group photo, and a
pass at full resolution misses the very large ones (the model's anchors stop
near 400 px). So the image is looked at on a small pyramid of scales, three
apart; levels larger than a tile are cut into overlapping tiles, and the
detections of all passes are merged.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .geometry import Box, box_intersection
from .runtime import model_path as bundled_model
from .runtime import open_session

MODEL_FILE = "retinaface_mobilenet.onnx"

#: Default detection threshold, chosen by measurement on the evaluation photos
#: (benchmarks/threshold_sweep.py; numbers in docs/detection.md): the lowest
#: score at which almost nothing but faces is found. A missed face leaks an
#: identity, a false alarm only blurs a hand, so we err low.
DEFAULT_THRESHOLD = 0.3

#: The model itself returns nothing scoring below this (baked into its NMS).
MODEL_MIN_SCORE = 0.05

#: Images darker than this mean grey level are also searched brightened.
DARK_MEAN = 60.0
_BRIGHTEN = np.array([round(255.0 * (i / 255.0) ** 0.5) for i in range(256)], np.uint8)


@dataclass
class Face:
    """One detected face in image pixel coordinates.

    `landmarks` are five (x, y) points in the viewer's left-to-right order: the
    eye on the image's left, the eye on the image's right, the nose tip, the
    mouth corner on the image's left, the one on the image's right.
    """

    box: Box
    landmarks: np.ndarray = field(repr=False)
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }


def model_path() -> Path:
    return bundled_model(MODEL_FILE)


class FaceDetector:
    """Finds faces with box, five landmarks and score.

    `max_size` is the long side of the coarsest pass; `tile_size` the largest
    side run in one go (bigger levels are tiled with `overlap` pixels shared).
    `model` overrides the bundled model with a path.
    """

    #: The model was trained on faces from about 16 to 400 px; levels a factor
    #: 3 apart keep every face inside that range on some level.
    LEVEL_STEP = 3.0
    #: Largest face (level pixels) trusted on any but the coarsest level.
    MAX_FINE_FACE = 256

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        max_size: int = 640,
        tile_size: int = 2048,
        overlap: int = 192,
        model: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        brighten_dark: bool = True,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if threshold < MODEL_MIN_SCORE:
            warnings.warn(f"the detector returns no scores below {MODEL_MIN_SCORE}; threshold {threshold} acts as {MODEL_MIN_SCORE}")
        self.threshold = threshold
        self.brighten_dark = brighten_dark
        self.max_size = max_size
        self.tile_size = max(tile_size, max_size)
        self.overlap = overlap
        self.session = open_session(model or model_path(), threads, providers)
        self.input_name = self.session.get_inputs()[0].name

    # -- one forward pass -------------------------------------------------
    def _run(self, rgb: np.ndarray) -> np.ndarray:
        """Raw rows (x1, y1, x2, y2, 10 landmark coords, score) in `rgb`'s pixels."""
        h, w = rgb.shape[:2]
        ph, pw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        x = np.zeros((1, ph, pw, 3), np.float32)
        x[0, :h, :w] = rgb
        out = self.session.run(None, {self.input_name: x})[0]
        if out.size == 0:
            return np.zeros((0, 15), np.float32)
        out = np.asarray(out, np.float32).reshape(-1, out.shape[-1])
        rows = np.empty((len(out), 15), np.float32)
        rows[:, 0:14:2] = out[:, 0:14:2] * pw
        rows[:, 1:14:2] = out[:, 1:14:2] * ph
        rows[:, 14] = out[:, 15]
        return rows

    # -- the pyramid --------------------------------------------------------
    def scales(self, width: int, height: int, coarsest: int | None = None) -> list[float]:
        """Scales of the passes for an image of this size, coarsest first; `coarsest`
        overrides `max_size` (the long side of the coarsest pass)."""
        long = max(width, height)
        top = coarsest or self.max_size
        if long <= top:
            return [1.0]
        out = []
        s = top / long
        while s < 1.0 / math.sqrt(self.LEVEL_STEP):
            out.append(s)
            s *= self.LEVEL_STEP
        out.append(1.0)
        return out

    def _tiles(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        def starts(n: int) -> list[int]:
            if n <= self.tile_size:
                return [0]
            step = self.tile_size - self.overlap
            k = math.ceil((n - self.tile_size) / step)
            return [round(i * (n - self.tile_size) / k) for i in range(k + 1)]

        return [
            (x, y, min(width, x + self.tile_size), min(height, y + self.tile_size))
            for y in starts(height)
            for x in starts(width)
        ]

    def detect(self, image: np.ndarray, coarsest: int | None = None) -> list[Face]:
        """All faces with score ≥ threshold in an RGB uint8 image, best first.

        `coarsest`: long side of the coarsest pass instead of `max_size` (video passes
        the size of its reduced pass, so the two share a level; docs/speed.md).

        A dark image (mean grey level under `DARK_MEAN`: a dim room, an audience in
        the dark) is also looked at brightened (gamma 0.5) and the two looks merged:
        on interview.mp4's dark audience frames that finds 8–10 faces where the
        plain look finds 5 (docs/detection.md)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("detect() expects an RGB uint8 image of shape (H, W, 3)")
        found = self._rows(image, coarsest)
        if self.brighten_dark and float(image[::4, ::4].mean()) < DARK_MEAN:
            found += self._rows(_BRIGHTEN[image], coarsest)
        if not found:
            return []
        rows = merge_detections(np.concatenate(found))
        return [
            Face(tuple(float(v) for v in r[:4]), r[4:14].reshape(5, 2).copy(), float(r[14]))
            for r in rows
        ]

    def _rows(self, image: np.ndarray, coarsest: int | None = None) -> list[np.ndarray]:
        """Raw detections (image pixels) of every level and tile of the pyramid."""
        h, w = image.shape[:2]
        found: list[np.ndarray] = []
        scales = self.scales(w, h, coarsest)
        for s in scales:
            if s == 1.0:
                level = image
            else:
                size = (max(1, round(w * s)), max(1, round(h * s)))
                level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            lh, lw = level.shape[:2]
            sx, sy = w / lw, h / lh
            for x1, y1, x2, y2 in self._tiles(lw, lh):
                rows = self._run(level[y1:y2, x1:x2])
                rows = rows[rows[:, 14] >= self.threshold]
                if len(rows) == 0:
                    continue
                rows = _drop_cut_at_seams(rows, x1, y1, x2, y2, lw, lh)
                if s != scales[0]:
                    # Faces this big are seen whole on a coarser level; here the
                    # model only finds parts of them.
                    side = np.maximum(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
                    rows = rows[side <= self.MAX_FINE_FACE]
                rows[:, 0:14:2] = (rows[:, 0:14:2] + x1) * sx
                rows[:, 1:14:2] = (rows[:, 1:14:2] + y1) * sy
                found.append(rows)
        return found


def _drop_cut_at_seams(rows: np.ndarray, x1: int, y1: int, x2: int, y2: int, w: int, h: int) -> np.ndarray:
    """Drop boxes touching a tile edge that is inside the level: the neighbouring
    tile, which overlaps this one, sees those faces whole."""
    m = 2.0
    keep = np.ones(len(rows), bool)
    if x1 > 0:
        keep &= rows[:, 0] > m
    if y1 > 0:
        keep &= rows[:, 1] > m
    if x2 < w:
        keep &= rows[:, 2] < (x2 - x1) - m
    if y2 < h:
        keep &= rows[:, 3] < (y2 - y1) - m
    return rows[keep]


def merge_detections(rows: np.ndarray, iou: float = 0.4, containment: float = 0.75) -> np.ndarray:
    """Greedy NMS across passes: a box that overlaps a better one by IoU ≥ `iou`, or
    lies mostly inside it (or holds it), is the same face seen twice."""
    order = np.argsort(-rows[:, 14])
    rows = rows[order]
    areas = (rows[:, 2] - rows[:, 0]).clip(0) * (rows[:, 3] - rows[:, 1]).clip(0)
    keep: list[int] = []
    for i in range(len(rows)):
        dup = False
        for j in keep:
            inter = box_intersection(rows[i, :4], rows[j, :4])
            union = areas[i] + areas[j] - inter
            small = min(areas[i], areas[j])
            if (union > 0 and inter / union >= iou) or (small > 0 and inter / small >= containment):
                dup = True
                break
        if not dup:
            keep.append(i)
    return rows[keep]
