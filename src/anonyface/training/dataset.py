"""Data set builder: face photos → 128×128 generator crops in compact shards.

    anonyface-train dataset SRC OUT [--val-fraction F] [--limit N] [--shard-mb MB]
                                    [--threshold T] [--min-face PX] [--min-valid F]

For every photo under SRC (sorted, then put in a seeded order so every shard
mixes all subsets), the project's own detector looks for faces on the photo
padded by a constant grey border of 25 % (these photos are so tight that faces
run past their edges; without the border the detector clips the box at the
edge). One well-detected face is kept per photo, cropped with the inference
path's own framing (`geometry.crop_face(image, box, GEN_SIZE, CROP_GROW)`), and
written with its landmarks, face box, erase box and valid (non-padding)
rectangle, all in crop pixels, to `train-NNN.npz` / `val-NNN.npz` shards
(`shards.write_shard`), plus `manifest.json` and `dropped.tsv`.

A photo is dropped, for the first of these reasons that applies:

  unreadable         the file does not decode as an image
  no_face            no detection with score ≥ 0.5
  low_score          faces found, but none reaches `threshold`
  no_central_face    no face ≥ threshold has its centre in the middle 60 % of the photo
  small_face         the chosen face's longer side is below `min_face` photo pixels
  ambiguous          a second central face ≥ threshold is at least 0.7× the chosen
                     face's size (collages, two people side by side): which is the subject?
  landmarks_outside  a landmark lies outside the crop
  mostly_padding     less than `min_valid` of the crop's pixels come from the photo

Context subsets (`webfaces/`: whole web photos, several faces each, listed
with eyes / nose / mouth in `landmarks.txt`) give a crop for every listed face
that a detection ≥ threshold matches (drop reasons per face: not_found,
low_score, small_face, landmarks_outside, mostly_padding); their source is
`webfaces/NAME.jpg#K`. A held-out share of those photos (all faces of a photo
on one side) goes to a separate `webval-NNN.npz` series, to judge seams and
lighting on real surroundings; `val` keeps only the other subsets, in the
order builder version 1 gave them.

The validation split is by identity (LFW: the person; every other photo is its
own identity), by a stable hash, so a person never lands on both sides.
Detections are cached per photo (`detections.jsonl`, keyed by content), so a
rebuild with other rules runs no detector. Same input and arguments →
byte-identical output, with or without the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..detection import Face, FaceDetector, model_path
from ..expression import ExpressionMeter, expression_meter
from ..geometry import CROP_GROW, GEN_SIZE, Box, crop_face, erase_box
from .shards import write_shard

#: Bump when the builder's output for the same input changes.
#: 2: context subsets (webfaces/) give every listed face of a photo, in their own
#:    validation split `webval`; the other subsets' order and crops are unchanged.
#: 3: every crop's expression conditions (`expression`, docs/expression.md); crops and
#:    order unchanged, shards cut a little earlier (the new field's bytes).
BUILDER_VERSION = 3

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

#: Detection runs on the photo padded by this fraction of its size on every side,
#: with a constant grey; measured against no / reflected / replicated padding in
#: docs/dataset.md.
DETECT_PAD = 0.25
DETECT_PAD_VALUE = 127

#: Detections below this score do not count as faces at all (drop reason `no_face`).
FACE_FLOOR = 0.5

DEFAULT_MIN_SCORE = 0.9
DEFAULT_MIN_FACE = 64
DEFAULT_MIN_VALID = 0.25
DEFAULT_VAL_FRACTION = 0.05
#: Share of context photos (all their faces) held out as the `webval` split.
DEFAULT_CONTEXT_VAL_FRACTION = 0.1

#: Subsets of whole photos (several faces each, real surroundings) whose
#: `landmarks.txt` lists the faces: every usable listed face becomes a crop.
CONTEXT_SUBSETS = ("webfaces",)
GT_FILE = "landmarks.txt"
#: A detection matches a listed face when its eye centre is within this
#: fraction of the listed inter-ocular distance and its own inter-ocular
#: distance is within a factor of GT_MATCH_SCALE of the listed one.
GT_MATCH_DIST = 0.5
GT_MATCH_SCALE = 2.0
DEFAULT_SHARD_MB = 38.0
#: The detection cache's file name in the output folder (see `DetectionCache`).
DET_CACHE_NAME = "detections.jsonl"

#: A face is "central" when its centre is within this fraction of the photo's
#: size from the photo's centre, on both axes.
CENTRAL = 0.3
#: A second central face at least this fraction of the chosen one's size makes the photo ambiguous.
SIMILAR_SIZE = 0.7

JPEG_QUALITY = 95  # what write_shard uses; needed to size shards exactly
#: A fixed time stamp for the shards' zip entries (np.savez stamps the wall clock).

#: Shard series: training, validation (by identity, the other subsets), and the
#: held-out context photos (all faces of a photo on one side).
SPLITS = ("train", "val", "webval")

DROP_REASONS = (
    "unreadable",
    "no_face",
    "low_score",
    "no_central_face",
    "small_face",
    "ambiguous",
    "landmarks_outside",
    "mostly_padding",
    "not_found",  # context subsets: a listed face no detection matches
)

_LFW_NAME = re.compile(r"^(?P<person>.+)_(?P<num>\d{4})\.[A-Za-z]+$")


# -- file names: subsets, identities, the split -------------------------------------

def list_photos(src: Path) -> list[str]:
    """Image files under `src` as sorted POSIX paths relative to it."""
    src = Path(src)
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in filenames:
            if Path(name).suffix.lower() in IMAGE_EXTS and not name.startswith("."):
                out.append((Path(dirpath) / name).relative_to(src).as_posix())
    return sorted(out)


def subset_of(source: str) -> str:
    """The top-level folder of a source path ('' for a file directly in the root)."""
    parts = source.split("/")
    return parts[0] if len(parts) > 1 else ""


def identity_of(source: str) -> str:
    """The identity key used for the split.

    In an `lfw/` folder, `Person_Name_NNNN.jpg` → `lfw/Person_Name` (all photos
    of one person share it). Everywhere else (UTKFace, humans/, …) the file
    names carry no identity, so each photo is its own: its source path.
    """
    if subset_of(source).lower() == "lfw":
        m = _LFW_NAME.match(source.rsplit("/", 1)[-1])
        if m:
            return source.rsplit("/", 1)[0] + "/" + m["person"]
    return source


def split_of(identity: str, val_fraction: float, seed: int = 0) -> str:
    """'val' or 'train' from a stable hash of the identity (not Python's salted hash())."""
    digest = hashlib.sha1(f"{seed}:{identity}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


def utk_attributes(source: str) -> dict | None:
    """Age, gender (0 male, 1 female) and race (0–4, None if missing) from a UTKFace
    name `AGE_GENDER_RACE_DATE.jpg.chip.jpg`; None for other files."""
    name = source.rsplit("/", 1)[-1]
    parts = name.split(".")[0].split("_")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        return None
    race = int(parts[2]) if len(parts) == 4 else None
    return {"age": int(parts[0]), "gender": int(parts[1]), "race": race}


def read_ground_truth(path: Path) -> dict[str, list[np.ndarray]]:
    """`landmarks.txt` of a context subset: file name → listed faces, each float32[4, 2]
    (eye on the image's left, eye on the right, nose, mouth centre)."""
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            pts = np.asarray([float(v) for v in parts[1:9]], np.float32).reshape(4, 2)
            if pts[0, 0] > pts[1, 0]:  # make the first eye the one on the image's left
                pts[[0, 1]] = pts[[1, 0]]
            out[parts[0]].append(pts)
    return dict(out)


def _iod(eyes: np.ndarray) -> float:
    return float(np.hypot(*(eyes[1] - eyes[0])))


def match_listed(faces: list[Face], listed: list[np.ndarray]) -> list[Face | None]:
    """For each listed face, the detection whose eyes match it (None if none does);
    greedy by distance, each detection used once."""
    pairs = []
    for i, gt in enumerate(listed):
        g_iod = max(_iod(gt[:2]), 1.0)
        g_eye = gt[:2].mean(0)
        for j, f in enumerate(faces):
            lm = np.asarray(f.landmarks, np.float32)
            d = float(np.hypot(*(lm[:2].mean(0) - g_eye))) / g_iod
            ratio = max(_iod(lm[:2]), 1e-3) / g_iod
            if d < GT_MATCH_DIST and 1 / GT_MATCH_SCALE <= ratio <= GT_MATCH_SCALE:
                pairs.append((d, i, j))
    out: list[Face | None] = [None] * len(listed)
    used: set[int] = set()
    for d, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = faces[j]
            used.add(j)
    return out


def context_faces(
    faces: list[Face], listed: list[np.ndarray], threshold: float, min_face: float
) -> list[tuple[Face | None, str]]:
    """Every listed face of a context photo as (face, "kept") or (None / face, drop reason).

    Listed faces only: the unlisted ones are mostly small background faces, and
    a face the annotators left out is not checked by anyone."""
    out = []
    for face in match_listed(faces, listed):
        if face is None:
            out.append((None, "not_found"))
        elif face.score < threshold:
            out.append((None, "low_score"))
        elif _side(face.box) < min_face:
            out.append((None, "small_face"))
        else:
            out.append((face, "kept"))
    return out


def photo_order(files: list[str], seed: int) -> list[str]:
    """The seeded order of the photos: the other subsets exactly as builder
    version 1 ordered them, with the context photos (in their own seeded order)
    spread evenly between them."""
    ctx = [f for f in files if subset_of(f) in CONTEXT_SUBSETS]
    main = [f for f in files if subset_of(f) not in CONTEXT_SUBSETS]
    main = [main[i] for i in np.random.default_rng(seed).permutation(len(main))]
    ctx = [ctx[i] for i in np.random.default_rng([seed, 1]).permutation(len(ctx))]
    out, j = [], 0
    for i, f in enumerate(main):
        out.append(f)
        while j < len(ctx) and (j + 1) * len(main) <= (i + 1) * len(ctx):
            out.append(ctx[j])
            j += 1
    return out + ctx[j:]


# -- one photo ------------------------------------------------------------------------

def load_rgb(path: Path | None = None, data: np.ndarray | None = None) -> np.ndarray | None:
    if data is None:
        data = np.fromfile(str(path), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None or bgr.size == 0:
        return None
    return np.ascontiguousarray(bgr[..., ::-1])


def detect_padded(detector: FaceDetector, image: np.ndarray, pad: float = DETECT_PAD) -> list[Face]:
    """Detect on the photo with a constant border of `pad`×its size; coordinates of the photo."""
    if pad <= 0:
        return detector.detect(image)
    h, w = image.shape[:2]
    px, py = round(w * pad), round(h * pad)
    big = cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_CONSTANT, value=(DETECT_PAD_VALUE,) * 3)
    faces = detector.detect(big)
    off = np.array([px, py], np.float32)
    return [
        Face((f.box[0] - px, f.box[1] - py, f.box[2] - px, f.box[3] - py), f.landmarks - off, f.score)
        for f in faces
    ]


class DetectionCache:
    """Detections per photo, kept in a JSON-lines file so a rebuild (other selection
    rules, more subsets) does not run the detector again on photos it has seen.

    A photo's entry is keyed by its source path, size and sha1, so a changed file
    is detected again. The first line records what the detections depend on
    (detector model, padding, score floor); a file made under other settings is
    ignored and rewritten. Values round-trip exactly (box and score as Python
    floats, landmarks as float32 written through float64), so a build from the
    cache is byte-identical to one that detects.
    """

    def __init__(self, path: Path | None, key: dict):
        self.path, self.key = (Path(path) if path else None), key
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        self._file = None
        if self.path is None:
            return
        fresh = True
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            try:
                if lines and json.loads(lines[0]) == {"detection_cache": key}:
                    fresh = False
                    for line in lines[1:]:
                        try:
                            e = json.loads(line)
                        except json.JSONDecodeError:
                            break  # a line cut off by an interrupted build
                        self.entries[e["source"]] = e
            except json.JSONDecodeError:
                pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"detection_cache": key}) + "\n")
        else:  # drop a cut-off last line before appending
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"detection_cache": key}) + "\n")
                for e in self.entries.values():
                    f.write(json.dumps(e) + "\n")
        self._file = open(self.path, "a", encoding="utf-8")

    @staticmethod
    def fingerprint(data: bytes) -> tuple[int, str]:
        return len(data), hashlib.sha1(data).hexdigest()

    def get(self, source: str, fp: tuple[int, str]) -> list[Face] | None:
        e = self.entries.get(source)
        if e is None or (e["bytes"], e["sha1"]) != fp:
            self.misses += 1
            return None
        self.hits += 1
        return [
            Face(tuple(f["box"]), np.asarray(f["landmarks"], np.float32).reshape(5, 2), f["score"])
            for f in e["faces"]
        ]

    def put(self, source: str, fp: tuple[int, str], faces: list[Face]) -> None:
        if self._file is None:
            return
        e = {
            "source": source, "bytes": fp[0], "sha1": fp[1],
            "faces": [
                {"box": [float(v) for v in f.box],
                 "landmarks": [float(v) for v in np.asarray(f.landmarks, np.float32).ravel()],
                 "score": float(f.score)}
                for f in faces
            ],
        }
        self.entries[source] = e
        self._file.write(json.dumps(e) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _side(box: Box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _central(box: Box, w: int, h: int) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return abs(cx / w - 0.5) <= CENTRAL and abs(cy / h - 0.5) <= CENTRAL


def choose_face(
    faces: list[Face], width: int, height: int, threshold: float, min_face: float
) -> tuple[Face | None, str]:
    """The photo's one well-detected face, or None and the drop reason."""
    if not faces:
        return None, "no_face"
    good = [f for f in faces if f.score >= threshold]
    if not good:
        return None, "low_score"
    central = [f for f in good if _central(f.box, width, height)]
    if not central:
        return None, "no_central_face"
    # Largest first; equal sizes by score, then position, so the choice is stable.
    central.sort(key=lambda f: (-_side(f.box), -f.score, f.box))
    face = central[0]
    if _side(face.box) < min_face:
        return None, "small_face"
    if any(_side(f.box) >= SIMILAR_SIZE * _side(face.box) for f in central[1:]):
        return None, "ambiguous"
    return face, "kept"


@dataclass
class Sample:
    """One crop and its geometry in crop pixels, as it goes into a shard."""

    image: np.ndarray
    landmarks: np.ndarray
    face_box: list[float]
    erase: tuple[int, int, int, int]
    valid: tuple[int, int, int, int]
    valid_fraction: float
    score: float
    side: float  # face box's longer side in photo pixels


def make_sample(image: np.ndarray, face: Face, min_valid: float) -> tuple[Sample | None, str]:
    """Crop `face` with the generator's framing; None and the drop reason if unusable."""
    crop = crop_face(image, face.box, GEN_SIZE, CROP_GROW)
    n = crop.size
    lm = crop.to_crop(face.landmarks)
    if not (np.all(np.isfinite(lm)) and np.all(lm >= 0) and np.all(lm <= n)):
        return None, "landmarks_outside"
    frac = float(crop.valid.mean())
    if frac < min_valid or frac == 0:
        return None, "mostly_padding"
    cols = np.flatnonzero(crop.valid.any(axis=0))
    rows = np.flatnonzero(crop.valid.any(axis=1))
    valid = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    b = face.box
    fb = crop.to_crop(np.array([[b[0], b[1]], [b[2], b[3]]], np.float32)).ravel()
    return (
        Sample(
            image=crop.pixels,
            landmarks=lm.astype(np.float32),
            face_box=[float(v) for v in fb],
            erase=erase_box(crop, face.box),  # takes the box in photo coordinates
            valid=valid,
            valid_fraction=frac,
            score=float(face.score),
            side=float(_side(face.box)),
        ),
        "kept",
    )


# -- shards -------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _ShardWriter:
    """Collects one split's crops and writes a shard whenever the next crop would
    push it past `limit` bytes (the JPEGs are sized exactly, the rest estimated
    generously)."""

    PER_CROP = 8 + 40 + 20 + 16 + 8 + 8 + 4  # offsets, landmarks, expression, face_box, erase, valid, score
    OVERHEAD = 8 * 1024  # npz / npy headers

    def __init__(self, out: Path, split: str, limit: int, meter: ExpressionMeter | None = None):
        self.out, self.split, self.limit = out, split, limit
        self.meter = meter
        self.neutral = 0  # crops whose expression could not be measured
        self.images: list[np.ndarray] = []
        self.meta: dict[str, list] = defaultdict(list)
        self.jpeg_bytes = 0
        self.max_chars = 0
        self.shards: list[dict] = []

    def _size(self, n: int, jpeg: int, chars: int) -> int:
        return self.OVERHEAD + jpeg + n * (self.PER_CROP + 2 * 4 * chars)

    def add(self, s: Sample, source: str, identity: str) -> None:
        ok, buf = cv2.imencode(".jpg", s.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"JPEG encoding failed for {source}")
        chars = max(self.max_chars, len(source), len(identity))
        n = len(self.images) + 1
        if self.images and self._size(n, self.jpeg_bytes + buf.size, chars) > self.limit:
            self.flush()
            chars = max(len(source), len(identity))
        self.images.append(s.image)
        self.jpeg_bytes += buf.size
        self.max_chars = chars
        m = self.meta
        m["landmarks"].append(s.landmarks)
        if self.meter is not None:
            # Measured on the crop as stored (decoded JPEG, crop coordinates): the same
            # input `anonyface-train conditions` sees, so both give the same numbers.
            stored = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
            face = Face(tuple(s.face_box), s.landmarks, s.score)
            row = self.meter.measure(np.ascontiguousarray(stored), [face])[0]
            self.neutral += int(not row.any())
            m["expression"].append(row)
        m["face_box"].append(s.face_box)
        m["erase"].append(s.erase)
        m["valid"].append(s.valid)
        m["score"].append(s.score)
        m["source"].append(source)
        m["identity"].append(identity)

    def flush(self) -> None:
        if not self.images:
            return
        path = self.out / f"{self.split}-{len(self.shards):03d}.npz"
        write_shard(path, self.images, dict(self.meta), quality=JPEG_QUALITY)
        size = path.stat().st_size
        self.shards.append(
            {"file": path.name, "split": self.split, "count": len(self.images), "bytes": size,
             "sha256": _file_sha256(path)}
        )
        self.images, self.meta, self.jpeg_bytes, self.max_chars = [], defaultdict(list), 0, 0


def expression_summary(model: Path, crops: int, neutral: int) -> dict:
    """The manifest's record of how the `expression` fields were measured."""
    from ..expression import EXPRESSION_NAMES, RAW_MEAN, RAW_STD

    return {
        "names": list(EXPRESSION_NAMES),
        "model_sha256": _file_sha256(model),
        "raw_mean": [round(float(v), 6) for v in RAW_MEAN],
        "raw_std": [round(float(v), 6) for v in RAW_STD],
        "crops": crops,
        "neutral": neutral,
    }


# -- the build ------------------------------------------------------------------------

def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values, np.float64)
    return {f"p{p}": round(float(np.percentile(a, p)), 3) for p in (1, 5, 25, 50, 75, 95, 99)}


def build_dataset(
    src: Path,
    out: Path,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    context_val_fraction: float = DEFAULT_CONTEXT_VAL_FRACTION,
    shard_mb: float = DEFAULT_SHARD_MB,
    threshold: float = DEFAULT_MIN_SCORE,
    min_face: float = DEFAULT_MIN_FACE,
    min_valid: float = DEFAULT_MIN_VALID,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    detector: FaceDetector | None = None,
    det_cache: Path | str | None = "default",
    meter: ExpressionMeter | None | str = "default",
) -> dict:
    """Build the shards of `src`'s photos in `out`; returns (and writes) the manifest.

    Photos are listed in sorted order and then put in an order drawn from
    `seed`, so every shard holds a mix of all subsets; `limit` takes the first
    N photos of that order. `shard_mb` is in 10⁶ bytes. A ready `detector`
    (tests) replaces the bundled one. `det_cache` is the detection cache
    (`DetectionCache`; default `out/detections.jsonl`, None for none). `meter` measures
    each crop's expression conditions (default: the bundled face mesh; None: shards
    without the `expression` field, which `anonyface-train conditions` can add later).
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    if not (0.0 <= val_fraction <= 1.0 and 0.0 <= context_val_fraction <= 1.0):
        raise ValueError("val_fraction and context_val_fraction must be in [0, 1]")
    out.mkdir(parents=True, exist_ok=True)
    for old in [p for s in SPLITS for p in out.glob(f"{s}-*.npz")]:
        old.unlink()  # a rebuild must not leave shards of an earlier, bigger build

    files = photo_order(list_photos(src), seed)
    ground_truth = {
        sub: read_ground_truth(src / sub / GT_FILE) for sub in CONTEXT_SUBSETS if (src / sub / GT_FILE).exists()
    }
    if limit is not None:
        files = files[:limit]

    floor = min(threshold, FACE_FLOOR)
    if detector is None:
        key = {"model_sha256": _file_sha256(model_path()), "detect_pad": DETECT_PAD,
               "pad_value": DETECT_PAD_VALUE, "floor": floor}
    else:  # a detector handed in (tests): its own identity
        key = {"detector": getattr(detector, "cache_key", repr(type(detector))), "detect_pad": DETECT_PAD,
               "pad_value": DETECT_PAD_VALUE, "floor": floor}
    if det_cache == "default":
        det_cache = out / DET_CACHE_NAME
    cache = DetectionCache(det_cache, key)
    made: list[FaceDetector] = [detector] if detector is not None else []

    def get_detector() -> FaceDetector:
        if not made:  # loaded only when a photo is not in the cache
            made.append(FaceDetector(threshold=floor))
        return made[0]

    limit_bytes = int(shard_mb * 1e6)
    if meter == "default":
        meter = expression_meter()
    writers = {s: _ShardWriter(out, s, limit_bytes, meter) for s in SPLITS}
    per_subset: dict[str, dict] = defaultdict(lambda: {"photos": 0, "faces": 0, "kept": 0, "train": 0, "val": 0,
                                                      "webval": 0, "dropped": Counter()})
    identities: dict[str, dict[str, set]] = defaultdict(lambda: {s: set() for s in SPLITS})
    valid_fracs: dict[str, list[float]] = defaultdict(list)
    sides: dict[str, list[float]] = defaultdict(list)
    dropped: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    last = t0

    for i, source in enumerate(files):
        sub = subset_of(source)
        st = per_subset[sub]
        st["photos"] += 1
        data = np.fromfile(str(src / source), np.uint8)
        image = load_rgb(data=data)
        picks: list[tuple[str, Sample | None, str]] = []  # (source, sample, reason)
        if image is None:
            picks.append((source, None, "unreadable"))
        else:
            h, w = image.shape[:2]
            fp = cache.fingerprint(data.tobytes())
            faces = cache.get(source, fp)
            if faces is None:
                faces = detect_padded(get_detector(), image)
                cache.put(source, fp, faces)
            if sub in ground_truth:
                listed = ground_truth[sub].get(source.split("/", 1)[1], [])
                for k, (face, reason) in enumerate(context_faces(faces, listed, threshold, min_face)):
                    sample = None
                    if face is not None:
                        sample, reason = make_sample(image, face, min_valid)
                    picks.append((f"{source}#{k}", sample, reason))
            else:
                face, reason = choose_face(faces, w, h, threshold, min_face)
                sample = None
                if face is not None:
                    sample, reason = make_sample(image, face, min_valid)
                picks.append((source, sample, reason))
        identity = identity_of(source)
        if sub in ground_truth:
            split = "webval" if split_of(identity, context_val_fraction, seed) == "val" else "train"
        else:
            split = split_of(identity, val_fraction, seed)
        for name, sample, reason in picks:
            st["faces"] += 1
            if sample is None:
                st["dropped"][reason] += 1
                dropped.append((name, reason))
                continue
            writers[split].add(sample, name, identity)
            st["kept"] += 1
            st[split] += 1
            identities[sub][split].add(identity)
            valid_fracs[sub].append(sample.valid_fraction)
            sides[sub].append(sample.side)
        now = time.perf_counter()
        if progress and (now - last > 30 or i + 1 == len(files)):
            last = now
            rate = (i + 1) / (now - t0)
            kept = sum(s["kept"] for s in per_subset.values())
            print(f"  {i + 1}/{len(files)} photos, {kept} kept, {rate:.1f}/s, "
                  f"{(len(files) - i - 1) / rate / 60:.1f} min left", file=sys.stderr, flush=True)

    cache.close()
    for w in writers.values():
        w.flush()

    subsets = {}
    for sub in sorted(per_subset):
        st = per_subset[sub]
        vf = valid_fracs[sub]
        subsets[sub] = {
            "photos": st["photos"],
            **({"faces_listed": st["faces"]} if sub in ground_truth else {}),
            "kept": st["kept"],
            "train": st["train"],
            "val": st["val"],
            **({"webval": st["webval"]} if sub in ground_truth else {}),
            "identities_train": len(identities[sub]["train"]),
            "identities_val": len(identities[sub]["val"]) + len(identities[sub]["webval"]),
            "dropped": {r: st["dropped"][r] for r in DROP_REASONS if st["dropped"][r]},
            "valid_fraction": _quantiles(vf),
            "kept_valid_below_0.5": int(sum(v < 0.5 for v in vf)),
            "face_side_px": _quantiles(sides[sub]),
        }
    totals = Counter()
    for sub in subsets.values():
        for k in ("photos", "kept", "train", "val", "webval"):
            totals[k] += sub.get(k, 0)
    drops = Counter(r for _, r in dropped)
    overlap = set()
    for sub in identities.values():
        overlap |= (sub["train"] & sub["val"]) | (sub["train"] & sub["webval"])
    if overlap:  # cannot happen with a hash split; guard the promise anyway
        raise AssertionError(f"identities on both sides of the split: {sorted(overlap)[:5]}")

    manifest = {
        "builder_version": BUILDER_VERSION,
        "config": {
            "src": str(src),
            "val_fraction": val_fraction,
            "context_val_fraction": context_val_fraction,
            "context_subsets": [c for c in CONTEXT_SUBSETS if c in ground_truth],
            "shard_mb": shard_mb,
            "threshold": threshold,
            "min_face": min_face,
            "min_valid": min_valid,
            "limit": limit,
            "seed": seed,
            "detector_precision": "fp32",
            "face_floor": FACE_FLOOR,
            "gen_size": GEN_SIZE,
            "crop_grow": CROP_GROW,
            "detect_pad": DETECT_PAD,
            "central": CENTRAL,
            "similar_size": SIMILAR_SIZE,
            "jpeg_quality": JPEG_QUALITY,
        },
        "totals": {
            "photos": totals["photos"],
            "kept": totals["kept"],
            "dropped": len(dropped),
            "train": totals["train"],
            "val": totals["val"],
            "webval": totals["webval"],
        },
        "dropped": {r: drops[r] for r in DROP_REASONS if drops[r]},
        "subsets": subsets,
        "shards": [sh for s in SPLITS for sh in writers[s].shards],
        "expression": None if meter is None else expression_summary(
            meter.path, totals["kept"], sum(w.neutral for w in writers.values())),
    }
    with open(out / "dropped.tsv", "w", encoding="utf-8") as f:
        f.write("source\treason\n")
        for source, reason in sorted(dropped):
            f.write(f"{source}\t{reason}\n")
    with open(out / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    if progress:
        print(f"  took {time.perf_counter() - t0:.0f} s (detection cache: {cache.hits} hits, "
              f"{cache.misses} detected)", file=sys.stderr)
    return manifest


def format_summary(manifest: dict) -> str:
    t = manifest["totals"]
    lines = [f"{t['photos']} photos: kept {t['kept']} crops (train {t['train']}, val {t['val']}, "
             f"webval {t.get('webval', 0)}), dropped {t['dropped']}"]
    for reason, n in manifest["dropped"].items():
        lines.append(f"  dropped {n:6d}  {reason}")
    for sub, st in manifest["subsets"].items():
        drops = ", ".join(f"{r} {n}" for r, n in st["dropped"].items()) or "none"
        lines.append(
            f"  {sub or '.'}: {st['photos']} photos"
            + (f", {st['faces_listed']} listed faces" if "faces_listed" in st else "")
            + f", kept {st['kept']} (train {st['train']} / val {st['val'] + st.get('webval', 0)}; "
            f"identities {st['identities_train']} / {st['identities_val']}); dropped: {drops}"
        )
    shards = manifest["shards"]
    for s in shards:
        lines.append(f"  {s['file']}: {s['count']} crops, {s['bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="anonyface-train dataset",
        description="Detect, crop and shard one face per photo for generator training.",
    )
    p.add_argument("src", type=Path, help="folder of photos (subfolders lfw/, utkface/, humans/ …)")
    p.add_argument("out", type=Path, help="output folder for the shards and manifest.json")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="fraction of identities held out for validation (default %(default)s)")
    p.add_argument("--context-val-fraction", type=float, default=DEFAULT_CONTEXT_VAL_FRACTION,
                   help="fraction of context photos (webfaces/) held out as webval (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N photos (of the seeded order)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB,
                   help="largest shard in MB (10^6 bytes; default %(default)s)")
    p.add_argument("--threshold", type=float, default=DEFAULT_MIN_SCORE,
                   help="least detection score of the kept face (default %(default)s)")
    p.add_argument("--min-face", type=float, default=DEFAULT_MIN_FACE,
                   help="least face box side in photo pixels (default %(default)s)")
    p.add_argument("--min-valid", type=float, default=DEFAULT_MIN_VALID,
                   help="least fraction of crop pixels from the photo (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="order of photos and split salt (default 0)")
    p.add_argument("--det-cache", default="default",
                   help="detection cache file (default OUT/detections.jsonl; 'none' for no cache)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    try:
        manifest = build_dataset(
            args.src, args.out, val_fraction=args.val_fraction,
            context_val_fraction=args.context_val_fraction, shard_mb=args.shard_mb,
            threshold=args.threshold, min_face=args.min_face, min_valid=args.min_valid,
            limit=args.limit, seed=args.seed, progress=not args.quiet,
            det_cache=None if args.det_cache == "none" else args.det_cache,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
