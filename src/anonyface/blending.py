"""Putting a painted face into the photo without a seam, lit like the scene.

The painted face fills the erase area (an axis-aligned rectangle of image
pixels). It is joined to the photo in the gradient domain: the face keeps its
own detail (its gradients), and a smooth correction field, harmonic inside
the rectangle, takes every boundary pixel exactly to the photo just *outside*
it (Pérez et al. 2003, "Poisson image editing", in the membrane form of
Farbman et al. 2009). The field is solved in log intensity, per channel, so
the correction is a gain, as light is: a face painted bright and front-lit
comes out as dark, as tinted and with as little contrast as the scene around
it. A black-and-white photo gets a grey face.

Privacy: the only photo pixels read are the ones outside the rectangle (the
boundary row and the image's colourfulness); nothing inside it, so the
original face cannot leak into the result.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

#: Added before taking logs: keeps near-black pixels from giving huge gains.
LOG_EPS = 8.0
#: The scene's light, as a log-gain on the whole face: ×0.14 to ×7 (a face painted
#: bright in a dark room comes out dark).
MAX_LOG_GAIN = 2.0
#: What one part of the edge may add to that, as a log-gain: ×0.5 to ×2 (a black
#: beard at the chin must not black out the face).
LOCAL_LOG_GAIN = 0.7
#: Then colour, in grey levels: the scene's tint on the whole face, and the most one
#: part of the edge may add to it.
MAX_COLOUR_STEP = 60.0
LOCAL_COLOUR_STEP = 30.0
#: Depth (share of the rectangle's smaller side) of the band in which the part of an
#: edge's correction beyond the local clip is still applied, fading to nothing.
EDGE_BAND = 0.1


def _dst1(x: np.ndarray, axis: int) -> np.ndarray:
    """Type-I discrete sine transform along `axis` (unnormalised; applying it twice
    multiplies by (n + 1) / 2)."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    z = np.zeros(x.shape[:-1] + (1,), x.dtype)
    ext = np.concatenate([z, x, z, -x[..., ::-1]], axis=-1)
    y = -0.5 * np.fft.rfft(ext, axis=-1).imag[..., 1 : n + 1]
    return np.ascontiguousarray(np.moveaxis(y, -1, axis))


def harmonic_fill(top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The harmonic function (discrete Laplace equation, 4-neighbour) on an H×W grid
    whose boundary values — the rows just above and below, the columns just left and
    right of the grid — are given. Arrays are (W, C), (W, C), (H, C), (H, C); returns
    (H, W, C). Exact, by the sine transform."""
    h, w = left.shape[0], top.shape[0]
    c = top.shape[1]
    rhs = np.zeros((c, h, w), np.float64)
    rhs[:, 0] += top.T
    rhs[:, -1] += bottom.T
    rhs[:, :, 0] += left.T
    rhs[:, :, -1] += right.T
    ky = 2.0 * np.cos(np.pi * np.arange(1, h + 1) / (h + 1))
    kx = 2.0 * np.cos(np.pi * np.arange(1, w + 1) / (w + 1))
    eig = 4.0 - ky[:, None] - kx[None, :]
    spec = _dst1(_dst1(rhs, 2), 1) / eig
    return (_dst1(_dst1(spec, 2), 1) * (4.0 / ((h + 1) * (w + 1)))).transpose(1, 2, 0)


def smooth_fill(top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray,
                max_side: int = 40, band: int = 4) -> np.ndarray:
    """`harmonic_fill`, fast for large rectangles: solved exactly on a grid of at most
    `max_side` cells and scaled up (the harmonic field is smooth away from the edge),
    then what the coarse solve misses along each side — the fine detail of the boundary,
    which a harmonic field carries only a few pixels in anyway — is added back with a
    weight falling from 1 at the edge to 0 at `band` pixels."""
    h, w = left.shape[0], top.shape[0]
    if max(h, w) <= max_side:
        return harmonic_fill(top, bottom, left, right)
    s = max_side / max(h, w)
    ch, cw = max(2, round(h * s)), max(2, round(w * s))

    def shrink(v: np.ndarray, n: int) -> np.ndarray:
        return cv2.resize(v[None].astype(np.float32), (n, 1), interpolation=cv2.INTER_AREA)[0].reshape(n, -1).astype(np.float64)

    coarse = harmonic_fill(shrink(top, cw), shrink(bottom, cw), shrink(left, ch), shrink(right, ch))
    field = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1).astype(np.float64)
    residual = [top - field[0], bottom - field[-1], left - field[:, 0], right - field[:, -1]]
    for k, (rows, cols, along, weight) in enumerate(_edge_band(h, w, band)):
        field[rows, cols] += weight[:, None] * residual[k][along]
    return field


@functools.lru_cache(maxsize=64)
def _edge_band(h: int, w: int, band: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per side (top, bottom, left, right): the pixels within `band` of it that are nearest
    to it, their position along it, and the weight 1 − distance / band. Cached per size:
    video faces keep their size from frame to frame."""
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    dist = np.stack(np.broadcast_arrays(ys, h - 1 - ys, xs, w - 1 - xs))
    nearest, d = dist.argmin(axis=0), dist.min(axis=0)
    out = []
    for k in range(4):
        rows, cols = np.nonzero((nearest == k) & (d < band))
        along = cols if k < 2 else rows
        out.append((rows, cols, along, 1.0 - d[rows, cols] / band))
    return out


def _ring(image: np.ndarray, rect: tuple[int, int, int, int]) -> list[np.ndarray | None]:
    """The image rows / columns just outside `rect` (top, bottom, left, right), None where
    `rect` touches the image border."""
    x1, y1, x2, y2 = rect
    ih, iw = image.shape[:2]
    return [
        image[y1 - 1, x1:x2] if y1 > 0 else None,
        image[y2, x1:x2] if y2 < ih else None,
        image[y1:y2, x1 - 1] if x1 > 0 else None,
        image[y1:y2, x2] if x2 < iw else None,
    ]


def _edges(f: np.ndarray) -> list[np.ndarray]:
    """The face's own first / last row and column (top, bottom, left, right)."""
    return [f[0], f[-1], f[:, 0], f[:, -1]]


def _field(diffs: list[np.ndarray | None], shape: tuple[int, int], global_max: float, local_max: float) -> np.ndarray:
    """Harmonic field taking the face's edge to the photo's: per-side boundary
    differences, split into one robust global part (the median, clipped to
    ±`global_max`: the scene's light or tint) and a local rest (clipped to
    ±`local_max`: a dark beard or a red shirt at one edge must not tint the whole
    face). What the clip cuts off is still added in a thin band along the edge
    (`EDGE_BAND` of the rectangle, fading inwards), so the face meets the photo
    without a step even there. A side with no ring (image border) takes the global
    part alone."""
    h, w = shape
    known = np.concatenate([d.reshape(len(d), -1) for d in diffs if d is not None])
    dc = np.clip(np.median(known, axis=0), -global_max, global_max)
    c = dc.shape[0]
    full = [d.reshape(len(d), -1) - dc if d is not None else np.zeros((n, c)) for d, n in zip(diffs, (w, w, h, h))]
    clipped = [np.clip(d, -local_max, local_max) for d in full]
    field = dc + smooth_fill(*clipped)
    band = max(3, int(round(EDGE_BAND * min(h, w))))
    for k, (rows, cols, along, weight) in enumerate(_edge_band(h, w, band)):
        field[rows, cols] += weight[:, None] * (full[k] - clipped[k])[along]
    return field


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def blend_into(image: np.ndarray, face: np.ndarray, rect: tuple[int, int, int, int], saturation: float = 1.0) -> np.ndarray:
    """`face` (H×W×3, the painted rectangle `rect` = x1, y1, x2, y2 of `image`) corrected
    so that it meets the photo without a seam and under the photo's light; uint8 H×W×3.

    Two harmonic fields, both taken from the one-pixel ring just outside `rect` (the
    only image pixels read): first a gain on luminance (light is multiplicative),
    then an additive colour correction for what is left; each is a robust global
    part plus a clipped local rest (see `_field`). `saturation` in [0, 1] scales the face's
    colourfulness first (0: grey, for black-and-white photos).
    """
    ring = _ring(image, rect)
    f = face.astype(np.float64)
    if saturation < 1.0:
        grey = f.mean(axis=2, keepdims=True)
        f = grey + saturation * (f - grey)
    if all(r is None for r in ring):  # the face is the whole image: nothing to match
        return np.clip(f + 0.5, 0, 255).astype(np.uint8)
    shape = f.shape[:2]
    log_f = np.log(_luma(f) + LOG_EPS)[..., None]
    diffs = [None if r is None else np.log(_luma(r.astype(np.float64)) + LOG_EPS)[:, None] - e
             for r, e in zip(ring, _edges(log_f))]
    f = (f + LOG_EPS) * np.exp(_field(diffs, shape, MAX_LOG_GAIN, LOCAL_LOG_GAIN)) - LOG_EPS
    diffs = [None if r is None else r.astype(np.float64) - e for r, e in zip(ring, _edges(f))]
    f = f + _field(diffs, shape, MAX_COLOUR_STEP, LOCAL_COLOUR_STEP)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def colourfulness(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean distance of the pixels from grey (0 for a black-and-white photo)."""
    px = image.reshape(-1, 3) if mask is None else image[mask]
    if len(px) == 0:
        return 0.0
    px = px.astype(np.float32)
    return float(np.abs(px - px.mean(axis=1, keepdims=True)).mean())


#: A photo below this colourfulness (grey levels) is black-and-white (or sepia-
#: like): painted faces follow it. JPEG chroma noise keeps real B&W photos near 1.
GREY_PHOTO = 2.0
#: At or above this, the photo is a colour photo and faces keep their colour.
COLOUR_PHOTO = 6.0


def saturation_for(photo_colourfulness: float) -> float:
    """How much colour a painted face keeps in a photo this colourful (0 grey, 1 all)."""
    return float(np.clip((photo_colourfulness - GREY_PHOTO) / (COLOUR_PHOTO - GREY_PHOTO), 0.0, 1.0))
