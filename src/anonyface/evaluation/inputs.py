"""What gets evaluated: photos, videos and training-shard crops, listed deterministically.

Each INPUT on the command line is a folder, a file or a glob. Its *set* name
(reported separately) is the folder's name, or the parent folder's for a file.
Photos are the project's image formats; videos are .mp4/.mov/.mkv/.avi/.webm;
``*.npz`` files are data set shards (``anonyface.training.shards``), one item
per face crop.

`--val-from DIR` adds the photos of DIR whose identity falls in the data set
builder's validation split (``anonyface.training.dataset.split_of``, the same
rule and seed), identities being computed from the path relative to
`split_root` (by default the input folder's parent, e.g. ``…/train`` for
``…/train/utkface``). `--sample N` then keeps N of them, chosen with the
run's seed. UTKFace file names give age, gender and race groups.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..media import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})

GENDERS = {0: "male", 1: "female"}
RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "other"}
AGE_BINS = ((0, 12, "0-12"), (13, 19, "13-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, 200, "60+"))


@dataclass
class Item:
    """One photo (or shard crop) to evaluate."""

    key: str                      # unique, e.g. "eval/wild-1.jpg"
    set: str                      # "eval", "utkface", "faces-val"
    path: Path | None = None      # the file, when it is one
    jpeg: bytes | None = None     # a shard crop's JPEG bytes
    groups: dict = field(default_factory=dict)  # {"age": "20-39", "gender": "female", "race": "Asian"}


@dataclass
class Inputs:
    photos: list[Item]
    videos: list[Path]
    notes: list[str]


def groups_of(name: str) -> dict:
    from ..training.dataset import utk_attributes

    attrs = utk_attributes(name)
    if not attrs:
        return {}
    age = next(label for lo, hi, label in AGE_BINS if lo <= attrs["age"] <= hi)
    out = {"age": age, "gender": GENDERS.get(attrs["gender"], "?")}
    if attrs["race"] is not None:
        out["race"] = RACES.get(attrs["race"], "?")
    return out


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".")]
    return files


def collect(
    inputs: list[str],
    sample: int | None = None,
    seed: int = 0,
    val_inputs: list[str] | None = None,
    split_root: str | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
) -> Inputs:
    from ..training.dataset import DEFAULT_VAL_FRACTION, identity_of, split_of

    frac = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    photos: list[Item] = []
    videos: list[Path] = []
    notes: list[str] = []
    seen: set[str] = set()
    specs = [(s, False) for s in inputs] + [(s, True) for s in (val_inputs or [])]
    for spec, val_split in specs:
        p = Path(spec)
        if p.is_dir():
            files, base, set_name = _walk(p), p, p.resolve().name
        elif p.is_file():
            files, base, set_name = [p], p.parent, p.resolve().parent.name
        else:
            files = [Path(f) for f in sorted(glob.glob(spec, recursive=True)) if Path(f).is_file()]
            if not files:
                raise FileNotFoundError(f"no such file or folder: {spec}")
            base = Path(os.path.commonpath([str(f.parent) for f in files]))
            set_name = base.resolve().name
        here: list[Item] = []
        for f in files:
            ext = f.suffix.lower()
            if ext in VIDEO_EXTENSIONS:
                videos.append(f)
            elif ext == ".npz":
                here += _shard_items(f, set_name)
            elif ext in IMAGE_EXTENSIONS:
                rel = f.relative_to(base).as_posix()
                here.append(Item(f"{set_name}/{rel}", set_name, path=f, groups=groups_of(f.name)))
        if val_split:
            root = Path(split_root) if split_root else base.resolve().parent
            before = len(here)
            here = [
                it for it in here
                if it.path is None
                or split_of(identity_of(it.path.resolve().relative_to(root.resolve()).as_posix()), frac, split_seed) == "val"
            ]
            notes.append(f"{spec}: {len(here)} of {before} photos in the validation split "
                         f"(fraction {frac}, seed {split_seed}, identities relative to {root})")
        if sample is not None and len(here) > sample:
            rng = np.random.default_rng(seed)
            keep = sorted(rng.choice(len(here), sample, replace=False).tolist())
            notes.append(f"{spec}: a sample of {sample} of {len(here)} (seed {seed})")
            here = [here[i] for i in keep]
        for it in here:
            if it.key not in seen:
                seen.add(it.key)
                photos.append(it)
    return Inputs(photos, videos, notes)


def _shard_items(path: Path, set_name: str) -> list[Item]:
    items = []
    with np.load(path, allow_pickle=False) as z:
        jpeg, offsets, sources = z["jpeg"], z["offsets"], z["source"]
        for i in range(len(offsets) - 1):
            src = str(sources[i])
            items.append(Item(
                f"{set_name}/{path.stem}/{i:05d}", f"{set_name}:{path.stem.split('-')[0]}",
                jpeg=jpeg[offsets[i]:offsets[i + 1]].tobytes(), groups=groups_of(src.rsplit('/', 1)[-1]),
            ))
    return items
