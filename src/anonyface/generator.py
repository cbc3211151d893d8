"""The face generator at inference: crop → erase → generate → paste back.

Runs the exported generator (ONNX, see training/export.py for its interface)
with onnxruntime. The crops use the same geometry as the data set builder
(`crop_face` with CROP_GROW, `erase_box`), so the generator sees at inference
exactly the framing it was trained on. Only the erased area is pasted back,
feathered *inside* the erased area and colour-matched to its surroundings, so
the face box itself is always fully replaced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .anonymizers import CoverSettings, cover
from .blending import blend_into, colourfulness, saturation_for
from .detection import Face
from .geometry import (CROP_GROW, ERASE_SCALE, Crop, box_iou, crop_face, erase_area, erase_box, expand_box, from_crop,
                       pose_landmarks)
from .runtime import model_path, open_session

MODEL_FILE = "generator.onnx"
#: The generator tiers (docs/generator.md): `fast` (64 px) keeps video and live
#: real time; `quality` (128 px, the fast one grown) paints photos.
TIER_FILES = {"fast": MODEL_FILE, "quality": "generator-quality.onnx"}
#: `auto`: the quality tier for single pictures, the fast tier for streams.
TIERS = ("auto", "fast", "quality")
#: Along a track, each frame's expression is this much the previous one's: a
#: blink (3-4 frames) still shows, the meter's frame-to-frame noise does not.
EXPR_SMOOTH = 0.4


def default_model_path(tier: str = "fast") -> Path:
    return model_path(TIER_FILES[tier])


def load_tiers(tier: str = "auto", threads: int | None = None) -> dict[str, "FaceGenerator"]:
    """The installed generators `tier` asks for, by tier name: `auto` loads the fast tier
    and, when installed, the quality tier; `fast` / `quality` load that one (or raise
    GeneratorUnavailable)."""
    if tier not in TIERS:
        raise ValueError(f"unknown generator tier {tier!r}; choose from {', '.join(TIERS)}")
    if tier != "auto":
        return {tier: FaceGenerator(default_model_path(tier), threads)}
    gens = {}
    for name in ("quality", "fast"):
        if default_model_path(name).exists():
            gens[name] = FaceGenerator(default_model_path(name), threads)
    if not gens:
        FaceGenerator(default_model_path("fast"))  # raises GeneratorUnavailable, naming the file
    return gens


class GeneratorUnavailable(RuntimeError):
    """No generator weights are installed (or they cannot be loaded)."""


@dataclass
class Prepared:
    """One face made ready for the generator."""

    crop: Crop
    erase: tuple[int, int, int, int]  # erased area, crop pixels
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
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.size = int(meta.get("size", inputs["image"].shape[-1]))
        self.zdim = int(meta.get("zdim", inputs["z"].shape[-1]))
        # Expression conditions (anonyface.expression): models trained with them have the input.
        self.edim = int(meta.get("edim", inputs["expression"].shape[-1])) if "expression" in inputs else 0
        self.path = path

    def prepare(self, image: np.ndarray, face: Face) -> Prepared:
        crop = crop_face(image, face.box, self.size)
        lm = crop.to_crop(face.landmarks) / self.size
        return Prepared(crop, erase_box(crop, face.box), lm.astype(np.float32))

    def generate(self, prepared: list[Prepared], z: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """uint8 RGB crops (N, S, S, 3) for the prepared faces, with latents z (N, zdim)
        and, for a model with expression conditions, their scalars (N, edim; None: neutral)."""
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
        feed = {"image": image, "erase": erase, "pad": pad, "landmarks": landmarks, "z": z.astype(np.float32)}
        if self.edim:
            feed["expression"] = (
                np.zeros((n, self.edim), np.float32) if expression is None else np.asarray(expression, np.float32)
            )
        out = self.session.run(None, feed)[0]
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("generator produced non-finite values")
        return np.clip((out.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)

    def paint(self, image: np.ndarray, p: Prepared, generated: np.ndarray, rect: tuple[int, int, int, int], saturation: float = 1.0) -> np.ndarray:
        """The new face for the image rectangle `rect` (its erase area): the generated crop
        resampled there and joined to `image` around it without a seam (`blending`)."""
        return blend_into(image, from_crop(generated, p.crop, rect), rect, saturation)


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

    For a generator with expression conditions it measures each face's
    expression (`anonyface.expression`: five scalars, never pixels) on the
    original image, smoothed along a track so the new face talks and blinks
    with the person without jitter; neutral when the meter is missing or fails.
    """

    method = "synth"

    def __init__(self, generator: FaceGenerator, settings: CoverSettings | None = None, seed: int | None = None) -> None:
        self.generator = generator
        self.settings = settings or CoverSettings()
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.identity_base = int(seed) if seed is not None else int(np.random.default_rng().integers(2**31))
        self._meter = None  # ExpressionMeter, made on first use (generators with expression conditions)
        self._meter_tried = False
        self._expr_track: dict[int, np.ndarray] = {}

    def reroll(self) -> None:
        """New fake identities for every person from now on (live video: a key press)."""
        self.identity_base = int(np.random.default_rng().integers(2**31))

    def reseed(self, key: bytes) -> None:
        """With a seed: draw the next faces from (seed, `key`) afresh, so that a photo's
        new faces depend on the photo alone, not on which photos came before it in a
        batch (a resumed or distributed batch writes the same files). No seed: nothing."""
        if self.seed is not None:
            words = np.frombuffer(hashlib.sha256(key).digest()[:16], dtype=np.uint32)
            self._rng = np.random.default_rng([int(self.seed), *map(int, words)])

    def latents(self, n: int, identities: list[int] | None) -> np.ndarray:
        zdim = self.generator.zdim
        if identities is None:
            return self._rng.standard_normal((n, zdim)).astype(np.float32)
        return np.stack(
            [np.random.default_rng((self.identity_base, int(k))).standard_normal(zdim) for k in identities]
        ).astype(np.float32)

    def expressions(self, image: np.ndarray, faces: list[Face], identities: list[int] | None) -> np.ndarray | None:
        """(N, edim) expression scalars of `faces` measured on the original `image`, or
        None (neutral) when the generator takes none or no meter is available."""
        edim = self.generator.edim
        if not edim or not faces or not self.settings.synth_expression:
            return None
        if not self._meter_tried:
            self._meter_tried = True
            from .expression import expression_meter

            self._meter = expression_meter()
        if self._meter is None:
            return None
        try:
            e = np.asarray(self._meter.measure(image, faces), np.float32).reshape(len(faces), edim)
        except Exception:  # neutral conditions, never an error and never an uncovered face
            return None
        e = np.where(np.isfinite(e), e, 0.0).astype(np.float32)
        if identities is not None:
            for i, k in enumerate(identities):
                prev = self._expr_track.get(int(k))
                if prev is not None:
                    e[i] = EXPR_SMOOTH * prev + (1 - EXPR_SMOOTH) * e[i]
                self._expr_track[int(k)] = e[i].copy()
            if len(self._expr_track) > 4096:  # long videos: forget the oldest tracks
                for k in list(self._expr_track)[:2048]:
                    del self._expr_track[k]
        return e

    def _fallback(self, image: np.ndarray, face: Face, method: str) -> None:
        cover(image, self.settings.region(face), method, self.settings)

    def _paintable(self, face: Face) -> str | None:
        """None when `face` can be painted, else the covering method to use instead."""
        if min(face.width, face.height) < self.settings.synth_min_size:
            return "pixelate"
        if face.score < self.settings.synth_min_score:
            return "blur"
        if not landmarks_fit(face):  # box and landmarks disagree: a paint would land beside the face
            return "blur"
        return None

    def cover_faces(self, image: np.ndarray, faces: list[Face], identities: list[int] | None = None) -> np.ndarray:
        """A copy of `image` with a new face painted over each of `faces` (or covered, see above).

        Every face's erase area is erased in a working copy first, so no generator
        input and no blending boundary ever holds an original face pixel; each face is
        painted from that copy, into it (later neighbours see it as context) and into
        the output, never over a face painted before it.
        """
        out = image.copy()
        h, w = image.shape[:2]
        areas = [erase_area(f.box, w, h) for f in faces]
        work, faces_mask = erase_areas(image, areas)
        todo = []
        for i, f in enumerate(faces):
            method = self._paintable(f)
            if method is None:
                todo.append(i)
            else:
                self._fallback(out, f, method)
        if not todo:
            return out
        ids = [identities[i] for i in todo] if identities is not None else None
        z_all = self.latents(len(todo), ids)
        subset = [faces[i] for i in todo]
        expr_all = self.expressions(image, subset, ids)
        if not self.settings.synth_exact_landmarks:  # the pose, not the person's face shape
            subset = [replace(f, landmarks=pose_landmarks(f.landmarks)) for f in subset]
        saturation = saturation_for(colourfulness(image[::8, ::8], ~faces_mask[::8, ::8]))
        claimed = np.zeros((h, w), bool)
        gen = self.generator
        for batch in overlap_free_batches(subset):
            try:
                prepared = [gen.prepare(work, subset[k]) for k in batch]
                crops = gen.generate(prepared, z_all[batch], None if expr_all is None else expr_all[batch])
            except Exception:  # fail closed: a face we cannot paint is blurred, never left
                for k in batch:
                    self._fallback(out, subset[k], "blur")
                continue
            for k, p, c in zip(batch, prepared, crops):
                x1, y1, x2, y2 = rect = areas[todo[k]]
                if x2 <= x1 or y2 <= y1:
                    continue
                painted = gen.paint(work, p, c, rect, saturation)
                free = ~claimed[y1:y2, x1:x2]
                out[y1:y2, x1:x2][free] = painted[free]
                work[y1:y2, x1:x2][free] = painted[free]
                claimed[y1:y2, x1:x2] = True
        return out


class TieredSynth:
    """synth with a generator per kind of input: single pictures are painted by the
    photo tier (quality), streams — a video's or a webcam's frames, recognised by
    their track `identities` — by the stream tier (fast, real time). Each keeps
    its own identities; re-roll and re-seed reach both."""

    method = "synth"

    def __init__(self, photo: SynthCover, stream: SynthCover) -> None:
        self.photo, self.stream = photo, stream

    @property
    def seed(self) -> int | None:
        return self.photo.seed

    @property
    def generator(self) -> FaceGenerator:
        return self.photo.generator

    @property
    def generators(self) -> dict[str, FaceGenerator]:
        return {"quality": self.photo.generator, "fast": self.stream.generator}

    def reroll(self) -> None:
        self.photo.reroll()
        self.stream.reroll()

    def reseed(self, key: bytes) -> None:
        self.photo.reseed(key)
        self.stream.reseed(key)

    def cover_faces(self, image: np.ndarray, faces: list[Face], identities: list[int] | None = None) -> np.ndarray:
        return (self.photo if identities is None else self.stream).cover_faces(image, faces, identities)


def synth_cover(generator=None, tier: str = "auto", settings: CoverSettings | None = None, seed: int | None = None,
                threads: int | None = None) -> "SynthCover | TieredSynth":
    """The synth strategy for `generator`: None (the installed tiers `tier` asks
    for), a path or loaded FaceGenerator (used for everything), or a mapping
    tier → FaceGenerator (shared, e.g. by the web server's requests)."""
    if generator is None:
        gens = load_tiers(tier, threads)
    elif isinstance(generator, dict):
        gens = dict(generator)
        if tier != "auto" and tier in gens:
            gens = {tier: gens[tier]}
        elif tier != "auto":
            raise GeneratorUnavailable(f"the {tier} generator is not loaded here")
    else:
        gens = {"fast": generator if isinstance(generator, FaceGenerator) else FaceGenerator(generator, threads)}
    photo = gens.get("quality") or gens["fast"]
    stream = gens.get("fast") or gens["quality"]
    if photo is stream:
        return SynthCover(photo, settings, seed)
    return TieredSynth(SynthCover(photo, settings, seed), SynthCover(stream, settings, seed))


def landmarks_fit(face: Face) -> bool:
    """Do the five landmarks lie inside the erase area? A detection whose landmarks
    fall outside its own box is one the generator would paint beside the face."""
    x1, y1, x2, y2 = expand_box(face.box, ERASE_SCALE)
    lm = np.asarray(face.landmarks, np.float64)
    return bool(np.all((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)))


def erase_areas(image: np.ndarray, areas: list[tuple[int, int, int, int]], ring: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(A copy of `image` with every area filled with the mean colour of the pixels
    just around it that lie in no area, a mask of all the areas.) What the generator
    and the blending are allowed to see."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in areas:
        mask[y1:y2, x1:x2] = True
    work = image.copy()
    for x1, y1, x2, y2 in areas:
        if x2 <= x1 or y2 <= y1:
            continue
        ox1, oy1, ox2, oy2 = max(0, x1 - ring), max(0, y1 - ring), min(w, x2 + ring), min(h, y2 + ring)
        around = image[oy1:oy2, ox1:ox2][~mask[oy1:oy2, ox1:ox2]]
        work[y1:y2, x1:x2] = around.mean(axis=0) if len(around) else 0
    return work, mask
