"""The Python API: `anonymize(image)` for one-off use, `Anonymizer` to reuse loaded models."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields, replace
from typing import Iterable, overload

import numpy as np
from PIL import Image

from .anonymizers import METHODS as COVER_METHODS
from .anonymizers import ClassicCover, CoverSettings
from .audit import CenterFace, FaceAudit
from .boxes import BOXES_MODES, merge_boxes, to_faces
from .detection import DEFAULT_THRESHOLD, Face, FaceDetector
from .files import FileOptions, FileResult
from .files import process_file as _process_file
from .generator import FaceGenerator
from .generator import default_model_path as generator_path
from .media import DEFAULT_MAX_PIXELS, Picture, to_pil, to_rgb

#: Every method: "synth" paints a new face, the others cover the face.
METHODS = ("synth", *COVER_METHODS)
#: Paint new faces when the generator's weights are installed (they ship with
#: the package); blur where they have been removed.
DEFAULT_METHOD = "synth" if generator_path().exists() else "blur"

_SETTINGS = {f.name for f in fields(CoverSettings)}


@dataclass
class Covered:
    """One picture covered: the image, the faces covered (ours and any given boxes), the
    faces the audit caught and blurred, and, when consent is on, the kept faces'
    decisions (None when no `keep` was given)."""

    image: np.ndarray
    faces: list[Face]
    caught: list[Face]
    kept: list | None = None


class Anonymizer:
    """Detects and covers every face; load once, call many times.

    >>> anon = Anonymizer()                    # synth: paints a face of nobody
    >>> anon = Anonymizer(method="pixelate", blocks=6)
    >>> out = anon.anonymize(rgb_array)        # numpy RGB (or BGR with bgr=True)
    >>> out = anon.anonymize(Image.open(p))    # PIL in, PIL out (same mode)

    Covering options (`mask_scale`, `shape`, `feather`, `blur_strength`,
    `blocks`, `color`, `synth_min_size`, `synth_min_score`) are the fields of
    `CoverSettings`, with its defaults. The method is a strategy with one shape,
    `cover_faces(image, faces, identities)`: `SynthCover` paints, `ClassicCover`
    blurs, pixelates or fills; this class only picks one and detects.

    `tier` (synth): "auto" paints single pictures with the 128-px quality
    generator and streams (`cover_faces` with track `identities`: video, live)
    with the 64-px fast one; "fast" or "quality" use that one for everything.
    `generator` overrides it: an ONNX file or a loaded `FaceGenerator` for
    everything, or a dict tier → FaceGenerator (shared between Anonymizers).

    `audit` (on by default): a second, independent detector (CenterFace) checks
    every image covered by `anonymize` / `process_file` and blurs any face left
    uncovered (`anonyface.audit`); `cover_faces` alone does not audit.

    `threads`: onnxruntime's intra-op threads for each model (None: its default,
    every core); several Anonymizers sharing a machine (Ray workers) take one each.
    `keep` (optional extra `anonyface[keep]`): reference photos (paths, RGB arrays or
    PIL images), one face each, of people who consented; a face that face
    recognition matches to one of them, clearly, is left untouched, every other
    face is covered (`anonyface.consent`, docs/consent.md). `keep_threshold`
    above 0.6 needs `unsafe`. Reference problems raise `consent.ReferenceError`,
    a missing recognizer `consent.ConsentUnavailable`, before anything is covered.
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        threshold: float = DEFAULT_THRESHOLD,
        seed: int | None = None,
        generator: str | os.PathLike | FaceGenerator | dict | None = None,
        tier: str = "auto",
        detector: FaceDetector | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        settings: CoverSettings | None = None,
        audit: bool | FaceAudit = True,
        unsafe: bool = False,
        threads: int | None = None,
        keep: Iterable | None = None,
        keep_threshold: float | None = None,
        **options,
    ) -> None:
        unknown = set(options) - _SETTINGS
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; covering options are {', '.join(sorted(_SETTINGS))}")
        self.settings = replace(settings or CoverSettings(), **options)
        problems = self.settings.unsafe_choices(threshold)
        if problems and not unsafe:
            raise ValueError("; ".join(problems) + " (pass unsafe=True / --unsafe if you mean it)")
        self.seed = seed
        self.max_pixels = max_pixels
        from .generator import TIERS

        if tier not in TIERS:
            raise ValueError(f"unknown generator tier {tier!r}; choose from {', '.join(TIERS)}")
        self._generator_model = generator
        self.tier = tier
        self._threads = threads
        self._strategies: dict = {}
        self.set_method(method)
        self.detector = detector or FaceDetector(threshold=threshold, threads=threads)
        self.audit = (FaceAudit(CenterFace(threads=threads)) if audit is True else audit) or None
        self.consent = None
        if keep is not None:
            self.consent = _consent(list(keep), keep_threshold, self.detector, max_pixels, unsafe)

    @property
    def method(self) -> str:
        return self.strategy.method

    def set_method(self, method: str) -> None:
        """Switch method on a loaded Anonymizer (live video); the generator is
        loaded the first time "synth" is chosen and kept, with its identities."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if method not in self._strategies:
            if method == "synth":
                from .generator import synth_cover

                # loaded generators are shared (the web server's models load once per process)
                self._strategies[method] = synth_cover(self._generator_model, self.tier, self.settings, self.seed,
                                                       self._threads)
            else:
                self._strategies[method] = ClassicCover(method, self.settings)
        self.strategy = self._strategies[method]

    def reroll(self) -> None:
        """New fake identities for every person from now on (live video: a key press)."""
        synth = self._strategies.get("synth")
        if synth is not None:
            synth.reroll()

    def detect(self, image: np.ndarray | Image.Image) -> list[Face]:
        """Faces in an RGB image (numpy or PIL)."""
        rgb, _ = _as_rgb(image, bgr=False)
        return self.detector.detect(rgb)

    def cover_faces(self, rgb: np.ndarray, faces: list[Face], identities: list[int] | None = None) -> np.ndarray:
        """A copy of `rgb` with each of `faces` covered.

        `identities` (one int per face, e.g. a video track id) keeps a person's
        fake face the same across calls; covering methods that paint no face
        ignore it.
        """
        return self.strategy.cover_faces(rgb, faces, identities)

    @overload
    def anonymize(self, image: np.ndarray, bgr: bool = False) -> np.ndarray: ...
    @overload
    def anonymize(self, image: Image.Image, bgr: bool = False) -> Image.Image: ...

    def anonymize(self, image, bgr: bool = False, boxes=None, boxes_mode: str = "add", keep_boxes=None):
        """Return a copy of `image` with every face covered (but those `keep` matched);
        the input is untouched.

        `boxes`: faces you already have (`Face`s, (x1, y1, x2, y2) boxes, or dicts as
        `--json` writes them), covered too; `boxes_mode` "add" (default: with our
        detector's, duplicates merged) or "only" (instead of our detector; the audit
        still checks the output unless `audit=False`). `keep_boxes`: faces chosen by hand
        to keep in this picture (see `cover`)."""
        out, _ = self.anonymize_with_faces(image, bgr=bgr, boxes=boxes, boxes_mode=boxes_mode, keep_boxes=keep_boxes)
        return out

    def anonymize_with_faces(self, image, bgr: bool = False, boxes=None, boxes_mode: str = "add", keep_boxes=None):
        """Like `anonymize`, and also return the faces that were covered (ours and the
        given boxes, then any the audit caught)."""
        rgb, restore = _as_rgb(image, bgr)
        c = self.cover(rgb, boxes, boxes_mode, keep_boxes)
        return restore(c.image), c.faces + c.caught

    __call__ = anonymize

    def cover_image(self, rgb: np.ndarray, boxes=None, boxes_mode: str = "add") -> tuple[np.ndarray, list[Face], list[Face]]:
        """(covered copy, faces covered, faces the audit caught and blurred)."""
        c = self.cover(rgb, boxes, boxes_mode)
        return c.image, c.faces, c.caught

    def cover(self, rgb: np.ndarray, boxes=None, boxes_mode: str = "add", keep_boxes=None) -> Covered:
        """Detect (and/or take `boxes`), decide consent, cover, audit: the whole photo path.

        A kept face is only left out of the faces to cover: an overlapping face that is
        not kept is still covered, over it if need be. The audit blurs every face it
        finds at no covered place, unless it is one of the kept faces (same place).

        `keep_boxes`: faces a person chose to keep by pointing at them in this very
        picture (boxes, e.g. the outlines a web page shows and the user clicks): the
        detection overlapping each (IoU ≥ 0.5) is kept, without face recognition.

        With a seed, the photo's new faces are drawn from (seed, its pixels): the same
        photo gives the same file whatever else is in the batch, and in whichever order
        (a resumed run, a Ray cluster, the web page)."""
        if boxes_mode not in BOXES_MODES:
            raise ValueError(f"boxes_mode must be one of {', '.join(BOXES_MODES)}, got {boxes_mode!r}")
        synth = self._strategies.get("synth")
        if synth is not None and synth.seed is not None:
            pixels = np.ascontiguousarray(rgb)
            synth.reseed(repr(pixels.shape).encode() + hashlib.sha256(pixels).digest())
        given = to_faces(boxes, rgb.shape[1], rgb.shape[0]) if boxes is not None else []
        found = [] if boxes is not None and boxes_mode == "only" else self.detector.detect(rgb)
        faces = merge_boxes(found, given)
        kept = None
        if keep_boxes:
            from .consent import Decision, chosen

            picked = chosen(faces, keep_boxes)
            kept = [Decision(f, True, None, "chosen by hand") for f, p in zip(faces, picked) if p]
            faces = [f for f, p in zip(faces, picked) if not p]
        if self.consent is not None:
            decisions = self.consent.decide(rgb, faces)
            kept = (kept or []) + [d for d in decisions if d.kept]
            faces = [d.face for d in decisions if not d.kept]
        out = self.cover_faces(rgb, faces)
        if self.audit is None:
            return Covered(out, faces, [], kept)
        caught = self.audit.leaks(out, faces)
        if kept:
            from .consent import in_kept_place

            caught = [f for f in caught if not in_kept_place(f, kept)]
        if caught:
            out = ClassicCover("blur", self.settings).cover_faces(out, caught)
        return Covered(out, faces, caught, kept)

    def process_picture(self, picture: Picture, boxes=None, boxes_mode: str = "add") -> tuple[Image.Image, list[Face], list[Face]]:
        """(anonymized image in the photo's own mode, faces covered, faces the audit caught)."""
        out, faces, caught = self.cover_image(picture.rgb, boxes, boxes_mode)
        return to_pil(picture, out), faces, caught

    def process_file(
        self,
        source: str | os.PathLike,
        output: str | os.PathLike,
        keep_metadata: bool = False,
        overwrite_input: bool = False,
        quality: int = 95,
    ) -> FileResult:
        """Anonymize one photo or video file into `output`, atomically. Raises on failure,
        and then nothing is written (`anonyface.files` has the options for video)."""
        opts = FileOptions(keep_metadata=keep_metadata, overwrite_input=overwrite_input, quality=quality)
        return _process_file(self, source, output, opts)


def _consent(keep: list, threshold: float | None, detector: FaceDetector, max_pixels: int, unsafe: bool):
    """The consent matcher for `keep` (checked: a threshold above dlib's "same person"
    needs `unsafe`)."""
    from . import consent

    if not keep:
        raise consent.ReferenceError("keep is empty: give at least one reference photo")
    t = consent.KEEP_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 < t <= 2.0:
        raise ValueError(f"keep_threshold must be in (0, 2], got {t}")
    if t > consent.MAX_SAFE_THRESHOLD and not unsafe:
        raise ValueError(f"keep_threshold {t:g} is above {consent.MAX_SAFE_THRESHOLD:g}, where strangers are kept "
                         "(docs/consent.md) (pass unsafe=True / --unsafe if you mean it)")
    return consent.ConsentMatcher.from_sources(keep, detector, threshold=t, max_pixels=max_pixels)


def _as_rgb(image, bgr: bool):
    """(RGB uint8 array, function that turns an RGB result back into the caller's type)."""
    if isinstance(image, Image.Image):
        src = image
        rgb, alpha = to_rgb(src)
        picture = Picture(rgb, alpha, src, "PNG")
        return rgb, lambda out: to_pil(picture, out)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), lambda out: out[..., 0].copy()
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    alpha = arr[..., 3] if arr.shape[2] == 4 else None
    rgb = np.ascontiguousarray(arr[..., 2::-1] if bgr else arr[..., :3])

    def restore(out: np.ndarray) -> np.ndarray:
        if bgr:
            out = out[..., ::-1]
        if alpha is not None:
            out = np.dstack([out, alpha])
        return np.ascontiguousarray(out)

    return rgb, restore


_cache: dict[tuple, Anonymizer] = {}


def anonymize(image, method: str = DEFAULT_METHOD, bgr: bool = False, boxes=None, boxes_mode: str = "add", **options):
    """Cover every face in `image` (numpy RGB/BGR/grey/RGBA array or PIL image).

    Models are loaded on first use and kept for later calls with the same options.
    Options are those of `Anonymizer` (threshold, mask_scale, shape, blocks, keep, ...);
    `boxes` / `boxes_mode` as in `Anonymizer.anonymize`. With `keep`, the references
    are loaded for each call (build an `Anonymizer(keep=...)` to load them once).
    """
    if "keep" in options:
        return Anonymizer(method=method, **options).anonymize(image, bgr=bgr, boxes=boxes, boxes_mode=boxes_mode)
    key = (method, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())))
    anon = _cache.get(key)
    if anon is None:
        anon = _cache[key] = Anonymizer(method=method, **options)
    return anon.anonymize(image, bgr=bgr, boxes=boxes, boxes_mode=boxes_mode)
