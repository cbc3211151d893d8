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

The validation split is by identity (LFW: the person; every other photo is its
own identity), by a stable hash, so a person never lands on both sides.
Same input and arguments → byte-identical output.
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

from ..detection import Face, FaceDetector
from ..geometry import CROP_GROW, GEN_SIZE, Box, crop_face, erase_box
from .shards import write_shard

#: Bump when the builder's output for the same input changes.
BUILDER_VERSION = 1

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
DEFAULT_SHARD_MB = 38.0

#: A face is "central" when its centre is within this fraction of the photo's
#: size from the photo's centre, on both axes.
CENTRAL = 0.3
#: A second central face at least this fraction of the chosen one's size makes the photo ambiguous.
SIMILAR_SIZE = 0.7

JPEG_QUALITY = 95  # what write_shard uses; needed to size shards exactly
#: A fixed time stamp for the shards' zip entries (np.savez stamps the wall clock).

DROP_REASONS = (
    "unreadable",
    "no_face",
    "low_score",
    "no_central_face",
    "small_face",
    "ambiguous",
    "landmarks_outside",
    "mostly_padding",
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


# -- one photo ------------------------------------------------------------------------

def load_rgb(path: Path) -> np.ndarray | None:
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

    PER_CROP = 8 + 40 + 16 + 8 + 8 + 4  # offsets, landmarks, face_box, erase, valid, score
    OVERHEAD = 8 * 1024  # npz / npy headers

    def __init__(self, out: Path, split: str, limit: int):
        self.out, self.split, self.limit = out, split, limit
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
    shard_mb: float = DEFAULT_SHARD_MB,
    threshold: float = DEFAULT_MIN_SCORE,
    min_face: float = DEFAULT_MIN_FACE,
    min_valid: float = DEFAULT_MIN_VALID,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    detector: FaceDetector | None = None,
) -> dict:
    """Build the shards of `src`'s photos in `out`; returns (and writes) the manifest.

    Photos are listed in sorted order and then put in an order drawn from
    `seed`, so every shard holds a mix of all subsets; `limit` takes the first
    N photos of that order. `shard_mb` is in 10⁶ bytes. A ready `detector`
    (tests) replaces the bundled one.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must be in [0, 1]")
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("train-*.npz")) + list(out.glob("val-*.npz")):
        old.unlink()  # a rebuild must not leave shards of an earlier, bigger build

    files = list_photos(src)
    order = np.random.default_rng(seed).permutation(len(files))
    files = [files[i] for i in order]
    if limit is not None:
        files = files[:limit]

    detector = detector or FaceDetector(threshold=min(threshold, FACE_FLOOR))
    limit_bytes = int(shard_mb * 1e6)
    writers = {s: _ShardWriter(out, s, limit_bytes) for s in ("train", "val")}
    per_subset: dict[str, dict] = defaultdict(lambda: {"photos": 0, "kept": 0, "train": 0, "val": 0,
                                                      "dropped": Counter()})
    identities: dict[str, dict[str, set]] = defaultdict(lambda: {"train": set(), "val": set()})
    valid_fracs: dict[str, list[float]] = defaultdict(list)
    sides: dict[str, list[float]] = defaultdict(list)
    dropped: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    last = t0

    for i, source in enumerate(files):
        sub = subset_of(source)
        st = per_subset[sub]
        st["photos"] += 1
        image = load_rgb(src / source)
        if image is None:
            reason, sample = "unreadable", None
        else:
            h, w = image.shape[:2]
            face, reason = choose_face(detect_padded(detector, image), w, h, threshold, min_face)
            sample = None
            if face is not None:
                sample, reason = make_sample(image, face, min_valid)
        if sample is None:
            st["dropped"][reason] += 1
            dropped.append((source, reason))
        else:
            identity = identity_of(source)
            split = split_of(identity, val_fraction, seed)
            writers[split].add(sample, source, identity)
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

    for w in writers.values():
        w.flush()

    subsets = {}
    for sub in sorted(per_subset):
        st = per_subset[sub]
        vf = valid_fracs[sub]
        subsets[sub] = {
            "photos": st["photos"],
            "kept": st["kept"],
            "train": st["train"],
            "val": st["val"],
            "identities_train": len(identities[sub]["train"]),
            "identities_val": len(identities[sub]["val"]),
            "dropped": {r: st["dropped"][r] for r in DROP_REASONS if st["dropped"][r]},
            "valid_fraction": _quantiles(vf),
            "kept_valid_below_0.5": int(sum(v < 0.5 for v in vf)),
            "face_side_px": _quantiles(sides[sub]),
        }
    totals = Counter()
    for sub in subsets.values():
        for k in ("photos", "kept", "train", "val"):
            totals[k] += sub[k]
    drops = Counter(r for _, r in dropped)
    overlap = set()
    for sub in identities.values():
        overlap |= sub["train"] & sub["val"]
    if overlap:  # cannot happen with a hash split; guard the promise anyway
        raise AssertionError(f"identities on both sides of the split: {sorted(overlap)[:5]}")

    manifest = {
        "builder_version": BUILDER_VERSION,
        "config": {
            "src": str(src),
            "val_fraction": val_fraction,
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
        },
        "dropped": {r: drops[r] for r in DROP_REASONS if drops[r]},
        "subsets": subsets,
        "shards": writers["train"].shards + writers["val"].shards,
    }
    with open(out / "dropped.tsv", "w", encoding="utf-8") as f:
        f.write("source\treason\n")
        for source, reason in sorted(dropped):
            f.write(f"{source}\t{reason}\n")
    with open(out / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    if progress:
        print(f"  took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return manifest


def format_summary(manifest: dict) -> str:
    t = manifest["totals"]
    lines = [f"{t['photos']} photos: kept {t['kept']} (train {t['train']}, val {t['val']}), dropped {t['dropped']}"]
    for reason, n in manifest["dropped"].items():
        lines.append(f"  dropped {n:6d}  {reason}")
    for sub, st in manifest["subsets"].items():
        drops = ", ".join(f"{r} {n}" for r, n in st["dropped"].items()) or "none"
        lines.append(
            f"  {sub or '.'}: {st['photos']} photos, kept {st['kept']} (train {st['train']} / val {st['val']}; "
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
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    try:
        manifest = build_dataset(
            args.src, args.out, val_fraction=args.val_fraction, shard_mb=args.shard_mb,
            threshold=args.threshold, min_face=args.min_face, min_valid=args.min_valid,
            limit=args.limit, seed=args.seed, progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
