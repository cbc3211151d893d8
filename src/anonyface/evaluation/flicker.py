"""Video measures that need no model: flicker inside the face regions, and how stable a
track's (fake) identity is given any face embedding. Used by `video_eval` and by
benchmarks/bench_video.py; the product's tracking (`anonyface.tracking`) does not need them."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

from ..geometry import expand_box

def _region_mask(shape: tuple[int, int], boxes: Iterable[Sequence[float]]) -> np.ndarray:
    h, w = shape
    m = np.zeros((h, w), bool)
    for b in boxes:
        x1, y1 = max(0, int(b[0])), max(0, int(b[1]))
        x2, y2 = min(w, int(math.ceil(b[2]))), min(h, int(math.ceil(b[3])))
        if x2 > x1 and y2 > y1:
            m[y1:y2, x1:x2] = True
    return m


class FlickerMeter:
    """Frame-to-frame change inside face regions of the output, relative to the
    original's: 1.0 means the anonymized faces change exactly as much as the
    real ones did, > 1 means the cover adds flicker.

    Feed it frame pairs in order: `add(original, output, boxes)` with the face
    boxes of that frame (ground truth, or the tracked boxes); boxes are
    grown by `grow` to take the whole covered area. Streaming: holds only the
    previous pair.
    """

    def __init__(self, grow: float = 1.3) -> None:
        self.grow = grow
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.sum_out = 0.0
        self.sum_in = 0.0
        self.pairs = 0

    def add(self, original: np.ndarray, output: np.ndarray, boxes: Iterable[Sequence[float]]) -> None:
        boxes = [expand_box(tuple(b), self.grow) for b in boxes]
        cur = (original.astype(np.int16), output.astype(np.int16))
        if self.prev is not None and boxes:
            m = _region_mask(original.shape[:2], boxes)
            if m.any():
                self.sum_in += float(np.abs(cur[0] - self.prev[0])[m].mean())
                self.sum_out += float(np.abs(cur[1] - self.prev[1])[m].mean())
                self.pairs += 1
        self.prev = cur

    def result(self) -> dict:
        return {
            "pairs": self.pairs,
            "input_change": self.sum_in / max(1, self.pairs),
            "output_change": self.sum_out / max(1, self.pairs),
            "flicker_ratio": (self.sum_out / self.sum_in) if self.sum_in > 0 else float("nan"),
        }


def identity_stability(
    crops_by_track: dict[int, list[np.ndarray]],
    embed: Callable[[np.ndarray], np.ndarray],
    same_threshold: float = 0.6,
) -> dict:
    """How stable each track's (fake) identity is through a video.

    `crops_by_track`: the output's face crops per track id, in frame order.
    `embed`: any face-embedding function (crop → vector), e.g. the evaluation
    harness's face recognizer. Returns, over all tracks, the mean cosine
    similarity of consecutive crops, the mean similarity to the track's mean
    embedding, and the share of consecutive pairs at or above
    `same_threshold` (the recognizer would call them the same person). For
    blur, pixelate and solid this is not meaningful (there is no identity).
    """
    consecutive, to_mean, same, n_pairs = [], [], 0, 0
    for crops in crops_by_track.values():
        if not crops:
            continue
        e = np.stack([np.asarray(embed(c), np.float64).ravel() for c in crops])
        e /= np.linalg.norm(e, axis=1, keepdims=True).clip(1e-12)
        mean = e.mean(axis=0)
        mean /= max(np.linalg.norm(mean), 1e-12)
        to_mean.extend((e @ mean).tolist())
        if len(e) > 1:
            sims = np.sum(e[1:] * e[:-1], axis=1)
            consecutive.extend(sims.tolist())
            same += int((sims >= same_threshold).sum())
            n_pairs += len(sims)
    return {
        "tracks": len(crops_by_track),
        "consecutive_similarity": float(np.mean(consecutive)) if consecutive else float("nan"),
        "similarity_to_track_mean": float(np.mean(to_mean)) if to_mean else float("nan"),
        "same_identity_rate": same / n_pairs if n_pairs else float("nan"),
    }
