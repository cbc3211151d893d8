"""The face generator at inference: crop → erase → generate → paste back.

Runs the exported generator (ONNX, see training/export.py for its interface)
with onnxruntime. The crops use the same geometry as the data set builder
(`crop_face` with CROP_GROW, `erase_box`), so the generator sees at inference
exactly the framing it was trained on. Only the erased area is pasted back,
feathered *inside* the erased area and colour-matched to its surroundings, so
the face box itself is always fully replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .anonymizers import CoverSettings, cover
from .detection import Face
from .geometry import CROP_GROW, Crop, box_iou, crop_face, erase_box, expand_box, paste_face, warp_to_crop
from .runtime import model_path, open_session

MODEL_FILE = "generator.onnx"


def default_model_path() -> Path:
    return model_path(MODEL_FILE)


class GeneratorUnavailable(RuntimeError):
    """No generator weights are installed (or they cannot be loaded)."""


@dataclass
class Prepared:
    """One face made ready for the generator."""

    crop: Crop
    erase: tuple[int, int, int, int]  # erased area, crop pixels
    inner: tuple[int, int, int, int]  # the face box itself, crop pixels (always fully replaced)
    landmarks: np.ndarray  # crop coordinates normalised to [0, 1]


class FaceGenerator:
    """Paints new faces for a batch of detected faces of one image."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None) -> None:
        path = Path(model or default_model_path())
        if not path.exists():
            raise GeneratorUnavailable(
                f"no generator weights at {path}; use a covering method (blur, pixelate, solid)"
            )
        try:
            self.session = open_session(path, threads)
        except Exception as e:  # a damaged file must not crash a batch later
            raise GeneratorUnavailable(f"cannot load generator {path}: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.size = int(meta.get("size", self.session.get_inputs()[0].shape[-1]))
        self.zdim = int(meta.get("zdim", self.session.get_inputs()[4].shape[-1]))
        self.path = path

    def prepare(self, image: np.ndarray, face: Face) -> Prepared:
        crop = crop_face(image, face.box, self.size)
        ex = erase_box(crop, face.box)
        b = crop.to_crop(np.array([[face.box[0], face.box[1]], [face.box[2], face.box[3]]]))
        inner = (int(np.floor(b[0, 0])), int(np.floor(b[0, 1])), int(np.ceil(b[1, 0])), int(np.ceil(b[1, 1])))
        lm = crop.to_crop(face.landmarks) / self.size
        return Prepared(crop, ex, inner, lm.astype(np.float32))

    def generate(self, prepared: list[Prepared], z: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (N, S, S, 3) for the prepared faces, with latents z (N, zdim)."""
        n, s = len(prepared), self.size
        image = np.empty((n, 3, s, s), np.float32)
        erase = np.zeros((n, 1, s, s), np.float32)
        pad = np.empty((n, 1, s, s), np.float32)
        for i, p in enumerate(prepared):
            image[i] = p.crop.pixels.transpose(2, 0, 1) / 127.5 - 1.0
            x1, y1, x2, y2 = p.erase
            erase[i, 0, y1:y2, x1:x2] = 1.0
            pad[i, 0] = ~p.crop.valid
        # The privacy guarantee, enforced here as well as inside the model:
        # the erased pixels never reach the generator.
        image *= 1.0 - erase
        landmarks = np.stack([p.landmarks for p in prepared]).astype(np.float32)
        out = self.session.run(
            None, {"image": image, "erase": erase, "pad": pad, "landmarks": landmarks, "z": z.astype(np.float32)}
        )[0]
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("generator produced non-finite values")
        return np.clip((out.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def paste(self, image: np.ndarray, p: Prepared, generated: np.ndarray, claimed: np.ndarray | None = None) -> None:
        """Blend a generated crop into `image` inside its erased area, in place.

        Pixels in `claimed` (bool, image-sized: already repainted faces) are
        left alone, so a later face never overwrites an earlier one.
        """
        alpha = paste_alpha(self.size, p.erase, p.inner)
        patch = match_colour(generated, p.crop.pixels, p.erase, p.inner)
        if claimed is not None:
            alpha = alpha * (1.0 - np.clip(warp_to_crop(claimed.astype(np.float32), p.crop), 0, 1))
        paste_face(image, p.crop, patch, alpha)


def paste_alpha(size: int, erase: tuple[int, int, int, int], inner: tuple[int, int, int, int]) -> np.ndarray:
    """1 over the face box, ramping to 0 at the edge of the erased area (crop pixels)."""
    x1, y1, x2, y2 = erase
    ix1, iy1, ix2, iy2 = inner
    xs = np.arange(size, dtype=np.float32) + 0.5
    ys = xs[:, None]

    def ramp(v, lo, hi, ilo, ihi):
        a = np.ones_like(v)
        a = np.where(v < ilo, np.clip((v - lo) / max(ilo - lo, 1), 0, 1), a)
        a = np.where(v > ihi, np.clip((hi - v) / max(hi - ihi, 1), 0, 1), a)
        return np.where((v < lo) | (v > hi), 0.0, a)

    a = ramp(xs[None, :], x1, x2, ix1, ix2) * ramp(ys, y1, y2, iy1, iy2)
    return a.astype(np.float32)


def match_colour(gen: np.ndarray, src: np.ndarray, erase, inner, band: int = 3) -> np.ndarray:
    """Shift the generated crop's colour so its erased area meets the surroundings without a step.

    The offset is the mean difference, over a thin band just outside the erased
    area, between the original crop and the generated one (both are context
    there, so any difference is the generator's colour error); it is applied
    in full at the edge and fades out towards the face centre.
    """
    s = gen.shape[0]
    x1, y1, x2, y2 = erase
    outer = np.zeros((s, s), bool)
    outer[max(0, y1 - band) : min(s, y2 + band), max(0, x1 - band) : min(s, x2 + band)] = True
    outer[y1:y2, x1:x2] = False
    if outer.sum() < 8:
        return gen
    diff = (src[outer].astype(np.float32) - gen[outer].astype(np.float32)).mean(axis=0)
    out = gen.astype(np.float32) + diff
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlap_free_batches(faces: list[Face]) -> list[list[int]]:
    """Split faces into batches in which no face's crop contains another's face box.

    Faces in one batch are generated together; a face whose crop would show a
    neighbour waits for a later batch, by which time that neighbour is already
    a new face. Largest faces first.
    """
    crops = [expand_box(f.box, CROP_GROW, square=True) for f in faces]

    def conflict(i: int, j: int) -> bool:
        return box_iou(crops[i], faces[j].box) > 0 or box_iou(crops[j], faces[i].box) > 0

    batches: list[list[int]] = []
    for i in sorted(range(len(faces)), key=lambda k: -faces[k].width * faces[k].height):
        # The first batch with no member in i's crop (or i in theirs).
        for batch in batches:
            if not any(conflict(i, j) for j in batch):
                batch.append(i)
                break
        else:
            batches.append([i])
    return batches


class SynthCover:
    """Painting new faces as a covering strategy: `cover_faces(image, faces, identities)`,
    the same shape as `anonymizers.ClassicCover`.

    Owns how synthesis falls back (faces too small to paint are pixelated,
    uncertain detections blurred, and a face whose synthesis fails is blurred:
    never left), which faces are generated together (`overlap_free_batches`),
    the claim mask (no painted face is overwritten by a later one) and the
    latents: one per identity (a video track keeps its fake face), drawn from
    (`identity_base`, identity), so `reroll` gives every person a new face.
    """

    method = "synth"

    def __init__(self, generator: FaceGenerator, settings: CoverSettings | None = None, seed: int | None = None) -> None:
        self.generator = generator
        self.settings = settings or CoverSettings()
        self._rng = np.random.default_rng(seed)
        self.identity_base = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))

    def reroll(self) -> None:
        """New fake identities for every person from now on (live video: a key press)."""
        self.identity_base = int(np.random.default_rng().integers(2**31))

    def latents(self, n: int, identities: list[int] | None) -> np.ndarray:
        zdim = self.generator.zdim
        if identities is None:
            return self._rng.standard_normal((n, zdim)).astype(np.float32)
        return np.stack(
            [np.random.default_rng((self.identity_base, int(k))).standard_normal(zdim) for k in identities]
        ).astype(np.float32)

    def _fallback(self, image: np.ndarray, face: Face, method: str) -> None:
        cover(image, self.settings.region(face), method, self.settings)

    def cover_faces(self, image: np.ndarray, faces: list[Face], identities: list[int] | None = None) -> np.ndarray:
        """A copy of `image` with a new face painted over each of `faces` (or covered, see above)."""
        out = image.copy()
        todo = []
        for i, f in enumerate(faces):
            if min(f.width, f.height) < self.settings.synth_min_size:
                self._fallback(out, f, "pixelate")
            elif f.score < self.settings.synth_min_score:
                self._fallback(out, f, "blur")
            else:
                todo.append(i)
        if not todo:
            return out
        ids = [identities[i] for i in todo] if identities is not None else None
        z_all = self.latents(len(todo), ids)
        claimed = np.zeros(out.shape[:2], bool)
        subset = [faces[i] for i in todo]
        gen = self.generator
        for batch in overlap_free_batches(subset):
            try:
                prepared = [gen.prepare(out, subset[k]) for k in batch]
                crops = gen.generate(prepared, z_all[batch])
            except Exception:  # fail closed: a face we cannot paint is blurred, never left
                for k in batch:
                    self._fallback(out, subset[k], "blur")
                continue
            for p, c in zip(prepared, crops):
                gen.paste(out, p, c, claimed)
                _claim(claimed, p)
        return out


def _claim(claimed: np.ndarray, p: Prepared) -> None:
    """Mark `p`'s erased area (image pixels) as repainted."""
    ex = p.crop.to_image(np.array([[p.erase[0], p.erase[1]], [p.erase[2], p.erase[3]]], np.float32))
    h, w = claimed.shape
    x1, y1 = max(0, int(ex[0, 0])), max(0, int(ex[0, 1]))
    x2, y2 = min(w, int(np.ceil(ex[1, 0]))), min(h, int(np.ceil(ex[1, 1])))
    claimed[y1:y2, x1:x2] = True
