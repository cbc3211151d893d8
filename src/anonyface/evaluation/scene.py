"""Does a covered face belong in its picture? Seam and lighting, measured at the erase box.

Both measures are taken where the generator repaints: the *erase box*, our
detection's face box grown by `geometry.ERASE_SCALE` (1.15×) about its centre,
in image pixels. They are computed for every method at the same boxes, so the
covering methods (whose ellipse reaches past the erase box) are a reference,
not a target. Faces narrower than `MIN_SCENE_PX` are left out: their bands
are a pixel or two wide.

Seam score
    synth pastes its face fully opaque inside the face box and fades it out
    to nothing at the erase box's border (a fade `k` px wide, k = the gap
    between the two boxes, 7.5 % of the face width, at least 2 px). The
    *seam energy* is the gradient energy across that border: the squared
    colour difference between neighbouring pixels in the direction
    perpendicular to the edge (averaged over R, G, B; grey levels²), averaged
    over the band from `k` px outside the erase box to `k` px inside the face
    box (the fade and a fade-width on either side), along the face box's
    span of each of the four edges that fit in the image with their band.
    A hard-pasted box puts a step on one line of that band and raises it; a
    smooth fade between contents that do not match (a smooth painted face
    against beard or hair) does not — it *lowers* it, as blur does: the score
    finds steps, not a change of texture, so read it with the face sheet.
    The *seam score* of a face is the output's seam energy over the
    original's at the same box, with `SEAM_FLOOR` added to both (so a face on a flat wall, whose original
    energy is ~0, does not divide by zero): 1 = as smooth across the border as
    the untouched photo, > 1 a step the photo did not have.

Lighting
    Three numbers of a region, on the 0–255 scale: *luminance* (mean ITU-R 601
    luma), *contrast* (standard deviation of luma) and *saturation* (mean HSV
    saturation, (max − min) / max × 255). The *face area* is our detection's
    face box (where the generator's paste is opaque); the *context ring* is the
    band between the erase box and the erase box grown by `RING_SCALE`, always
    taken from the **original** (it is the scene the face must belong to;
    the erase box itself is left out). For each face and number q:

      offset_real = q(face area, original) − q(ring, original)
      offset_out  = q(face area, output)   − q(ring, original)

    offset_real says how a real face sits in its scene (real faces are often
    brighter or more saturated than their background: that spread is the
    tolerance); the *lighting error* of a face is offset_out − offset_real
    (the new face against the scene, relative to where the real face was),
    and a face is *out of the real range* when its offset_out falls outside
    the 5th–95th percentile of offset_real over the same faces.
"""

from __future__ import annotations

import math

import numpy as np

from ..geometry import ERASE_SCALE, clip_box, expand_box

#: Faces narrower than this (px, our detection's box) get no seam or lighting numbers.
MIN_SCENE_PX = 24
#: Added to both seam energies (grey levels²): keeps flat surroundings from dividing by ~0.
SEAM_FLOOR = 4.0
#: The context ring runs from the erase box out to the erase box grown by this.
RING_SCALE = 1.5
LIGHTING_KEYS = ("luminance", "contrast", "saturation")


def erase_rect(face_box) -> tuple[float, float, float, float]:
    """The erase box in image coordinates: the face box grown by `ERASE_SCALE`."""
    return expand_box(tuple(float(v) for v in face_box), ERASE_SCALE)


def _edge_gradients(rgb: np.ndarray, face_box) -> list[np.ndarray]:
    """Squared colour differences between neighbouring pixels, perpendicular to each edge, over the
    band from `k` px outside the erase box to `k` px inside the face box (k = the gap between the
    boxes, at least 2 px), along the face box's span; one array per edge that fits in the image."""
    h, w = rgb.shape[:2]
    fx1, fy1, fx2, fy2 = (int(round(v)) for v in face_box)
    x1, y1, x2, y2 = (int(round(v)) for v in erase_rect(face_box))
    k = max(2, fx1 - x1)
    xa, xb = max(0, fx1), min(w, fx2)
    ya, yb = max(0, fy1), min(h, fy2)
    bands = []
    if xb > xa:
        if y1 - k >= 0 and fy1 + k < h:
            bands.append((rgb[y1 - k:fy1 + k + 1, xa:xb], 0))  # top
        if fy2 - k - 1 >= 0 and y2 + k <= h:
            bands.append((rgb[fy2 - k - 1:y2 + k, xa:xb], 0))  # bottom
    if yb > ya:
        if x1 - k >= 0 and fx1 + k < w:
            bands.append((rgb[ya:yb, x1 - k:fx1 + k + 1], 1))  # left
        if fx2 - k - 1 >= 0 and x2 + k <= w:
            bands.append((rgb[ya:yb, fx2 - k - 1:x2 + k], 1))  # right
    out = []
    for block, axis in bands:
        d = np.diff(block[..., :3].astype(np.float32), axis=axis)
        if d.size:
            out.append((d ** 2).mean(axis=-1).ravel())
    return out


def seam_energy(rgb: np.ndarray, face_box) -> float | None:
    """Gradient energy across the erase box's border (grey levels², mean over R, G, B); None when
    no edge lies inside the image with room for the band."""
    parts = _edge_gradients(rgb, face_box)
    if not parts:
        return None
    return float(np.concatenate(parts).mean())


def seam_score(original: np.ndarray, output: np.ndarray, face_box) -> float | None:
    """Seam energy of the output over the original's at the same erase box (1 = as smooth)."""
    e0 = seam_energy(original, face_box)
    e1 = seam_energy(output, face_box)
    if e0 is None or e1 is None:
        return None
    return (e1 + SEAM_FLOOR) / (e0 + SEAM_FLOOR)


def region_stats(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """Luminance, contrast and saturation (0–255) of the pixels of `rgb` where `mask` is set."""
    if mask.sum() < 4:
        return None
    px = rgb[..., :3][mask].astype(np.float32)  # (n, 3)
    luma = px @ np.array([0.299, 0.587, 0.114], np.float32)
    mx, mn = px.max(axis=1), px.min(axis=1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0) * 255.0
    return {"luminance": float(luma.mean()), "contrast": float(luma.std()), "saturation": float(sat.mean())}


def face_and_ring_masks(shape, face_box) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (image-sized) of the face area and of the context ring around the erase box."""
    h, w = shape[:2]
    face = np.zeros((h, w), bool)
    x1, y1, x2, y2 = clip_box(face_box, w, h)
    face[y1:y2, x1:x2] = True
    ring = np.zeros((h, w), bool)
    rx1, ry1, rx2, ry2 = clip_box(expand_box(erase_rect(face_box), RING_SCALE), w, h)
    ring[ry1:ry2, rx1:rx2] = True
    ex1, ey1, ex2, ey2 = clip_box(erase_rect(face_box), w, h)
    ring[ey1:ey2, ex1:ex2] = False
    return face, ring


def _window(shape, face_box):
    """A block of the image that holds the face, its erase box and its ring (to keep masks small)."""
    h, w = shape[:2]
    return clip_box(expand_box(erase_rect(face_box), RING_SCALE * 1.05), w, h)


class SceneFace:
    """One face's scene reference, computed once on the original: its box, the original's seam
    energy, and the lighting numbers of the face area and of the ring."""

    def __init__(self, original: np.ndarray, face_box) -> None:
        self.box = tuple(float(v) for v in face_box)
        self.seam_original = seam_energy(original, self.box)
        wx1, wy1, wx2, wy2 = _window(original.shape, self.box)
        self._win = (wx1, wy1, wx2, wy2)
        local = (self.box[0] - wx1, self.box[1] - wy1, self.box[2] - wx1, self.box[3] - wy1)
        block = original[wy1:wy2, wx1:wx2]
        self._face, ring = face_and_ring_masks(block.shape, local)
        self.ring = region_stats(block, ring)
        self.face_original = region_stats(block, self._face)

    def measure(self, output: np.ndarray) -> dict:
        """Seam score and lighting offsets of `output` at this face (JSON-ready)."""
        rec: dict = {}
        e1 = seam_energy(output, self.box)
        if self.seam_original is not None and e1 is not None:
            rec["seam"] = round((e1 + SEAM_FLOOR) / (self.seam_original + SEAM_FLOOR), 4)
        wx1, wy1, wx2, wy2 = self._win
        face_out = region_stats(output[wy1:wy2, wx1:wx2], self._face)
        if self.ring is not None and self.face_original is not None and face_out is not None:
            rec["lighting"] = {
                q: {"real": round(self.face_original[q] - self.ring[q], 2), "out": round(face_out[q] - self.ring[q], 2)}
                for q in LIGHTING_KEYS
            }
        return rec


def summarize_seam(scores: list[float]) -> dict:
    s = np.asarray([x for x in scores if x is not None and math.isfinite(x)], float)
    if not len(s):
        return {"faces": 0, "median": None, "mean": None, "p90": None, "over_1_5_pct": None}
    return {"faces": int(len(s)), "median": round(float(np.median(s)), 3), "mean": round(float(s.mean()), 3),
            "p90": round(float(np.percentile(s, 90)), 3), "over_1_5_pct": round(100.0 * float((s > 1.5).mean()), 2)}


def summarize_lighting(records: list[dict]) -> dict:
    """Per lighting number: mean offset of the output and of the real faces (signed: + brighter /
    more contrast / more saturated than the scene), mean |error| (offset_out − offset_real),
    the real faces' 5th–95th percentile range of offsets, and the share of output faces outside it."""
    out: dict = {"faces": len(records)}
    if not records:
        return out
    for q in LIGHTING_KEYS:
        real = np.array([r[q]["real"] for r in records], float)
        new = np.array([r[q]["out"] for r in records], float)
        lo, hi = np.percentile(real, [5, 95])
        out[q] = {
            "offset_out": round(float(new.mean()), 2), "offset_real": round(float(real.mean()), 2),
            "error": round(float(np.abs(new - real).mean()), 2),
            "real_range": [round(float(lo), 2), round(float(hi), 2)],
            "outside_pct": round(100.0 * float(((new < lo) | (new > hi)).mean()), 2),
        }
    return out
