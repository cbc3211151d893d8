"""Training data on the device: shards → `Data` (uint8 crops + geometry) → batches.

`load_split(dir, split)` decodes every `SPLIT-*.npz` shard of a folder (or an
explicit list of shard files); `Data` keeps a whole split on the device as
uint8 N×3×S×S, resized with area filtering to the training size, with the
erase boxes rounded outwards and the valid boxes inwards; `Data.batch` makes
(image in [−1, 1], erase mask, padding mask, landmarks in [0, 1], expression)
with optional flip + shift jitter (`augment.flip_jitter`) and exposure
(`augment.exposure`). Shards without
expression conditions (built before them) give neutral zeros and
`has_expression` False.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import torch
from torch.nn import functional as F

from .augment import EXPOSURE_GAIN, EXPOSURE_P, LOWRES_P, exposure, flip_jitter, low_resolution
from .model import EXPRESSION_DIM


class Data:
    """All crops of one split on the device as uint8, with geometry at the training size."""

    def __init__(self, faceset, size: int, device: torch.device):
        imgs = torch.from_numpy(np.ascontiguousarray(faceset.images)).permute(0, 3, 1, 2)  # N×3×H×W uint8
        src = imgs.shape[-1]
        f = size / src
        if size != src:
            out = []
            for i in range(0, len(imgs), 1024):
                x = imgs[i : i + 1024].float()
                x = F.interpolate(x, size=(size, size), mode="area")
                out.append(x.round().clamp(0, 255).to(torch.uint8))
            imgs = torch.cat(out) if out else imgs[:, :, :size, :size]
        self.images = imgs.contiguous().to(device)
        self.landmarks = torch.from_numpy(faceset.landmarks.astype(np.float32) * f).to(device)  # crop px
        self.face_box = np.asarray(faceset.face_box, np.float32) * f  # crop px (evaluation: expression)
        expr = getattr(faceset, "expression", None)
        self.has_expression = bool(getattr(faceset, "has_expression", expr is not None))
        if expr is None:
            expr = np.zeros((len(faceset.landmarks), EXPRESSION_DIM), np.float32)
        self.expression = torch.from_numpy(np.asarray(expr, np.float32)).to(device)
        er = faceset.erase.astype(np.float64) * f
        va = faceset.valid.astype(np.float64) * f
        # Erase area rounded outwards, valid area inwards: never less erased.
        erase = np.stack([np.floor(er[:, 0]), np.floor(er[:, 1]), np.ceil(er[:, 2]), np.ceil(er[:, 3])], 1)
        valid = np.stack([np.ceil(va[:, 0]), np.ceil(va[:, 1]), np.floor(va[:, 2]), np.floor(va[:, 3])], 1)
        self.erase = torch.from_numpy(np.clip(erase, 0, size).astype(np.int64)).to(device)
        self.valid = torch.from_numpy(np.clip(valid, 0, size).astype(np.int64)).to(device)
        self.source = np.asarray(faceset.source)
        self.size = size
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, gen: torch.Generator | None = None, augment: bool = False, jitter: float = 0.03,
              exposure_p: float = EXPOSURE_P, exposure_gain: float = EXPOSURE_GAIN, lowres_p: float = LOWRES_P):
        """(image [-1,1], erase, pad, landmarks [0,1], expression) for indices; optional flip + shift jitter."""
        idx = idx.to(self.device)
        img = self.images[idx].float()
        lm = self.landmarks[idx].clone()
        ex = self.expression[idx].clone()
        er = self.erase[idx].clone()
        va = self.valid[idx].clone()
        s = self.size
        if augment:
            img, lm, er, va, ex = flip_jitter(img, lm, er, va, s, gen, jitter, ex)
            if exposure_p > 0:
                img = exposure(img, gen, exposure_p, exposure_gain)
            img = low_resolution(img, gen, lowres_p)  # p = 0: untouched, no random numbers drawn
        erase = box_mask(er, s)
        pad = 1.0 - box_mask(va, s)
        image = img / 127.5 - 1.0
        return image, erase, pad, lm / s, ex


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """B×1×S×S float mask, 1 inside the integer boxes (x1, y1, x2, y2)."""
    r = torch.arange(size, device=boxes.device)
    mx = (r[None] >= boxes[:, 0:1]) & (r[None] < boxes[:, 2:3])  # B×S
    my = (r[None] >= boxes[:, 1:2]) & (r[None] < boxes[:, 3:4])
    return (my[:, :, None] & mx[:, None, :]).float()[:, None]


def shard_paths(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The split's shard files in a data folder, sorted (`train-000.npz` …)."""
    return sorted(glob.glob(os.path.join(str(data_dir), f"{split}-*.npz")))


def load_split(data_dir: str | os.PathLike, split: str, paths: list[str] | None = None):
    """(FaceSet, shard paths) of a split, or (None, []) when it has no shards.
    `paths` (a list of shard files) replaces the folder's own."""
    from .shards import read_shards

    paths = shard_paths(data_dir, split) if paths is None else list(paths)
    if not paths:
        return None, []
    return read_shards(paths), paths
