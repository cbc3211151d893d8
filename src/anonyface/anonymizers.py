"""Classic covering methods: blur, pixelate, solid.

Each one replaces the pixels of a face `Region` in place. The core of the
region is fully replaced (alpha 1); only the feathered margin outside it is
mixed with the original, so a soft edge never lets a face pixel through.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import Region, blend, clip_box

METHODS = ("blur", "pixelate", "solid")


@dataclass(frozen=True)
class CoverSettings:
    """How to cover a face region.

    `blur_strength`: Gaussian sigma as a fraction of the face's size (0.125 of
    a 100 px face is a sigma of 12.5 px: eyes, nose and mouth merge into one
    smudge). `blocks`: mosaic cells across the face's longer side.
    `color`: RGB fill for `solid`.
    """

    method: str = "blur"
    blur_strength: float = 0.125
    blocks: int = 8
    color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown covering method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.blocks < 1:
            raise ValueError("blocks must be at least 1")
        if self.blur_strength <= 0:
            raise ValueError("blur_strength must be positive")


def cover(image: np.ndarray, region: Region, settings: CoverSettings) -> None:
    """Cover `region` of an RGB uint8 `image` in place with the chosen method."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = clip_box(region.bounds(), w, h)
    if x2 <= x1 or y2 <= y1:
        return
    alpha = region.alpha(x1, y1, x2, y2)
    if settings.method == "blur":
        patch = _blurred(image, region, settings.blur_strength, (x1, y1, x2, y2))
    elif settings.method == "pixelate":
        patch = _mosaic(image[y1:y2, x1:x2], region, settings.blocks)
    else:
        patch = np.empty((y2 - y1, x2 - x1, image.shape[2]), image.dtype)
        patch[...] = np.asarray(settings.color, image.dtype)[: image.shape[2]]
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
