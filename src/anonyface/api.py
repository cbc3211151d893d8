"""The Python API: `anonymize(image)` for one-off use, `Anonymizer` to reuse loaded models."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image

from .anonymizers import METHODS as COVER_METHODS
from .anonymizers import CoverSettings, cover
from .detection import DEFAULT_THRESHOLD, Face, FaceDetector
from .generator import default_model_path as generator_path
from .geometry import face_region

#: Every method: "synth" paints a new face, the others cover the face.
METHODS = ("synth", *COVER_METHODS)
#: Paint new faces when the generator's weights are installed (they ship with
#: the package); blur where they have been removed.
DEFAULT_METHOD = "synth" if generator_path().exists() else "blur"
from .media import DEFAULT_MAX_PIXELS, Picture, encode_image, format_for, read_image, to_pil, write_atomic


@dataclass
class FileResult:
    """What happened to one photo: where it went and which faces were covered."""

    source: str
    output: str | None
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "file": self.source,
            "output": self.output,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "faces": [f.to_dict() for f in self.faces],
            "error": self.error,
        }


class Anonymizer:
    """Detects and covers every face; load once, call many times.

    >>> anon = Anonymizer()                    # synth: paints a face of nobody
    >>> anon = Anonymizer(method="pixelate")
    >>> out = anon.anonymize(rgb_array)        # numpy RGB (or BGR with bgr=True)
    >>> out = anon.anonymize(Image.open(p))    # PIL in, PIL out (same mode)
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        threshold: float = DEFAULT_THRESHOLD,
        mask_scale: float = 1.3,
        shape: str = "ellipse",
        feather: float = 0.1,
        blocks: int = 8,
        color: tuple[int, int, int] = (0, 0, 0),
        blur_strength: float = 0.125,
        seed: int | None = None,
        synth_min_size: float = 24.0,
        synth_min_score: float = 0.5,
        generator: str | os.PathLike | None = None,
        detector: FaceDetector | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if shape not in ("ellipse", "box"):
            raise ValueError("shape must be 'ellipse' or 'box'")
        if mask_scale <= 0:
            raise ValueError("mask_scale must be positive")
        self.settings = CoverSettings("blur", blur_strength, blocks, tuple(color))
        self.seed = seed
        self.synth_min_size = synth_min_size
        self.synth_min_score = synth_min_score
        self.generator = None
        self._generator_model = generator
        self.set_method(method)
        self._rng = np.random.default_rng(seed)
        self.identity_base = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
        self.mask_scale = mask_scale
        self.shape = shape
        self.feather = max(0.0, feather)
        self.max_pixels = max_pixels
        self.detector = detector or FaceDetector(threshold=threshold)

    @property
    def method(self) -> str:
        return self._method

    def set_method(self, method: str) -> None:
        """Switch method on a loaded Anonymizer (live video); the generator is
        loaded the first time "synth" is chosen and kept."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if method == "synth" and self.generator is None:
            from .generator import FaceGenerator

            self.generator = FaceGenerator(self._generator_model)
        if method != "synth":
            self.settings = replace(self.settings, method=method)
        self._method = method

    def reroll(self) -> None:
        """New fake identities for every person from now on (live video: a key press)."""
        self.identity_base = int(np.random.default_rng().integers(2**31))

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
        out = rgb.copy()
        if self._method != "synth":
            for face in faces:
                self._cover(out, face, self.settings)
            return out
        return self._synthesize(out, faces, identities)

    def _cover(self, image: np.ndarray, face: Face, settings: CoverSettings) -> None:
        region = face_region(face.box, face.landmarks, self.mask_scale, self.shape, self.feather)
        cover(image, region, settings)

    def _latents(self, n: int, identities: list[int] | None) -> np.ndarray:
        zdim = self.generator.zdim
        if identities is None:
            return self._rng.standard_normal((n, zdim)).astype(np.float32)
        return np.stack(
            [np.random.default_rng((self.identity_base, int(k))).standard_normal(zdim) for k in identities]
        ).astype(np.float32)

    def _synthesize(self, out: np.ndarray, faces: list[Face], identities: list[int] | None) -> np.ndarray:
        """Paint a new face over each face; fall back to covering where synthesis
        would be poor or unsure: pixelate faces too small to paint, blur
        uncertain detections and any face whose synthesis fails."""
        from .generator import overlap_free_batches

        gen = self.generator
        pixelate = CoverSettings("pixelate", self.settings.blur_strength, self.settings.blocks, self.settings.color)
        blur = CoverSettings("blur", self.settings.blur_strength, self.settings.blocks, self.settings.color)
        todo = []
        for i, f in enumerate(faces):
            if min(f.width, f.height) < self.synth_min_size:
                self._cover(out, f, pixelate)
            elif f.score < self.synth_min_score:
                self._cover(out, f, blur)
            else:
                todo.append(i)
        if not todo:
            return out
        ids = [identities[i] for i in todo] if identities is not None else None
        z_all = self._latents(len(todo), ids)
        claimed = np.zeros(out.shape[:2], bool)
        subset = [faces[i] for i in todo]
        for batch in overlap_free_batches(subset):
            try:
                prepared = [gen.prepare(out, subset[k]) for k in batch]
                crops = gen.generate(prepared, z_all[batch])
            except Exception:  # fail closed: a face we cannot paint is blurred, never left
                for k in batch:
                    self._cover(out, subset[k], blur)
                continue
            for k, p, c in zip(batch, prepared, crops):
                gen.paste(out, p, c, claimed)
                ex = p.crop.to_image(np.array([[p.erase[0], p.erase[1]], [p.erase[2], p.erase[3]]], np.float32))
                h, w = claimed.shape
                x1, y1 = max(0, int(ex[0, 0])), max(0, int(ex[0, 1]))
                x2, y2 = min(w, int(np.ceil(ex[1, 0]))), min(h, int(np.ceil(ex[1, 1])))
                claimed[y1:y2, x1:x2] = True
        return out

    @overload
    def anonymize(self, image: np.ndarray, bgr: bool = False) -> np.ndarray: ...
    @overload
    def anonymize(self, image: Image.Image, bgr: bool = False) -> Image.Image: ...

    def anonymize(self, image, bgr: bool = False):
        """Return a copy of `image` with every face covered; the input is untouched."""
        out, _ = self.anonymize_with_faces(image, bgr=bgr)
        return out

    def anonymize_with_faces(self, image, bgr: bool = False):
        """Like `anonymize`, and also return the faces that were covered."""
        rgb, restore = _as_rgb(image, bgr)
        faces = self.detector.detect(rgb)
        return restore(self.cover_faces(rgb, faces)), faces

    __call__ = anonymize

    def process_picture(self, picture: Picture) -> tuple[Image.Image, list[Face]]:
        faces = self.detector.detect(picture.rgb)
        return to_pil(picture, self.cover_faces(picture.rgb, faces)), faces

    def process_file(
        self,
        source: str | os.PathLike,
        output: str | os.PathLike,
        keep_metadata: bool = False,
        overwrite_input: bool = False,
        quality: int = 95,
    ) -> FileResult:
        """Anonymize one photo file into `output`, atomically. Raises on failure, and then
        nothing is written."""
        src, dst = Path(source), Path(output)
        if not overwrite_input and dst.exists() and _same_file(src, dst):
            raise ValueError("output would overwrite the input (use --in-place to allow it)")
        picture = read_image(src, self.max_pixels)
        img, faces = self.process_picture(picture)
        fmt = format_for(dst) or picture.format
        write_atomic(dst, encode_image(img, fmt, picture.info, keep_metadata, quality))
        return FileResult(str(src), str(dst), faces, picture.size)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _as_rgb(image, bgr: bool):
    """(RGB uint8 array, function that turns an RGB result back into the caller's type)."""
    if isinstance(image, Image.Image):
        from .media import to_rgb

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


def anonymize(image, method: str = DEFAULT_METHOD, bgr: bool = False, **options):
    """Cover every face in `image` (numpy RGB/BGR/grey/RGBA array or PIL image).

    Models are loaded on first use and kept for later calls with the same options.
    Options are those of `Anonymizer` (threshold, mask_scale, shape, blocks, ...).
    """
    key = (method, tuple(sorted(options.items())))
    anon = _cache.get(key)
    if anon is None:
        anon = _cache[key] = Anonymizer(method=method, **options)
    return anon.anonymize(image, bgr=bgr)
