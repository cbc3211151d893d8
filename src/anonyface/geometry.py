"""Geometry of face regions: boxes, masks, crops and pasting back.

Written once and shared by every anonymizer: the covering methods use the
region masks, the generator the square crops, `erase_area` and `from_crop`. All
coordinates are float pixels in the full image, boxes are (x1, y1, x2, y2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def box_size(box: Box) -> tuple[float, float]:
    return box[2] - box[0], box[3] - box[1]


def box_center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def expand_box(box: Box, scale: float, square: bool = False) -> Box:
    """Grow `box` about its centre by `scale` (1.0 = unchanged).

    With `square`, the longer side is used for both, as the generator's crops
    need a fixed aspect ratio.
    """
    cx, cy = box_center(box)
    w, h = box_size(box)
    if square:
        w = h = max(w, h)
    hw, hh = w * scale / 2, h * scale / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds of `box` inside an image, outward-rounded (may be empty)."""
    x1 = max(0, int(math.floor(box[0])))
    y1 = max(0, int(math.floor(box[1])))
    x2 = min(width, int(math.ceil(box[2])))
    y2 = min(height, int(math.ceil(box[3])))
    return x1, y1, max(x1, x2), max(y1, y2)


def box_intersection(a: Box, b: Box) -> float:
    """Area shared by two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def box_iou(a: Box, b: Box) -> float:
    inter = box_intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def roll_angle(landmarks: np.ndarray | None) -> float:
    """In-plane rotation of a face (radians) from its two eye landmarks; 0 if unknown."""
    if landmarks is None or len(landmarks) < 2:
        return 0.0
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    if lx > rx:  # order of eyes does not matter for the roll
        lx, ly, rx, ry = rx, ry, lx, ly
    angle = math.atan2(ry - ly, rx - lx)
    # A landmark fit that goes wrong should not tip the mask over; limit to ±45°.
    return float(np.clip(angle, -math.pi / 4, math.pi / 4))


@dataclass(frozen=True)
class Region:
    """The part of a face that gets covered: an ellipse or a box, possibly rotated.

    `center`, `axes` (half-width, half-height) and `angle` (radians) describe the
    fully covered core; `feather` (a fraction of the axes) is the soft margin
    added *outside* it, so feathering never uncovers any of the core.
    """

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float = 0.0
    shape: str = "ellipse"
    feather: float = 0.1

    def bounds(self) -> Box:
        """Axis-aligned box that holds the region including its feathered edge."""
        grow = 1.0 + self.feather
        a, b = self.axes[0] * grow, self.axes[1] * grow
        c, s = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        if self.shape == "ellipse":
            hw = math.sqrt((a * c) ** 2 + (b * s) ** 2)
            hh = math.sqrt((a * s) ** 2 + (b * c) ** 2)
        else:
            hw, hh = a * c + b * s, a * s + b * c
        cx, cy = self.center
        return cx - hw - 1, cy - hh - 1, cx + hw + 1, cy + hh + 1

    def alpha(self, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
        """Coverage in [0, 1] for the pixel block [y1:y2, x1:x2] (float32, 1 = covered)."""
        xs = np.arange(x1, x2, dtype=np.float32) + 0.5 - self.center[0]
        ys = np.arange(y1, y2, dtype=np.float32) + 0.5 - self.center[1]
        gx, gy = np.meshgrid(xs, ys)
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (gx * c + gy * s) / max(self.axes[0], 1e-6)
        v = (-gx * s + gy * c) / max(self.axes[1], 1e-6)
        if self.shape == "ellipse":
            d = np.sqrt(u * u + v * v)
        else:
            d = np.maximum(np.abs(u), np.abs(v))
        if self.feather <= 0:
            return (d <= 1.0).astype(np.float32)
        return np.clip((1.0 + self.feather - d) / self.feather, 0.0, 1.0).astype(np.float32)


#: Five landmarks (eye centres, nose tip, mouth corners) of a mean face, the
#: common 112-px alignment template, with depths (eyes half an inter-ocular
#: distance behind the nose tip, mouth corners 0.4): `pose_landmarks` poses it.
_MEAN_FACE_2D = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                          [41.5493, 92.3655], [70.7299, 92.2041]])
_IPD = _MEAN_FACE_2D[1, 0] - _MEAN_FACE_2D[0, 0]
MEAN_FACE_3D = np.c_[_MEAN_FACE_2D, [-0.5 * _IPD, -0.5 * _IPD, 0.0, -0.4 * _IPD, -0.4 * _IPD]]
MEAN_FACE_3D = MEAN_FACE_3D - MEAN_FACE_3D.mean(0)


#: `pose_landmarks` rounds the head's yaw and pitch to this step (degrees): a
#: near-frontal face is painted frontal, a turned one turned, and the small
#: angles a person's own face shape fakes (a long face reads as pitch, an
#: asymmetric one as yaw) do not reach the generator.
POSE_STEP_DEG = 15.0


def _rot(roll: float, yaw: float, pitch: float) -> np.ndarray:
    cz, sz, cy, sy, cx, sx = np.cos(roll), np.sin(roll), np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def _similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`src` (N×2) moved onto `dst` by the least-squares similarity (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d0.T @ s0)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = u @ np.diag([1.0, d]) @ vt
    scale = (sv * [1.0, d]).sum() / (s0 ** 2).sum()
    return scale * s0 @ r.T + md


def pose_landmarks(landmarks: np.ndarray, step_deg: float = POSE_STEP_DEG) -> np.ndarray:
    """The five landmarks of a *mean* face in the head pose of `landmarks` (5×2):
    its position, size and roll, and its yaw and pitch rounded to `step_deg`.
    This is what the generator is given instead of the person's own landmarks,
    whose geometry — eye distance against mouth width, face length, nose
    position — face recognition re-identifies (docs/generator.md, "What the
    generator is told"). Yaw and pitch come from a weak-perspective fit of the
    3-D mean face (the least-squares affine camera, projected to the nearest
    scaled rotation); the mean face turned by the rounded angles is then placed
    on the landmarks by a similarity (position, size, roll)."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    m, *_ = np.linalg.lstsq(MEAN_FACE_3D, lm - lm.mean(0), rcond=None)  # 3×2
    u, _, vt = np.linalg.svd(m.T, full_matrices=False)
    r2 = u @ vt  # 2×3, orthonormal rows
    r = np.vstack([r2, np.cross(r2[0], r2[1])])
    yaw = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    if step_deg > 0:
        step = np.radians(step_deg)
        yaw, pitch = np.round(yaw / step) * step, np.round(pitch / step) * step
    turned = MEAN_FACE_3D @ _rot(0.0, yaw, pitch)[:2].T
    return _similarity_fit(turned, lm).astype(np.float32)


def face_region(box: Box, landmarks: np.ndarray | None, mask_scale: float, shape: str, feather: float) -> Region:
    """The region to cover for one detected face.

    RetinaFace boxes run from the brows to the chin; a `mask_scale` of 1.3
    (`CoverSettings`' default) grows that to take in forehead, chin and cheeks. The ellipse follows the roll of
    the eye line, so tilted heads stay covered.
    """
    w, h = box_size(box)
    cx, cy = box_center(box)
    angle = roll_angle(landmarks) if shape == "ellipse" else 0.0
    # Shift slightly upwards: detector boxes are tight on the forehead.
    cy -= 0.04 * h
    return Region((cx, cy), (w * mask_scale / 2, h * mask_scale / 2), angle, shape, feather)


def blend(image: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x1: int, y1: int) -> None:
    """Alpha-blend `patch` (same channels as image) into `image` at (x1, y1), in place."""
    h, w = alpha.shape
    roi = image[y1 : y1 + h, x1 : x1 + w]
    if roi.shape[:2] != (h, w):
        raise ValueError("patch lies outside the image")
    a = alpha[..., None] if roi.ndim == 3 else alpha
    full = alpha >= 1.0
    mixed = roi.astype(np.float32) * (1.0 - a) + patch.astype(np.float32) * a
    out = np.clip(np.rint(mixed), 0, 255).astype(image.dtype)
    # Covered pixels take the patch exactly: rounding must not let any through.
    out[full] = patch[full]
    roi[...] = out


@dataclass(frozen=True)
class Crop:
    """A square crop around a face, resampled to size×size, and how it maps back.

    `box` is the crop's square in image coordinates (it may run past the image
    borders); `valid` marks the crop pixels that came from the image, the rest
    is padding.
    """

    pixels: np.ndarray
    valid: np.ndarray
    box: Box
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return self.size / (self.box[2] - self.box[0])

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates → crop pixel coordinates."""
        return (np.asarray(points, np.float32) - np.array(self.box[:2], np.float32)) * self.scale

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates → image coordinates."""
        return np.asarray(points, np.float32) / self.scale + np.array(self.box[:2], np.float32)


def crop_face(image: np.ndarray, box: Box, size: int, grow: float | None = None, pad_value: int = 0) -> Crop:
    """Square crop of side `grow`×(longer side of `box`) around the face, resized to `size`.

    Used identically by the dataset builder and at inference, so the generator
    sees the same framing in both. Parts outside the image are filled with
    `pad_value` and marked in `valid`.
    """
    sq = expand_box(box, CROP_GROW if grow is None else grow, square=True)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = clip_box((sq[0] - 1, sq[1] - 1, sq[2] + 1, sq[3] + 1), w, h)
    s = size / (sq[2] - sq[0])
    if x2 <= x1 or y2 <= y1:
        shape = (size, size) + image.shape[2:]
        return Crop(np.full(shape, pad_value, image.dtype), np.zeros((size, size), bool), sq, size)
    sub = image[y1:y2, x1:x2]
    tx, ty = (x1 - sq[0]) * s, (y1 - sq[1]) * s
    ones = np.full(sub.shape[:2], 255, np.uint8)
    if s < 1:
        # warpAffine has no area filter: shrink the block first, then warp.
        nw, nh = max(1, round(sub.shape[1] * s)), max(1, round(sub.shape[0] * s))
        fx, fy = nw / sub.shape[1], nh / sub.shape[0]
        sub = cv2.resize(sub, (nw, nh), interpolation=cv2.INTER_AREA)
        ones = cv2.resize(ones, (nw, nh), interpolation=cv2.INTER_AREA)
        m = _pixel_affine(s / fx, s / fy, tx, ty)
    else:
        m = _pixel_affine(s, s, tx, ty)
    pixels = cv2.warpAffine(
        sub, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(pad_value,) * 4,
    )
    valid = cv2.warpAffine(ones, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0) > 127
    return Crop(pixels, valid, sq, size)


def _pixel_affine(ax: float, ay: float, tx: float, ty: float) -> np.ndarray:
    """Affine matrix for OpenCV's pixel-index convention from a continuous-coordinate
    map x' = a·x + t (pixel centres at +0.5)."""
    return np.array([[ax, 0, tx + 0.5 * ax - 0.5], [0, ay, ty + 0.5 * ay - 0.5]], np.float32)


def from_crop(patch: np.ndarray, crop: Crop, rect: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of the image rectangle `rect` (x1, y1, x2, y2) resampled from a crop-sized
    `patch`: area-filtered when the crop is larger than its place in the image (a tiny
    face painted at the model's size is scaled down without aliasing), bilinear otherwise."""
    x1, y1, x2, y2 = rect
    s = crop.scale
    src, sx, sy = patch, s, s
    if s > 1.5:  # shrink first: warpAffine has no area filter
        n = max(1, round(crop.size / s))
        src = cv2.resize(patch, (n, n), interpolation=cv2.INTER_AREA)
        sx = sy = n / (crop.box[2] - crop.box[0])
    # Crop pixel → pixel of the target block [y1:y2, x1:x2].
    m = _pixel_affine(1.0 / sx, 1.0 / sy, crop.box[0] - x1, crop.box[1] - y1)
    return cv2.warpAffine(src, m, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def erase_area(face_box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Image pixels (x1, y1, x2, y2) that are erased before the generator runs and
    repainted after: the face box × ERASE_SCALE, rounded outwards, inside the image."""
    return clip_box(expand_box(face_box, ERASE_SCALE), width, height)


# -- the generator's framing: shared by the dataset builder, training and inference --

#: Generator crops are `GEN_SIZE` px squares of side `CROP_GROW` × the face box's longer side.
GEN_SIZE = 128
CROP_GROW = 1.6
#: The erased (and later repainted) area: the face box grown by this factor.
ERASE_SCALE = 1.15


def erase_box(crop: Crop, face_box: Box) -> tuple[int, int, int, int]:
    """Pixel bounds, in crop coordinates, of the area the generator must repaint.

    Everything inside is erased before the generator sees the crop (it never
    sees a face pixel); only this area is pasted back.
    """
    b = expand_box(face_box, ERASE_SCALE)
    p = crop.to_crop(np.array([[b[0], b[1]], [b[2], b[3]]]))
    x1, y1 = np.floor(p[0]).astype(int)
    x2, y2 = np.ceil(p[1]).astype(int)
    n = crop.size
    return max(0, int(x1)), max(0, int(y1)), min(n, int(x2)), min(n, int(y2))
