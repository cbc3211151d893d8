"""Test photos the suite makes itself from scikit-image's public-domain `astronaut`.

`group_photo` pastes the astronaut's head at several sizes and small rotations
onto a textured background, and returns where each face landed, so detection
and covering can be checked against known positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from anonyface.detection import Face

# The face box RetinaFace reports on the 512×512 astronaut (brows to chin).
ASTRONAUT_FACE = (177.0, 60.0, 270.0, 181.0)
# A head-and-shoulders cut around it, pasted into composites.
HEAD_CUT = (120, 10, 330, 250)


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@dataclass
class PlacedFace:
    box: tuple[float, float, float, float]  # the face box in the composite
    angle: float  # degrees

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, colourful texture with no faces in it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 220, size=(max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=bg.shape)
    return np.clip(bg + noise, 0, 255).astype(np.uint8)


def paste_head(canvas: np.ndarray, center: tuple[float, float], face_width: float, angle: float = 0.0) -> PlacedFace:
    """Paste the astronaut's head so that its face box is `face_width` px wide at `center`."""
    src = astronaut()
    x1, y1, x2, y2 = HEAD_CUT
    cut = src[y1:y2, x1:x2]
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    s = face_width / (fx2 - fx1)
    fcx, fcy = (fx1 + fx2) / 2 - x1, (fy1 + fy2) / 2 - y1
    # Similarity transform: scale + rotate about the face centre, then move to `center`.
    m = cv2.getRotationMatrix2D((fcx, fcy), angle, s)
    m[0, 2] += center[0] - fcx
    m[1, 2] += center[1] - fcy
    h, w = canvas.shape[:2]
    warped = cv2.warpAffine(cut, m, (w, h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full(cut.shape[:2], 255, np.uint8), m, (w, h))
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, face_width / 40))[..., None] / 255.0
    canvas[...] = np.clip(canvas * (1 - mask) + warped * mask, 0, 255).astype(np.uint8)
    # The face box's corners, rotated: take their bounding box.
    corners = np.array([[fx1 - x1, fy1 - y1], [fx2 - x1, fy1 - y1], [fx1 - x1, fy2 - y1], [fx2 - x1, fy2 - y1]])
    pts = corners @ m[:, :2].T + m[:, 2]
    if abs(angle) > 0:
        # For a rotated face, the detector's box hugs the face, not the rotated corners.
        cx, cy = center
        hw, hh = (fx2 - fx1) * s / 2, (fy2 - fy1) * s / 2
        return PlacedFace((cx - hw, cy - hh, cx + hw, cy + hh), angle)
    return PlacedFace((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()), angle)


def group_photo(
    sizes=(200, 120, 72, 48, 32, 24, 16), angles=(0, 10, -12, 0, 8, 0, 0), width: int = 1600, seed: int = 1
) -> tuple[np.ndarray, list[PlacedFace]]:
    """A composite with one face per size, laid out left to right in rows."""
    height = int(width * 0.6)
    img = background(width, height, seed)
    faces: list[PlacedFace] = []
    x, y, row_h = 40.0, 40.0, 0.0
    for size, angle in zip(sizes, angles):
        cell = size * 2.6
        if x + cell > width:
            x, y, row_h = 40.0, y + row_h + 20, 0.0
        center = (x + cell / 2, y + cell / 2)
        faces.append(paste_head(img, center, size, angle))
        x += cell + 20
        row_h = max(row_h, cell)
    if y + row_h > height:
        raise ValueError("faces do not fit; widen the photo")
    return img, faces


def matches(face_box, placed: PlacedFace, tol: float = 0.35) -> bool:
    """A detected box matches a placed face when their centres are close relative to its size."""
    cx, cy = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    px, py = placed.center
    return math.hypot(cx - px, cy - py) < tol * placed.width


# -- expressions made by warping a real face (tests/test_expression.py, benchmarks/expression_follow.py)

def _grid(image: np.ndarray):
    h, w = image.shape[:2]
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def open_mouth(image: np.ndarray, face: Face, amount: float) -> np.ndarray:
    """Pull everything below the lip line down by up to `amount` px, stretching the band just
    below it (where the lips meet), fading out sideways and further down."""
    lm = face.landmarks
    y0 = float(lm[3:5, 1].mean())
    cx, w = float(lm[3:5, 0].mean()), float(lm[4, 0] - lm[3, 0])
    xs, ys = _grid(image)
    band = 0.25 * w
    d = ys - y0
    shift = amount * np.clip(d / band, 0, 1)
    side = np.exp(-(((xs - cx) / (0.9 * w)) ** 4))
    below = np.where(d > 3 * band + amount, np.exp(-(((d - 3 * band - amount) / band) ** 2)), 1.0)
    return cv2.remap(image, xs, (ys - shift * side * below).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def squash_eye(image: np.ndarray, face: Face, k: int, factor: float = 5.0) -> np.ndarray:
    """Squeeze eye `k` (0 image-left, 1 image-right) vertically towards its centre line."""
    e = face.landmarks[k]
    iod = float(np.hypot(*(face.landmarks[1] - face.landmarks[0])))
    xs, ys = _grid(image)
    weight = np.exp(-(((xs - e[0]) / (0.35 * iod)) ** 4 + ((ys - e[1]) / (0.2 * iod)) ** 4))
    return cv2.remap(image, xs, (ys + (ys - e[1]) * (factor - 1) * weight).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
