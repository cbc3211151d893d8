"""Compact training shards: JPEG crops plus their geometry, one `.npz` per shard.

A shard holds a few thousand 128×128 face crops as concatenated JPEG bytes
(about 5 kB each), so a shard of ≤ 40 MB travels with a GPU leg. No pickles:
every field is a plain numpy array.

Fields (N crops):
  jpeg      uint8[total]   concatenated JPEG files of the RGB crops (padding is 0)
  offsets   int64[N+1]     crop i is jpeg[offsets[i]:offsets[i+1]]
  landmarks float32[N,5,2] five landmarks in crop pixels
  face_box  float32[N,4]   detected face box in crop pixels
  erase     int16[N,4]     erased area (x1, y1, x2, y2) in crop pixels
  valid     int16[N,4]     rectangle of crop pixels that came from the photo
  score     float32[N]     detection score
  source    str[N]         source file, relative to the data root
  identity  str[N]         person / identity key used for the split
  expression float32[N,5]  optional: the crop's expression conditions (anonyface.expression,
                           normalised; NEUTRAL rows where the mesh could not measure it).
                           Added by the builder, or to existing shards by
                           `anonyface-train conditions` (training/conditions.py).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..expression import EXPRESSION_DIM

FIELDS = ("landmarks", "face_box", "erase", "valid", "score", "source", "identity")
#: Fields a shard may lack (shards built before they existed); read as their neutral value.
OPTIONAL_FIELDS = ("expression",)


@dataclass
class FaceSet:
    """Decoded crops and their geometry, ready for training or evaluation."""

    images: np.ndarray  # uint8[N,H,W,3] RGB
    landmarks: np.ndarray
    face_box: np.ndarray
    erase: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    source: np.ndarray
    identity: np.ndarray
    #: float32[N, EXPRESSION_DIM] expression conditions; NEUTRAL (zeros) rows for crops of
    #: shards that have none (see `has_expression`).
    expression: np.ndarray | None = None
    #: False if any crop came from a shard without the `expression` field.
    has_expression: bool = False

    def __post_init__(self) -> None:
        if self.expression is None:
            self.expression = np.zeros((len(self.images), EXPRESSION_DIM), np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(erase mask, padding mask) as float32[N,H,W]: 1 = erased / 1 = padding."""
        n, h, w = self.images.shape[:3]
        erase = np.zeros((n, h, w), np.float32)
        pad = np.ones((n, h, w), np.float32)
        for i in range(n):
            x1, y1, x2, y2 = self.erase[i]
            erase[i, y1:y2, x1:x2] = 1
            x1, y1, x2, y2 = self.valid[i]
            pad[i, y1:y2, x1:x2] = 0
        return erase, pad


def write_shard(path: str | os.PathLike, images: list[np.ndarray], meta: dict[str, list], quality: int = 95) -> int:
    """Write one shard; returns its size in bytes. `meta` holds a list per field in FIELDS
    (and optionally `expression`, stored after `landmarks`)."""
    blobs = []
    for img in images:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        blobs.append(buf.ravel())
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    arrays = {
        "jpeg": np.concatenate(blobs) if blobs else np.zeros(0, np.uint8),
        "offsets": offsets,
        "landmarks": np.asarray(meta["landmarks"], np.float32).reshape(-1, 5, 2),
        **({"expression": expression_array(meta["expression"])} if meta.get("expression") is not None else {}),
        "face_box": np.asarray(meta["face_box"], np.float32).reshape(-1, 4),
        "erase": np.asarray(meta["erase"], np.int16).reshape(-1, 4),
        "valid": np.asarray(meta["valid"], np.int16).reshape(-1, 4),
        "score": np.asarray(meta["score"], np.float32),
        "source": np.asarray(meta["source"], dtype=str),
        "identity": np.asarray(meta["identity"], dtype=str),
    }
    for k, v in arrays.items():
        if k not in ("jpeg", "offsets") and len(v) != len(images):
            raise ValueError(f"field {k} has {len(v)} entries for {len(images)} images")
    path = Path(path)
    write_npz(path, arrays)
    return path.stat().st_size


def expression_array(rows) -> np.ndarray:
    """The `expression` field: float32[N, EXPRESSION_DIM]."""
    return np.asarray(rows, np.float32).reshape(-1, EXPRESSION_DIM)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An .npz written entry by entry with a fixed time stamp (equal content, equal bytes),
    through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def read_shards(paths: list[str | os.PathLike], limit: int | None = None) -> FaceSet:
    """Decode one or more shards into a FaceSet (all in memory: 34 k crops ≈ 1.7 GB)."""
    parts: dict[str, list] = {k: [] for k in ("images", *FIELDS, "expression")}
    has_expression = True
    n = 0
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            jpeg, offsets = z["jpeg"], z["offsets"]
            count = len(offsets) - 1
            if limit is not None:
                count = min(count, limit - n)
            imgs = [
                cv2.imdecode(jpeg[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)[..., ::-1] for i in range(count)
            ]
            parts["images"].append(np.stack(imgs) if imgs else np.zeros((0, 128, 128, 3), np.uint8))
            for k in FIELDS:
                parts[k].append(z[k][:count])
            if "expression" in z.files:
                parts["expression"].append(z["expression"][:count])
            else:
                has_expression = False
                parts["expression"].append(np.zeros((count, EXPRESSION_DIM), np.float32))
            n += count
        if limit is not None and n >= limit:
            break
    return FaceSet(**{k: np.concatenate(v) for k, v in parts.items()}, has_expression=has_expression and n > 0)
