"""Bring your own detections: faces from a file (`--boxes FILE.json`) or the API (`boxes=`).

The file has the schema `--json` writes: `{"files": [{"file": NAME, "faces": [{"box":
[x1, y1, x2, y2], "landmarks": [[x, y] × 5], "score": S}, ...]}, ...]}`; the faces
listed under "audit" and "kept" are taken too (they are faces). `landmarks` and
`score` are optional: a box without landmarks gets the average layout of a frontal
face (eyes, nose, mouth corners) and score 1. Mode "add" covers our detector's
faces and the file's (a file face overlapping one of ours by IoU ≥ 0.4 is the same
face: ours is kept, it has real landmarks); "only" covers just the file's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detection import Face
from .geometry import box_iou

BOXES_MODES = ("add", "only")
#: A given box overlapping one of our detections by this much is that same face.
SAME_FACE_IOU = 0.4
#: Where RetinaFace's five landmarks sit in its box, on average (fractions of width, height):
#: eyes, nose tip, mouth corners of a frontal face.
FRONTAL_LANDMARKS = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.77], [0.64, 0.77]], np.float32)


class BoxesError(ValueError):
    """A boxes file or list that cannot be used; the message names it and says where."""


def _number(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BoxesError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def face_from(item, where: str) -> Face:
    """One face from a `Face`, a 4-number box or a dict as `--json` writes it."""
    if isinstance(item, Face):
        return item
    lm = score = None
    if isinstance(item, dict):
        if "box" not in item:
            raise BoxesError(f"{where}: a face needs a \"box\": [x1, y1, x2, y2]")
        box, lm, score = item["box"], item.get("landmarks"), item.get("score")
    else:
        box = item
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise BoxesError(f"{where}: a box is [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (_number(v, where) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise BoxesError(f"{where}: box {[x1, y1, x2, y2]} is empty (x2 must exceed x1 and y2 exceed y1)")
    if lm is None:
        landmarks = np.array([x1, y1], np.float32) + FRONTAL_LANDMARKS * np.array([x2 - x1, y2 - y1], np.float32)
    else:
        if not isinstance(lm, (list, tuple, np.ndarray)) or len(lm) != 5 or any(not isinstance(p, (list, tuple, np.ndarray)) or len(p) != 2 for p in lm):
            raise BoxesError(f"{where}: landmarks are five [x, y] points")
        landmarks = np.array([[_number(v, where) for v in p] for p in lm], np.float32)
    s = 1.0 if score is None else _number(score, where)
    if not 0.0 <= s <= 1.0:
        raise BoxesError(f"{where}: score must be in [0, 1], got {s}")
    return Face((x1, y1, x2, y2), landmarks, s)


def to_faces(boxes, width: int, height: int, where: str = "boxes") -> list[Face]:
    """Given faces, checked; boxes wholly outside the image are an error (a file for another
    image, or coordinates of a resized copy: covering nothing would leak)."""
    if isinstance(boxes, (str, bytes)) or not hasattr(boxes, "__iter__"):
        raise BoxesError(f"{where}: expected a list of faces, got {type(boxes).__name__}")
    faces = [face_from(b, f"{where}[{i}]") for i, b in enumerate(boxes)]
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = f.box
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise BoxesError(f"{where}[{i}]: box {[round(v, 1) for v in f.box]} lies outside the {width}×{height} image")
    return faces


def merge_boxes(found: list[Face], given: list[Face]) -> list[Face]:
    """Our detector's faces, then each given face that is not one of them."""
    out = list(found)
    for g in given:
        if not any(box_iou(g.box, f.box) >= SAME_FACE_IOU for f in found):
            out.append(g)
    return out


@dataclass
class BoxesFile:
    """A `--boxes` file, read and checked: faces per file name."""

    path: str
    entries: dict[str, list]  # the "file" field → its face dicts (checked)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BoxesFile":
        name = str(path)
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BoxesError(f"--boxes {name}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise BoxesError(f"--boxes {name}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        except json.JSONDecodeError as e:
            raise BoxesError(f"--boxes {name}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
            raise BoxesError(f'--boxes {name}: expected the schema --json writes: {{"files": [{{"file": ..., "faces": [...]}}]}}')
        entries: dict[str, list] = {}
        for i, entry in enumerate(doc["files"]):
            where = f"--boxes {name}: files[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise BoxesError(f'{where}: each entry needs a "file" name')
            faces = []
            for key in ("faces", "audit", "kept"):
                items = entry.get(key) or []
                if not isinstance(items, list):
                    raise BoxesError(f'{where}: "{key}" must be a list')
                for j, item in enumerate(items):
                    face_from(item, f"{where} ({entry['file']}) {key}[{j}]")  # checked now, before any file is written
                    faces.append(item)
            if entry["file"] in entries:
                raise BoxesError(f"{where}: {entry['file']} is listed twice")
            entries[entry["file"]] = faces
        return cls(name, entries)

    def faces_for(self, source: str | os.PathLike | None, only_input: bool = False) -> list | None:
        """The face dicts listed for `source` (by the name as given, then the same file,
        then a unique base name; a file with one entry fits a single input), or None."""
        if source is None:
            return next(iter(self.entries.values())) if only_input and len(self.entries) == 1 else None
        key = str(source)
        if key in self.entries:
            return self.entries[key]
        target = Path(source).resolve()
        for name, faces in self.entries.items():
            if Path(name).resolve() == target:
                return faces
        same_base = [faces for name, faces in self.entries.items() if Path(name).name == Path(source).name]
        if len(same_base) == 1:
            return same_base[0]
        if only_input and len(self.entries) == 1:
            return next(iter(self.entries.values()))
        return None
