"""Classic covering methods: blur, pixelate, solid.

Each one replaces the pixels of a face `Region` in place. The core of the
region is fully replaced (alpha 1); only the feathered margin outside it is
mixed with the original, so a soft edge never lets a face pixel through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .detection import Face
from .geometry import Region, blend, clip_box, face_region

METHODS = ("blur", "pixelate", "solid")

#: Limits past which a setting leaves faces recognisable; refused unless the caller
#: says it means it (`--unsafe`, `Anonymizer(unsafe=True)`). From the measurements in
#: docs/detection.md ("Cover strength"): dlib re-identification of covered faces.
FLOORS = {"mask_scale": 1.0, "blur_strength": 0.1, "blocks": 12, "feather": 1.0}
#: Above this detection threshold, faces every detector is sure of are missed
#: (docs/detection.md: recall of CenterFace's sure faces is 1.0 up to 0.7).
MAX_SAFE_THRESHOLD = 0.7


@dataclass(frozen=True)
class CoverSettings:
    """How faces are covered, for every method. The one home of these defaults:
    the command line, `anonyface live` and the Python API all read them from here.

    `mask_scale`: covered area relative to the detected face box (1.3 takes in
    forehead, chin and cheeks). `shape`: "ellipse" (turns with the eye line) or
    "box". `feather`: soft margin *outside* the covered area, as a fraction of
    its size. `blur_strength`: Gaussian sigma as a fraction of the face's size
    (0.2 of a 100 px face is a sigma of 20 px). `blocks`: mosaic cells across
    the face's longer side. Both defaults were chosen by measurement
    (benchmarks/cover_sweep.py, docs/detection.md "Cover strength"): dlib
    re-identifies 0.3 % of faces ≥ 60 px blurred at 0.2 (1.1 % at the old 0.125)
    and 0.8 % pixelated with 6 blocks (1.7 % with the old 8).
    `color`: RGB fill for `solid`. `synth_min_size` / `synth_min_score`: faces
    smaller (px) or less certain than this are pixelated / blurred instead of
    painted. `synth_expression`: carry the person's expression (mouth, eyes,
    smile, brows) into the new face — off by default, because dlib then
    re-identifies more painted faces (docs/expression.md). `synth_exact_landmarks`:
    give the generator the person's own five landmarks instead of a mean face's
    in the same pose (`geometry.pose_landmarks`) — unsafe, for the same reason.
    """

    mask_scale: float = 1.3
    shape: str = "ellipse"
    feather: float = 0.1
    blur_strength: float = 0.2
    blocks: int = 6
    color: tuple[int, int, int] = (0, 0, 0)
    synth_min_size: float = 0.0
    synth_min_score: float = 0.5
    synth_expression: bool = False
    synth_exact_landmarks: bool = False

    def __post_init__(self) -> None:
        for name in ("mask_scale", "feather", "blur_strength", "synth_min_size", "synth_min_score"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if self.shape not in ("ellipse", "box"):
            raise ValueError("shape must be 'ellipse' or 'box'")
        if not self.mask_scale > 0:
            raise ValueError("mask_scale must be positive")
        if self.blocks < 1:
            raise ValueError("blocks must be at least 1")
        if not self.blur_strength > 0:
            raise ValueError("blur_strength must be positive")
        object.__setattr__(self, "feather", max(0.0, self.feather))
        object.__setattr__(self, "color", tuple(self.color))

    def unsafe_choices(self, threshold: float | None = None) -> list[str]:
        """The settings (and detection `threshold`) that would leave faces recognisable
        (see `FLOORS`), in words; empty when every setting covers."""
        out = []
        if threshold is not None and threshold > MAX_SAFE_THRESHOLD:
            out.append(f"threshold {threshold:g} is above {MAX_SAFE_THRESHOLD:g}: sure faces would be left uncovered")
        if self.mask_scale < FLOORS["mask_scale"]:
            out.append(f"mask_scale {self.mask_scale:g} is below {FLOORS['mask_scale']:g}: the cover would not reach the whole face")
        if self.blur_strength < FLOORS["blur_strength"]:
            out.append(f"blur_strength {self.blur_strength:g} is below {FLOORS['blur_strength']:g}: blurred faces stay recognisable")
        if self.blocks > FLOORS["blocks"]:
            out.append(f"blocks {self.blocks} is above {FLOORS['blocks']}: pixelated faces stay recognisable")
        if self.synth_exact_landmarks:
            out.append("synth_exact_landmarks: the person's own landmark geometry lets face recognition "
                       "re-identify more painted faces")
        if self.feather > FLOORS["feather"]:
            out.append(f"feather {self.feather:g} is above {FLOORS['feather']:g}")
        return out

    def region(self, face: Face) -> Region:
        """The area covered for `face`."""
        return face_region(face.box, face.landmarks, self.mask_scale, self.shape, self.feather)


class ClassicCover:
    """blur / pixelate / solid as a covering strategy: `cover_faces(image, faces, identities)`,
    the same shape as the generator's `SynthCover`."""

    def __init__(self, method: str, settings: CoverSettings | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown covering method {method!r}; choose from {', '.join(METHODS)}")
        self.method = method
        self.settings = settings or CoverSettings()

    def cover_faces(self, image: np.ndarray, faces: list[Face], identities: list[int] | None = None) -> np.ndarray:
        """A copy of `image` with every face covered (`identities` is ignored: no face is painted)."""
        out = image.copy()
        for face in faces:
            cover(out, self.settings.region(face), self.method, self.settings)
        return out


def cover(image: np.ndarray, region: Region, method: str, settings: CoverSettings) -> None:
    """Cover `region` of an RGB uint8 `image` in place with `method`."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = clip_box(region.bounds(), w, h)
    if x2 <= x1 or y2 <= y1:
        return
    alpha = region.alpha(x1, y1, x2, y2)
    if method == "blur":
        patch = _blurred(image, region, settings.blur_strength, (x1, y1, x2, y2))
    elif method == "pixelate":
        patch = _mosaic(image[y1:y2, x1:x2], region, settings.blocks)
    elif method == "solid":
        patch = np.empty((y2 - y1, x2 - x1, image.shape[2]), image.dtype)
        patch[...] = np.asarray(settings.color, image.dtype)[: image.shape[2]]
    else:
        raise ValueError(f"unknown covering method {method!r}")
    blend(image, patch, alpha, x1, y1)


def face_size(region: Region) -> float:
    return float(region.axes[0] + region.axes[1])  # mean diameter of the core


def _blurred(image: np.ndarray, region: Region, strength: float, block: tuple[int, int, int, int]) -> np.ndarray:
    """Gaussian blur of `block` with sigma proportional to the face size.

    The blur reads a margin of 2 sigma around the block so the result does not
    depend on where the block was cut, and runs on a shrunken copy (sigma ≈ 2
    px there) so large faces cost no more than small ones.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = block
    sigma = max(1.0, strength * face_size(region))
    m = int(2 * sigma)
    ox1, oy1, ox2, oy2 = max(0, x1 - m), max(0, y1 - m), min(w, x2 + m), min(h, y2 + m)
    src = image[oy1:oy2, ox1:ox2]
    f = max(1.0, sigma / 2.0)
    sw, sh = max(1, round(src.shape[1] / f)), max(1, round(src.shape[0] / f))
    small = cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA)
    s_sigma = sigma / f
    small = cv2.GaussianBlur(small, (0, 0), s_sigma, borderType=cv2.BORDER_REFLECT)
    big = cv2.resize(small, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_LINEAR)
    # A second, full-size pass removes the blockiness the upscale leaves behind.
    big = cv2.GaussianBlur(big, (0, 0), max(1.0, f / 2), borderType=cv2.BORDER_REFLECT)
    return big[y1 - oy1 : y2 - oy1, x1 - ox1 : x2 - ox1]


def _mosaic(block: np.ndarray, region: Region, blocks: int) -> np.ndarray:
    """Mosaic whose cells are (longer face side / blocks) pixels wide."""
    cell = max(1.0, 2.0 * max(region.axes) / blocks)
    h, w = block.shape[:2]
    nw, nh = max(1, round(w / cell)), max(1, round(h / cell))
    small = cv2.resize(block, (nw, nh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
