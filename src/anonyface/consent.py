"""Consent: leave the faces of people who agreed untouched, cover everyone else.

A face is kept only when dlib's ResNet face embedding (128-d, the model that
`face_recognition` uses; optional extra `anonyface[keep]`) puts it close to a
reference photo of a consenting person, and nothing in the picture is nearly as
close. Every rule fails closed: a face too small or too uncertain to embed, a
face whose alignment disagrees with our detector's landmarks, a face that two
references claim, or a reference that two faces claim, is covered.

Alignment: dlib's 5-point shape predictor (CC0, trained on dlib's own 5-point
data set; the 68-point model is licensed for non-commercial use only), started
from our detector's box. The ResNet was trained on chips cut by exactly this
predictor, so it sees the geometry it knows; our detector's five points (eye
centres, nose tip, mouth corners) are a different point set that
`get_face_chip` does not take. They are used as a cross-check instead: when
dlib's eye centres land more than `MAX_EYE_ERROR` of the eye distance away from
ours, the alignment is not trusted and the face is covered.

Thresholds come from benchmarks/consent_eval.py on LFW identities (numbers in
docs/consent.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .detection import Face
from .geometry import box_iou

#: Embedding distance below which a face may be kept: the largest (0.01 steps) whose
#: 95 % upper bounds on false-keep stay under 0.05 % on half of LFW's people; on the
#: held-out half a stranger was kept in 0.024 % of 5.0 M trials (bound 0.025 %; per
#: pair of people 0.035 %, bound 0.037 %), a person in 77.6 % (docs/consent.md).
#: dlib's own "same person" is 0.6, where strangers are kept in 0.58 %.
KEEP_THRESHOLD = 0.5
#: A kept face must be at least this much closer to its reference than any other
#: face in the picture is, and than it is to any other reference; else both are
#: covered (a look-alike, a twin, a mirror, two photos of one person).
SEPARATION = 0.05
#: Faces narrower than this (box width, pixels) are never embedded: always covered. The
#: ResNet sees 150-px chips; shrunk LFW faces lose true-keep below this (75 % at 60 px,
#: 60 % at 30) without more false keeps in that study, so the floor is a margin of
#: caution for real small faces (blur, compression, less exact landmarks), not a cliff.
MIN_FACE_PX = 60
#: Detections scoring below this are not trusted to be a well-framed face: covered.
MIN_SCORE = 0.5
#: dlib's eye centres may miss ours by at most this fraction of the eye distance.
MAX_EYE_ERROR = 0.3
#: The most a threshold may be raised without `unsafe` (dlib's "same person").
MAX_SAFE_THRESHOLD = 0.6


class ConsentUnavailable(RuntimeError):
    """Face recognition is not installed (pip install "anonyface[keep]")."""


class ReferenceError(ValueError):
    """A reference photo that cannot serve (no face, several faces, too small); names the file."""


class FaceRecognizer:
    """dlib's 5-point alignment and ResNet embedding, checked against our detector's landmarks."""

    def __init__(self, max_eye_error: float = MAX_EYE_ERROR) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as e:
            raise ConsentUnavailable(
                f"keeping faces needs face recognition, which is not installed ({e.name} is missing): "
                'pip install "anonyface[keep]"'
            ) from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.max_eye_error = max_eye_error

    def align(self, rgb: np.ndarray, face: Face):
        """dlib's 5 points, started from a square of the face box's width about its centre
        (RetinaFace boxes run brows to chin; dlib's detector boxes, which the predictor
        was trained on, are squares of about that width)."""
        x1, y1, x2, y2 = face.box
        cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
        rect = self._dlib.rectangle(int(round(cx - s)), int(round(cy - s)), int(round(cx + s)), int(round(cy + s)))
        return self._shape(rgb, rect)

    def eye_error(self, shape, face: Face) -> float:
        """How far dlib's eye centres are from our detector's, in eye distances."""
        p = np.array([[shape.part(i).x, shape.part(i).y] for i in range(4)], np.float64)
        dlib_eyes = sorted([p[0:2].mean(0), p[2:4].mean(0)], key=lambda e: e[0])
        ours = sorted(np.asarray(face.landmarks[:2], np.float64), key=lambda e: e[0])
        iod = max(1.0, float(np.linalg.norm(ours[1] - ours[0])))
        return max(float(np.linalg.norm(a - b)) for a, b in zip(dlib_eyes, ours)) / iod

    def embed(self, rgb: np.ndarray, face: Face) -> tuple[np.ndarray | None, float]:
        """(128-d embedding, eye error); the embedding is None when the alignment is not
        trusted (dlib and our detector disagree on the eyes)."""
        rgb = np.ascontiguousarray(rgb)
        shape = self.align(rgb, face)
        err = self.eye_error(shape, face)
        if not err <= self.max_eye_error:
            return None, err
        chip = self._dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        return np.asarray(self._net.compute_face_descriptor(chip), np.float32), err


@dataclass
class Reference:
    """One reference photo's face: its embedding and the identity group it belongs to
    (references closer than the threshold to each other are taken as one person)."""

    source: str
    embedding: np.ndarray = field(repr=False)
    box: tuple[float, float, float, float]
    identity: int = 0


@dataclass
class Decision:
    """What consent decided for one face: kept or covered, and why."""

    face: Face
    kept: bool
    distance: float | None = None  # to the nearest reference; None when the face was not embedded
    reference: str | None = None  # that reference's source
    why: str = ""  # why covered ("" when kept)

    def to_dict(self) -> dict:
        d = self.face.to_dict()
        d["distance"] = None if self.distance is None else round(self.distance, 4)
        d["reference"] = self.reference
        return d




def _source_rgb(source, max_pixels: int) -> tuple[np.ndarray, str]:
    """(RGB pixels, a name for messages) of a reference given as a path, array or PIL image."""
    from PIL import Image

    from .media import ImageError, read_image, to_rgb

    if isinstance(source, (str, os.PathLike)):
        try:
            return read_image(source, max_pixels).rgb, str(source)
        except (ImageError, OSError) as e:
            raise ReferenceError(f"reference {source}: {e}") from None
    if isinstance(source, Image.Image):
        return to_rgb(source)[0], "reference image"
    arr = np.asarray(source)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ReferenceError(f"a reference array must be RGB uint8 of shape (H, W, 3), got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[..., :3]), "reference array"


def reference_files(folder: str | os.PathLike) -> list[Path]:
    """Every photo in `folder` (recursive, by suffix), for --keep-dir; an error when there is none."""
    from .media import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise ReferenceError(f"--keep-dir {folder}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ReferenceError(f"--keep-dir {folder}: no photos in it (looked for {' '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


class ConsentMatcher:
    """Decides, face by face, who is kept: the people shown in the reference photos.

    `decide(rgb, faces)` embeds every face that can be embedded and keeps a face only
    when (1) it is under `threshold` from a reference, (2) it is `separation` closer to
    that reference's person than to any other reference's person, and (3) every other
    face in the picture is at least `separation` farther from that person than it is.
    """

    def __init__(self, references: Sequence[Reference], recognizer: FaceRecognizer, threshold: float = KEEP_THRESHOLD,
                 separation: float = SEPARATION, min_face_px: float = MIN_FACE_PX) -> None:
        if not references:
            raise ReferenceError("no reference faces given")
        self.recognizer = recognizer
        self.threshold, self.separation, self.min_face_px = threshold, separation, min_face_px
        self.references = list(references)
        self._group()
        self._emb = np.stack([r.embedding for r in self.references])

    @classmethod
    def from_sources(cls, sources: Iterable, detector, recognizer: FaceRecognizer | None = None,
                     max_pixels: int | None = None, **kw) -> "ConsentMatcher":
        """References from photos (paths, RGB arrays or PIL images), each showing exactly one
        face big enough to embed. Raises `ReferenceError` naming the photo otherwise."""
        from .media import DEFAULT_MAX_PIXELS

        recognizer = recognizer or FaceRecognizer()
        min_px = kw.get("min_face_px", MIN_FACE_PX)
        refs = [reference_face(src, detector, recognizer, min_px, max_pixels or DEFAULT_MAX_PIXELS) for src in sources]
        return cls(refs, recognizer, **kw)

    def _group(self) -> None:
        """References within the threshold of each other show one person (union–find)."""
        n = len(self.references)
        parent = list(range(n))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(n):
            for j in range(i + 1, n):
                if float(np.linalg.norm(self.references[i].embedding - self.references[j].embedding)) < self.threshold:
                    parent[root(i)] = root(j)
        roots = sorted({root(i) for i in range(n)})
        for i, r in enumerate(self.references):
            r.identity = roots.index(root(i))
        self.identities = len(roots)

    def distances(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance to each person, index of the nearest reference of each person)."""
        d = np.linalg.norm(self._emb - embedding, axis=1)
        per = np.full(self.identities, np.inf)
        nearest = np.zeros(self.identities, int)
        for i, r in enumerate(self.references):
            if d[i] < per[r.identity]:
                per[r.identity], nearest[r.identity] = d[i], i
        return per, nearest

    def embeddable(self, face: Face) -> str:
        """Why `face` is not embedded ("" when it is)."""
        if not face.score >= MIN_SCORE:
            return f"uncertain detection (score under {MIN_SCORE})"
        if not face.width >= self.min_face_px:
            return f"too small to recognise (under {self.min_face_px:g} px)"
        return ""

    def measure(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[tuple[np.ndarray | None, np.ndarray | None, str]]:
        """Per face: (distance to each person, nearest reference per person, why not embedded)."""
        out = []
        for f in faces:
            why = self.embeddable(f)
            if why:
                out.append((None, None, why))
                continue
            emb, _ = self.recognizer.embed(rgb, f)
            if emb is None:
                out.append((None, None, "alignment not trusted (dlib and the detector disagree on the eyes)"))
                continue
            per, nearest = self.distances(emb)
            out.append((per, nearest, ""))
        return out

    def decide(self, rgb: np.ndarray, faces: Sequence[Face]) -> list[Decision]:
        """One decision per face, in order."""
        return self.resolve(faces, self.measure(rgb, faces))

    def resolve(self, faces: Sequence[Face], measured) -> list[Decision]:
        """Decisions from measured distances (`measure`): the threshold and both separation rules."""
        n = len(faces)
        table = np.full((n, self.identities), np.inf)
        for i, (per, _, _) in enumerate(measured):
            if per is not None:
                table[i] = per
        out: list[Decision] = []
        for i, f in enumerate(faces):
            per, nearest, why = measured[i]
            if per is None:
                out.append(Decision(f, False, why=why))
                continue
            k = int(np.argmin(per))
            d = float(per[k])
            ref = self.references[int(nearest[k])].source
            others = np.delete(table[:, k], i)
            second = np.delete(per, k)
            if not d < self.threshold:
                why = f"no reference close enough ({d:.3f} ≥ {self.threshold:g})"
            elif second.size and float(second.min()) < d + self.separation:
                why = "close to two references' people"
            elif others.size and float(others.min()) < d + self.separation:
                why = "another face in the picture is nearly as close to this person"
            out.append(Decision(f, not why, d, ref, why))
        return out


def in_kept_place(found: Face, kept: Sequence[Decision]) -> bool:
    """Is `found` (a face the audit found) one of the kept faces: its centre inside a kept
    face's box and the two boxes overlapping (IoU ≥ 0.3)? A different face behind or
    beside a kept one fails this and is covered."""
    cx, cy = (found.box[0] + found.box[2]) / 2, (found.box[1] + found.box[3]) / 2
    for k in kept:
        b = k.face.box
        if b[0] <= cx <= b[2] and b[1] <= cy <= b[3] and box_iou(found.box, b) >= 0.3:
            return True
    return False


#: A face chosen by hand (`keep_boxes`) is the detection overlapping its box by this much.
CHOSEN_IOU = 0.5


def chosen(faces: Sequence[Face], keep_boxes: Sequence) -> list[bool]:
    """Which faces a person chose to keep by pointing at them (a box each, e.g. a click on the
    web page's outline): the face overlapping a chosen box by IoU ≥ `CHOSEN_IOU`, at most one per box."""
    out = [False] * len(faces)
    for kb in keep_boxes:
        box = kb.box if isinstance(kb, Face) else tuple(float(v) for v in kb)
        best = max(range(len(faces)), key=lambda i: box_iou(faces[i].box, box), default=None)
        if best is not None and box_iou(faces[best].box, box) >= CHOSEN_IOU:
            out[best] = True
    return out


def reference_face(source, detector, recognizer: FaceRecognizer, min_px: float, max_pixels: int) -> Reference:
    """The one face of a reference photo: detected with our detector, at least `min_px` wide,
    scoring ≥ `MIN_SCORE`; zero or several such faces is an error (a group photo could make
    the wrong person the reference, so we refuse to guess; crop it)."""
    rgb, name = _source_rgb(source, max_pixels)
    faces = detector.detect(rgb)
    usable = [f for f in faces if f.score >= MIN_SCORE and f.width >= min_px]
    if not usable:
        if faces:
            widest = max(f.width for f in faces)
            raise ReferenceError(f"reference {name}: no clear face at least {min_px:g} px wide (the largest found is {widest:.0f} px): "
                                 "give a sharper or larger photo of the person")
        raise ReferenceError(f"reference {name}: no face found")
    if len(usable) > 1:
        raise ReferenceError(f"reference {name}: {len(usable)} faces; a reference must show only the person who consented (crop it)")
    emb, err = recognizer.embed(rgb, usable[0])
    if emb is None:
        raise ReferenceError(f"reference {name}: the face could not be aligned reliably (eye error {err:.2f}); give a frontal, sharp photo")
    return Reference(name, emb, usable[0].box)


#: Video: a track is shown only after this many consecutive detections matched its person
#: (the frames since the first of them are shown too when the look-back still holds them).
CONFIRM_SAMPLES = 3
#: Video: a track whose last this many embedded detections all failed to match is not
#: sampled any more (a stranger; covered for the rest of the track).
GIVE_UP_SAMPLES = 5


@dataclass
class _Shown:
    """A stretch of frames in which a track is shown: from its first matching detection to
    its last one, both included (frames after the last wait for the next detection)."""

    start: int
    last: int
    identity: int
    reference: str
    worst: float  # the largest distance among its matching samples
    closed: bool = False


@dataclass
class _TrackState:
    run: list[tuple[int, float, str]] = field(default_factory=list)  # consecutive matches: (frame, distance, reference)
    run_identity: int = -1
    fails: int = 0  # embedded detections in a row that did not match
    nearest: np.ndarray | None = None  # smallest distance seen to each person (cross-track separation)
    shown: list[_Shown] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)  # every matching sample's distance
    frames_shown: int = 0

    def interval_at(self, frame: int) -> _Shown | None:
        for s in self.shown:
            if s.start <= frame <= s.last:
                return s
        return None


class TrackConsent:
    """Per-track consent for video: which tracked faces may be shown in which frame.

    Rule (docs/consent.md): every detection of a track that is not given up is
    embedded and decided as in a photo (threshold and separation among the faces
    sampled in that frame). A track is shown once `confirm` consecutive
    detections matched the same person, from the first of them, and only in frames
    between two matching detections (a frame after the last one waits for the
    next: the look-back delay holds it until then), so every frame shown lies
    between two verified detections and none is shown before the confirmation;
    a detection that does not match (or cannot be embedded) ends the stretch at
    the last match before it. Frames the look-back has already let go are never
    shown late: they were covered. Faces held without a detection or
    carried back by the look-back (score `tracking.UNCONFIRMED`) are covered, and
    so is a track when another track in the same frame has come within
    `separation` of its person. Nothing here can show a face the tracker did not
    give to it; everything else the tracker gives is covered.
    """

    def __init__(self, matcher: ConsentMatcher, confirm: int = CONFIRM_SAMPLES, give_up: int = GIVE_UP_SAMPLES) -> None:
        self.matcher = matcher
        self.confirm, self.give_up = confirm, give_up
        self.tracks: dict[int, _TrackState] = {}

    def observe(self, frame: int, rgb: np.ndarray, detected: dict[int, Face]) -> None:
        """The detections of one detection frame, by track id (the raw detector faces)."""
        ids = [tid for tid in sorted(detected) if self.tracks.setdefault(tid, _TrackState()).fails < self.give_up]
        if not ids:
            return
        faces = [detected[tid] for tid in ids]
        measured = self.matcher.measure(rgb, faces)
        for tid, m, d in zip(ids, measured, self.matcher.resolve(faces, measured)):
            self._sample(self.tracks[tid], frame, m[0], d)

    def _sample(self, st: _TrackState, frame: int, per: np.ndarray | None, d: Decision) -> None:
        if per is not None:
            st.nearest = per.copy() if st.nearest is None else np.minimum(st.nearest, per)
        identity = int(np.argmin(per)) if per is not None else -1
        if not d.kept:
            st.fails = st.fails + 1 if per is not None else st.fails
            st.run, st.run_identity = [], -1
            self._close(st, frame)
            return
        st.fails = 0
        st.distances.append(float(d.distance))
        if identity != st.run_identity:
            self._close(st, frame)
            st.run, st.run_identity = [], identity
        st.run.append((frame, float(d.distance), d.reference or ""))
        open_ = st.shown[-1] if st.shown and not st.shown[-1].closed else None
        if open_ is None and len(st.run) >= self.confirm:
            st.shown.append(_Shown(st.run[0][0], frame, identity, st.run[-1][2], max(r[1] for r in st.run)))
        elif open_ is not None:
            open_.last = frame
            open_.worst = max(open_.worst, float(d.distance))

    @staticmethod
    def _close(st: _TrackState, frame: int) -> None:
        if st.shown:
            st.shown[-1].closed = True

    def select(self, frame: int, tracked: list) -> tuple[list, list]:
        """(tracked faces to cover, tracked faces shown) for one frame as it leaves the look-back."""
        from .tracking import UNCONFIRMED

        cover, shown = [], []
        for tf in tracked:
            st = self.tracks.get(tf.track_id)
            stretch = st.interval_at(frame) if st is not None and tf.face.score != UNCONFIRMED else None
            if stretch is not None and not self._contested(tf.track_id, stretch, tracked):
                shown.append(tf)
                st.frames_shown += 1
            else:
                cover.append(tf)
        return cover, shown

    def _contested(self, track_id: int, stretch: _Shown, tracked: list) -> bool:
        """Another track in this frame has come within `separation` of this track's person."""
        limit = stretch.worst + self.matcher.separation
        for tf in tracked:
            other = self.tracks.get(tf.track_id)
            if tf.track_id != track_id and other is not None and other.nearest is not None and other.nearest[stretch.identity] < limit:
                return True
        return False

    def report(self) -> list[dict]:
        """One entry per track that was shown in some frame: for the JSON audit trail."""
        out = []
        for tid, st in sorted(self.tracks.items()):
            if st.frames_shown:
                d = np.array(st.distances)
                out.append({
                    "track": tid, "reference": st.shown[0].reference, "frames_shown": st.frames_shown,
                    "first_frame": st.shown[0].start, "samples": len(d),
                    "distance_max": round(float(d.max()), 4), "distance_median": round(float(np.median(d)), 4),
                })
        return out
