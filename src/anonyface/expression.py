"""A face's expression as five privacy-safe scalars: mouth opening, eye openness, smile, brow raise.

The generator is told *what the face is doing* (talking, blinking, smiling), never
*whose face it is*. MediaPipe's 468-point face mesh (ONNX, `models/face_mesh.onnx`)
runs on a roll-aligned 192×192 cut of each face, and its eye model (`models/eye_mesh.onnx`)
on a 64×64 cut of each eye; five ratios are computed from them,
each scale-free, and z-scored with constants measured on the training crops.
Only these five numbers leave this module: never the mesh, never pixels.

The same function serves a full photo at inference and the stored 128-px
training crops (their face box and landmarks are in crop pixels), so training
and inference see the same geometry. A face the meter cannot measure (too
small, no model, low mesh confidence, non-finite numbers) gets NEUTRAL, never
an error.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .runtime import model_path as bundled_model
from .runtime import open_session

if TYPE_CHECKING:
    from .detection import Face

MODEL_FILE = "face_mesh.onnx"
#: MediaPipe's eye refinement model, run on each eye the face mesh found.
EYE_MODEL_FILE = "eye_mesh.onnx"

EXPRESSION_NAMES = ("mouth_open", "left_eye_open", "right_eye_open", "smile", "brow_raise")
EXPRESSION_DIM = len(EXPRESSION_NAMES)
#: The normalised value of a typical (or unmeasurable) face.
NEUTRAL = np.zeros(EXPRESSION_DIM, np.float32)
#: Normalised values are clipped to ±CLIP standard deviations.
CLIP = 3.0
#: Index order of the values of a horizontally mirrored face (the eyes swap sides;
#: mouth, smile and brow are symmetric): apply with the landmark swap of a flip.
FLIP_PERM = (0, 2, 1, 3, 4)

#: Mean and standard deviation of the raw ratios (`ExpressionMeter.measure_raw`) over
#: the 34,480 of the 34,505 crops of the training split (data/faces, builder version 2,
#: 5 train shards) that the mesh accepted, measured on the stored 128-px crops with
#: `anonyface-train conditions data/faces --stats` (docs/expression.md).
RAW_MEAN = np.array([0.08637, 0.29574, 0.29493, 0.04146, 0.23708], np.float32)
RAW_STD = np.array([0.07657, 0.06405, 0.06400, 0.05306, 0.03945], np.float32)

#: The face mesh's input side and the least face box side it is run on (pixels).
INPUT_SIZE = 192
MIN_FACE = 24.0
#: The cut given to the mesh: this factor × the face box's longer side (MediaPipe cuts 1.5 ×
#: its own, slightly larger boxes; 1.4 puts the mesh at the same size), centred on the box,
#: turned so the eye landmarks lie level.
ROI_SCALE = 1.4
#: Least mesh "face present" probability for the numbers to be trusted (MediaPipe's 0.5).
MIN_CONFIDENCE = 0.5
#: The eye model's input side, and its cut: this factor × the eye's corner-to-corner
#: width, turned along the corner line (MediaPipe's iris ROI).
EYE_SIZE = 64
EYE_SCALE = 2.3

# Face mesh points (MediaPipe canonical face topology). "left" / "right" are the image's
# left and right, as for anonyface.detection.Face's landmarks (the subject's right eye
# is on the image's left).
_L_EYE_CORNERS = (33, 133)  # outer, inner: the eye model's cut runs from the first to the second
_R_EYE_CORNERS = (362, 263)  # inner, outer (mirrored before the eye model, as MediaPipe does)
_INNER_LIPS = ((13, 14), (82, 87), (312, 317))  # (upper, lower) inner lip, centre and beside it
_MOUTH_CORNERS = (61, 291)
_L_BROW = (46, 53, 52, 65, 55)  # lower edge of the brow over the image-left eye
_R_BROW = (276, 283, 282, 295, 285)
# Eye model contour points (of 71): 0..8 the lower lid from corner to corner, 9..15 the upper.
_EYE_CORNERS = (0, 8)
_EYE_LIDS = ((12, 4), (11, 3), (13, 5))  # (upper, lower): mesh points (159, 145), (160, 144), (158, 153)


def model_path() -> Path:
    return bundled_model(MODEL_FILE)


def _turn(centre: np.ndarray, angle: float, scale: float, size: int) -> np.ndarray:
    """2×3 affine map: rotate by −angle and scale about `centre`, which lands mid-square."""
    c, n = math.cos(angle) * scale, math.sin(angle) * scale
    half = size / 2
    cx, cy = centre
    return np.array([[c, n, half - c * cx - n * cy], [-n, c, half + n * cx - c * cy]], np.float64)


def roi_transform(face: "Face") -> np.ndarray | None:
    """2×3 affine map from image pixels to the face mesh's input, or None if the face is
    too small or its geometry is not finite.

    Centre: the box centre; side: ROI_SCALE × the box's longer side; rotation: the line
    through the two eye landmarks made level (so head roll does not change the numbers).
    """
    box = np.asarray(face.box, np.float64)
    lm = np.asarray(face.landmarks, np.float64).reshape(5, 2)
    if not (np.all(np.isfinite(box)) and np.all(np.isfinite(lm))):
        return None
    side = max(box[2] - box[0], box[3] - box[1])
    if side < MIN_FACE:
        return None
    dx, dy = lm[1] - lm[0]
    angle = math.atan2(dy, dx) if dx * dx + dy * dy > 0 else 0.0
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return _turn(centre, angle, INPUT_SIZE / (ROI_SCALE * side), INPUT_SIZE)


def eye_transforms(mesh: np.ndarray, m: np.ndarray) -> list[np.ndarray] | None:
    """The eye model's two cuts (image-left eye, image-right eye) as 2×3 maps from image
    pixels, from a face mesh in the face cut's pixels and that cut's map `m`."""
    inv = cv2.invertAffineTransform(m)
    out = []
    for a, b in (_L_EYE_CORNERS, _R_EYE_CORNERS):
        p, q = (inv[:, :2] @ mesh[i, :2] + inv[:, 2] for i in (a, b))
        width = float(np.hypot(*(q - p)))
        if not (np.isfinite(width) and width > 0):
            return None
        angle = math.atan2(q[1] - p[1], q[0] - p[0])
        out.append(_turn((p + q) / 2, angle, EYE_SIZE / (EYE_SCALE * width), EYE_SIZE))
    return out


def cut(image: np.ndarray, m: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A model input: float32 RGB in [0, 1], size², zero outside the image."""
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out.astype(np.float32) * (1.0 / 255.0)


def eye_openness(contour: np.ndarray) -> float:
    """Lid gap / corner-to-corner width of one eye model contour (its own level frame)."""
    p = np.asarray(contour, np.float64)[:, :2]
    gap = np.mean([p[lo, 1] - p[up, 1] for up, lo in _EYE_LIDS])
    return float(gap / np.hypot(*(p[_EYE_CORNERS[1]] - p[_EYE_CORNERS[0]])))


def ratios(mesh: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """The five raw, scale-free ratios (float64[5]).

    `mesh`: (468, ≥2) face mesh in any pixel frame, first turned so the eye centres lie
    level; `left_eye` / `right_eye`: the eye model's (71, ≥2) contours of the image-left
    and image-right eye. mouth_open: inner-lip gap / mouth width; eye openness: lid gap /
    eye width (each eye); smile: how far the mouth corners sit above the lip centre /
    inter-ocular distance; brow_raise: brow above the eye-corner line / inter-ocular
    distance (mean of both sides). y grows downwards.
    """
    p = np.asarray(mesh, np.float64)[:, :2]
    d = p[list(_R_EYE_CORNERS)].mean(axis=0) - p[list(_L_EYE_CORNERS)].mean(axis=0)
    iod = float(np.hypot(*d))
    if not iod > 0:
        return np.full(EXPRESSION_DIM, np.nan)
    c, s = d / iod
    p = p @ np.array([[c, -s], [s, c]])  # rotate by −angle: the eye line becomes level
    x, y = p[:, 0], p[:, 1]
    mouth_w = float(np.hypot(*(p[_MOUTH_CORNERS[1]] - p[_MOUTH_CORNERS[0]])))
    mouth_open = float(np.mean([y[lo] - y[up] for up, lo in _INNER_LIPS])) / mouth_w
    lip_centre = (y[_INNER_LIPS[0][0]] + y[_INNER_LIPS[0][1]]) / 2
    smile = (lip_centre - y[list(_MOUTH_CORNERS)].mean()) / iod
    brow_l = y[list(_L_EYE_CORNERS)].mean() - y[list(_L_BROW)].mean()
    brow_r = y[list(_R_EYE_CORNERS)].mean() - y[list(_R_BROW)].mean()
    brow = (brow_l + brow_r) / 2 / iod
    return np.array([mouth_open, eye_openness(left_eye), eye_openness(right_eye), smile, brow], np.float64)


def normalise(raw: np.ndarray) -> np.ndarray:
    """Raw ratios (…, 5) → z-scores clipped to ±CLIP; rows with any non-finite value → NEUTRAL."""
    raw = np.asarray(raw, np.float64)
    with np.errstate(all="ignore"):
        z = np.clip((raw - RAW_MEAN) / RAW_STD, -CLIP, CLIP).astype(np.float32)
    z[~np.all(np.isfinite(z), axis=-1)] = NEUTRAL
    return z


class ExpressionMeter:
    """Measures the five expression scalars of detected faces (see the module docstring).

    `model` overrides the bundled face mesh; the eye model is `eye_model`, by default
    EYE_MODEL_FILE in the same folder. `threads` is onnxruntime's intra-op thread count
    (None: all cores). If a model cannot be loaded, every face gets NEUTRAL.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 eye_model: str | os.PathLike | None = None):
        self.path = Path(model) if model is not None else model_path()
        self.eye_path = Path(eye_model) if eye_model is not None else self.path.with_name(EYE_MODEL_FILE)
        self.session = self.eye_session = None
        self.error: str | None = None
        try:
            self.session = open_session(self.path, threads)
            self.eye_session = open_session(self.eye_path, threads)
        except Exception as e:  # noqa: BLE001 - a missing or broken model: neutral conditions, never an error
            self.session = self.eye_session = None
            self.error = str(e)
            warnings.warn(f"expression model unavailable, faces get neutral expression: {self.error}",
                          RuntimeWarning, stacklevel=2)

    def _face_stage(self, pairs: list[tuple[np.ndarray, "Face"]]):
        """Face mesh of each measurable pair: [(pair index, cut map, mesh (468, 3))]."""
        idx, maps, cuts = [], [], []
        for i, (image, f) in enumerate(pairs):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                continue
            m = roi_transform(f)
            if m is not None:
                idx.append(i)
                maps.append(m)
                cuts.append(cut(image, m))
        if not cuts:
            return [], np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        x = np.stack(cuts)
        mesh, flag = self.session.run(None, {self.session.get_inputs()[0].name: x})
        mesh = np.asarray(mesh, np.float64).reshape(len(cuts), -1, 3)
        with np.errstate(all="ignore"):
            conf = 1.0 / (1.0 + np.exp(-np.asarray(flag, np.float64).reshape(len(cuts))))
        keep = [(i, m, mesh[k]) for k, (i, m) in enumerate(zip(idx, maps))
                if conf[k] >= MIN_CONFIDENCE and np.all(np.isfinite(mesh[k]))]
        return keep, x

    def _eye_cuts(self, pairs, found) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
        """Both eyes of each face with a mesh: [(pair index, mesh)], cuts (2 per face)."""
        faces, cuts = [], []
        for i, m, mesh in found:
            maps = eye_transforms(mesh, m)
            if maps is None:
                continue
            image = pairs[i][0]
            left = cut(image, maps[0], EYE_SIZE)
            right = cut(image, maps[1], EYE_SIZE)[:, ::-1]  # mirrored: the model knows left eyes
            faces.append((i, mesh))
            cuts += [left, np.ascontiguousarray(right)]
        x = np.stack(cuts) if cuts else np.zeros((0, EYE_SIZE, EYE_SIZE, 3), np.float32)
        return faces, x

    def cuts(self, image: np.ndarray, faces: list["Face"]) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs for `faces` (face cuts, eye cuts): for checking the converted models."""
        pairs = [(image, f) for f in faces]
        found, face_x = self._face_stage(pairs)
        return face_x, self._eye_cuts(pairs, found)[1]

    def measure_raw(self, image: np.ndarray, faces: list["Face"]) -> np.ndarray:
        """float64[len(faces), 5] raw ratios; NaN rows for faces that could not be measured."""
        return self.measure_raw_pairs([(image, f) for f in faces])

    def measure_raw_pairs(self, pairs: list[tuple[np.ndarray, "Face"]]) -> np.ndarray:
        """Raw ratios of (image, face) pairs, each model run once for all of them:
        float64[len(pairs), 5], NaN rows for faces that could not be measured (the
        training crops go through here in batches)."""
        raw = np.full((len(pairs), EXPRESSION_DIM), np.nan)
        if self.session is None or self.eye_session is None or not pairs:
            return raw
        try:
            found, _ = self._face_stage(pairs)
            faces, x = self._eye_cuts(pairs, found)
            if not faces:
                return raw
            eyes = self.eye_session.run(None, {self.eye_session.get_inputs()[0].name: x})
            contour = np.asarray(next(e for e in eyes if e.shape[-1] == 213), np.float64).reshape(-1, 71, 3)
        except Exception:  # noqa: BLE001 - a failed run must not uncover a face: NEUTRAL
            return raw
        with np.errstate(all="ignore"):
            for k, (i, mesh) in enumerate(faces):
                left, right = contour[2 * k], contour[2 * k + 1]
                if np.all(np.isfinite(left)) and np.all(np.isfinite(right)):
                    raw[i] = ratios(mesh, left, right)
        return raw

    def measure(self, image: np.ndarray, faces: list["Face"]) -> np.ndarray:
        """float32[len(faces), EXPRESSION_DIM]: normalised expression of each face
        (`image` RGB uint8 H×W×3; faces in its pixel coordinates). Unmeasurable → NEUTRAL."""
        if not faces:
            return np.zeros((0, EXPRESSION_DIM), np.float32)
        return normalise(self.measure_raw(image, faces))


_warned_missing = False


def expression_meter(threads: int | None = None) -> ExpressionMeter | None:
    """The meter with the bundled models, or None (and one warning per process) if a
    model file is absent, so callers can fall back to NEUTRAL."""
    global _warned_missing
    path = model_path()
    missing = [p for p in (path, path.with_name(EYE_MODEL_FILE)) if not p.is_file()]
    if missing:
        if not _warned_missing:
            _warned_missing = True
            warnings.warn(f"{', '.join(map(str, missing))} missing: faces get neutral expression",
                          RuntimeWarning, stacklevel=2)
        return None
    return ExpressionMeter(path, threads)
