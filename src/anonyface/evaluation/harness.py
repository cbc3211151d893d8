"""The evaluation run: every method on the same inputs, judged by the same independent models.

For each photo, once: decode, find the reference faces with the independent
detectors (`detectors.py`), merge them (`metrics.cluster`), run the project's
detector, align and embed every reference face of at least `MIN_REID_PX`.
Then for each method: cover (or load deface's output), encode exactly as
`Anonymizer.process_file` does, decode the encoded bytes back (what a
recipient sees), and judge that: coverage, re-identification, retention
(the same judge at the same place, IoU ≥ 0.4, every face), seam and lighting
at our erase box (`scene.py`), Fréchet-distance crops, pose; and keep the
largest faces of each set at 100 % for the face sheet.

Methods are names passed to `Anonymizer(method=...)` (blur, pixelate, solid,
and synth as soon as the installed anonyface accepts it), plus two that are
not: ``deface`` (its command line, in its own venv, on the same files) and
``none`` (changes nothing: the harness's own failing case, for tests).
"""

from __future__ import annotations

import inspect
import io
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..detection import DEFAULT_THRESHOLD, FaceDetector
from ..geometry import CROP_GROW, GEN_SIZE, clip_box, crop_face, expand_box
from ..files import FileOptions, encode_output
from ..media import ImageError, Picture, read_image, to_pil
from . import metrics as M
from .detectors import deface_command, make_detectors
from .identity import MIN_REID_PX, FaceEmbedder
from .inputs import Item, collect
from .scene import MIN_SCENE_PX, SceneFace

DEFAULT_METHODS = ("blur", "pixelate", "solid", "synth", "deface")
PSEUDO_METHODS = ("none", "deface")


@dataclass
class EvalConfig:
    inputs: list[str]
    out_dir: Path
    methods: tuple[str, ...] = DEFAULT_METHODS
    detectors: tuple[str, ...] = ("hog", "centerface")
    mmod_max_pixels: int = 60_000
    threshold: float = DEFAULT_THRESHOLD
    seed: int = 0
    sample: int | None = None
    val_inputs: tuple[str, ...] = ()
    split_root: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    fd: bool = True
    pose: bool = True
    memory: bool = True
    metadata: bool = True
    video: bool = True
    video_stride: int = 10
    contact_per_set: int = 3
    sheet_faces: int = 24
    max_miss_crops: int = 48
    quiet: bool = False
    command: str = ""


@dataclass
class MethodResult:
    faces: list[dict] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    feature_meta: list[dict] = field(default_factory=list)
    times: dict = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "cover": 0.0, "encode": 0.0})
    photos: int = 0
    megapixels: float = 0.0
    errors: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class _None:
    """The pseudo-method that changes nothing (every metric must flag it)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector

    def cover_faces(self, rgb, faces, identities=None):
        return rgb.copy()


def _make_method(name: str, detector: FaceDetector, seed: int):
    """An object with `cover_faces`, or raise (ValueError when anonyface does not know the name)."""
    if name == "none":
        return _None(detector)
    from ..api import Anonymizer

    # "synth:fast" / "synth:quality": one generator tier for photos and video alike
    name, _, tier = name.partition(":")
    kwargs = {"method": name, "detector": detector}
    if tier:
        kwargs["tier"] = tier
    if "seed" in inspect.signature(Anonymizer).parameters:
        kwargs["seed"] = seed
    return Anonymizer(**kwargs)


def _log(cfg: EvalConfig, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def _decode(item: Item) -> Picture:
    return read_image(item.path if item.path is not None else item.jpeg)


def _thumb(rgb: np.ndarray, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = height / h
    return cv2.resize(rgb, (max(1, round(w * s)), height), interpolation=cv2.INTER_AREA)


def _needs_upright_copy(item: Item) -> bool:
    """deface reads files without applying EXIF orientation: give it an upright copy then."""
    if item.path is None:
        return False
    try:
        with Image.open(item.path) as im:
            return im.getexif().get(0x0112, 1) not in (1, None) or im.format not in ("JPEG", "PNG")
    except Exception:
        return True


def _run_deface(items: list[Item], work: Path) -> dict:
    """deface's CLI on every photo in one process (model loaded once), timed from outside,
    after one warm-up call that measures its start-up cost."""
    cmd = deface_command()
    if cmd is None:
        return {"error": "deface not installed (anonyface.evaluation.deface)"}
    src = work / "deface-in"
    src.mkdir()
    paths = []
    for i, it in enumerate(items):
        if it.path is not None and not _needs_upright_copy(it):
            dst = src / f"{i:05d}{it.path.suffix.lower()}"
            os.symlink(it.path.resolve(), dst)
        elif it.jpeg is not None:
            dst = src / f"{i:05d}.jpg"
            dst.write_bytes(it.jpeg)
        else:
            dst = src / f"{i:05d}.png"
            Image.fromarray(_decode(it).rgb).save(dst)
        paths.append(dst)
    warm = work / "deface-warm.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(warm)

    def timed(args: list[str]) -> tuple[float, int, int]:
        t = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        return time.perf_counter() - t, os.waitstatus_to_exitcode(status), usage.ru_maxrss

    startup, _, _ = timed([*cmd, str(warm)])
    total, rc, maxrss = timed([*cmd, *map(str, paths)])
    outputs = {it.key: p.with_name(p.stem + "_anonymized" + p.suffix) for it, p in zip(items, paths)}
    return {"outputs": outputs, "wall_s": total, "startup_s": startup, "rc": rc, "peak_rss_mb": maxrss / 1024}


def _encode_roundtrip(picture: Picture, out_rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Encode as a file job would (defaults: same format, quality 95, metadata dropped) and decode back."""
    t = time.perf_counter()
    data = encode_output(to_pil(picture, out_rgb), picture, None, FileOptions())
    dt = time.perf_counter() - t
    back = read_image(data).rgb
    return back, dt


def evaluate(cfg: EvalConfig) -> dict:
    """Run the whole evaluation; returns the results the report is written from."""
    t_start = time.perf_counter()
    inputs = collect(cfg.inputs, cfg.sample, cfg.seed, list(cfg.val_inputs), cfg.split_root, cfg.val_fraction, cfg.split_seed)
    items = inputs.photos
    _log(cfg, f"{len(items)} photos, {len(inputs.videos)} videos")
    for n in inputs.notes:
        _log(cfg, "  " + n)

    detector = FaceDetector(threshold=cfg.threshold)
    judges, judges_missing = make_detectors(list(cfg.detectors), cfg.mmod_max_pixels)
    embedder = FaceEmbedder()
    features = None
    fd_note = None
    if cfg.fd:
        try:
            features = M.FeatureExtractor()
        except Exception as e:  # torch / weights missing: report, do not stop
            fd_note = f"Fréchet distance skipped: {type(e).__name__}: {e}"
            _log(cfg, fd_note)

    methods: dict[str, object] = {}
    unavailable: dict[str, str] = {}
    for name in cfg.methods:
        if name == "deface":
            continue
        try:
            methods[name] = _make_method(name, detector, cfg.seed)
        except ValueError as e:
            unavailable[name] = str(e)
        except Exception as e:  # e.g. a generator whose weights are not there
            unavailable[name] = f"{type(e).__name__}: {e}"
    for name, why in unavailable.items():
        _log(cfg, f"method {name} not evaluated: {why}")

    work = Path(tempfile.mkdtemp(prefix="anonyface-eval-"))
    try:
        deface = None
        if "deface" in cfg.methods:
            _log(cfg, "running deface's command line on all photos ...")
            deface = _run_deface(items, work)
            if "error" in deface:
                unavailable["deface"] = deface["error"]
                deface = None
        names = [m for m in cfg.methods if m in methods or (m == "deface" and deface is not None)]
        results = {m: MethodResult() for m in names}
        originals: list[dict] = []
        contact: list[dict] = []
        misses: list[dict] = []
        contact_count: dict[str, int] = {}
        orig_feats: list[np.ndarray] = []
        orig_feat_meta: list[dict] = []
        pose_orig: list[float] = []
        largest = _LargestFaces(cfg.sheet_faces)

        for idx, item in enumerate(items):
            t_item = time.perf_counter()
            t = time.perf_counter()
            try:
                picture = _decode(item)
            except ImageError as e:
                for r in results.values():
                    r.errors.append(f"{item.key}: {e}")
                continue
            t_decode = time.perf_counter() - t
            rgb = picture.rgb
            h, w = rgb.shape[:2]
            ref_dets = {j.name: j(rgb) for j in judges if getattr(j, "applies", lambda _: True)(rgb)}
            refs = M.cluster(ref_dets)
            t = time.perf_counter()
            ours = detector.detect(rgb)
            t_detect = time.perf_counter() - t

            # Per reference face, computed once: does our detector see it, alignment, crops.
            ref_info: list[_RefFace] = []
            crop_boxes = []
            for ref in refs:
                main = ref.main
                info = _RefFace(round(ref.width, 1), sorted(ref.members), any(ref.matches(_as_det(f)) for f in ours))
                if main.width >= MIN_REID_PX:
                    info.shape = embedder.align(rgb, main.box, main.detector)
                    info.embedding = embedder.embed(rgb, info.shape)
                if ref.width >= M.MIN_CROP_PX:
                    crop_boxes.append((len(ref_info), main.box))
                our = next((f for f in ours if ref.matches(_as_det(f))), None)
                if our is not None and our.width >= MIN_SCENE_PX:
                    info.scene = SceneFace(rgb, our.box)  # seam and lighting reference, at our erase box
                if cfg.pose and our is not None and our.width >= M.MIN_CROP_PX:
                    crop = crop_face(rgb, our.box, GEN_SIZE, CROP_GROW)
                    info.pose = (our.box, crop.to_crop(our.landmarks))
                    pose_orig.append(_pose_error(detector, crop.pixels, info.pose[1]))
                ref_info.append(info)
            orig_rec = {"item": item.key, "set": item.set, "groups": item.groups, "size": [w, h],
                        "faces": [i.to_dict() for i in ref_info],
                        "ours": len(ours), "judges": {k: len(v) for k, v in ref_dets.items()}}
            originals.append(orig_rec)
            batch = [crop_face(rgb, b, GEN_SIZE, CROP_GROW).pixels for _, b in crop_boxes]
            batch_owner = [("orig", None)] * len(batch)

            sheet = largest.candidates(item, rgb, refs, ref_info)
            want_thumb = contact_count.get(item.set, 0) < cfg.contact_per_set and len(refs) > 0
            thumbs = {"original": _thumb(rgb, 200)} if want_thumb else None

            for name in names:
                res = results[name]
                res.photos += 1
                res.megapixels += h * w / 1e6
                if name == "deface":
                    try:
                        out = read_image(deface["outputs"][item.key]).rgb
                    except (ImageError, KeyError) as e:
                        res.errors.append(f"{item.key}: {e}")
                        continue
                    if out.shape != rgb.shape:
                        res.errors.append(f"{item.key}: deface output is {out.shape}, input {rgb.shape}")
                        continue
                else:
                    res.times["decode"] += t_decode
                    res.times["detect"] += t_detect
                    t = time.perf_counter()
                    covered = methods[name].cover_faces(rgb, ours)
                    t_cover = time.perf_counter() - t
                    res.times["cover"] += t_cover
                    out, t_enc = _encode_roundtrip(picture, covered)
                    res.times["encode"] += t_enc
                    bs = res.extra.setdefault("by_set", {}).setdefault(item.set, {"photos": 0, "seconds": 0.0, "megapixels": 0.0})
                    bs["photos"] += 1
                    bs["megapixels"] += h * w / 1e6
                    bs["seconds"] += t_decode + t_detect + t_cover + t_enc
                out_dets = {j: [d.box for d in ds] for j, ds in
                            ((j.name, j(out)) for j in judges if j.name in ref_dets)}
                for ri, (ref, info) in enumerate(zip(refs, ref_info)):
                    judged = {n: M.face_unchanged(rgb, out, d.box) for n, d in ref.members.items()}
                    rec = {
                        "item": item.key, "set": item.set, "groups": item.groups, "face": ri,
                        "width": info.width, "detectors": info.detectors, "ours_found": info.ours_found,
                        "changed": {n: round(j[0], 4) for n, j in judged.items()},
                        "kept": {n: None if j[1] is None else round(j[1], 4) for n, j in judged.items()},
                        "unchanged": {n: j[2] for n, j in judged.items()},
                        "uncovered": any(j[2] for j in judged.values()),
                        "retained": {n: M.retained_at(d.box, out_dets.get(n, [])) for n, d in ref.members.items()},
                        "retained_centre": {n: M.found_at(d.box, out_dets.get(n, [])) for n, d in ref.members.items()},
                    }
                    if info.scene is not None:
                        rec.update(info.scene.measure(out))
                    if info.embedding is not None:
                        rec["reid_distance"] = round(float(np.linalg.norm(info.embedding - embedder.embed(out, info.shape))), 4)
                    if info.pose is not None:
                        box, lm = info.pose
                        crop = crop_face(out, box, GEN_SIZE, CROP_GROW)
                        err = _pose_error(detector, crop.pixels, lm)
                        rec["pose_error"] = None if err is None else round(err, 4)
                    res.faces.append(rec)
                    if rec["uncovered"] and name != "none" and len(misses) < cfg.max_miss_crops:
                        misses.append({"method": name, "item": item.key, "width": info.width,
                                       "detectors": info.detectors, "share": min(j[0] for j in judged.values()),
                                       "crop": _pair_crop(rgb, out, ref.main.box)})
                for _, b in crop_boxes:
                    batch.append(crop_face(out, b, GEN_SIZE, CROP_GROW).pixels)
                    batch_owner.append((name, None))
                if thumbs is not None:
                    thumbs[name] = _thumb(out, 200)
                for entry in sheet:
                    entry["crops"][name] = _sheet_crop(out, entry["region"])

            if features is not None and batch:
                feats = features(np.stack(batch))
                meta = {"item": item.key, "set": item.set, "groups": item.groups}
                for f, (owner, _) in zip(feats, batch_owner):
                    if owner == "orig":
                        orig_feats.append(f)
                        orig_feat_meta.append(meta)
                    else:
                        results[owner].features.append(f)
                        results[owner].feature_meta.append(meta)
            largest.add(sheet)
            if thumbs is not None:
                contact_count[item.set] = contact_count.get(item.set, 0) + 1
                contact.append({"item": item.key, "thumbs": thumbs})
            _log(cfg, f"[{idx + 1}/{len(items)}] {item.key}: {len(refs)} reference faces, "
                      f"{len(ours)} ours, {time.perf_counter() - t_item:.1f} s")

        # -- speed of deface, memory, metadata ---------------------------------------------
        if deface is not None:
            n = results["deface"].photos
            results["deface"].extra.update({
                "cli_wall_s": deface["wall_s"], "cli_startup_s": deface["startup_s"], "rc": deface["rc"],
                "peak_rss_mb": deface["peak_rss_mb"],
            })
            results["deface"].times = {"total_cli": deface["wall_s"],
                                       "net_of_startup": max(0.0, deface["wall_s"] - deface["startup_s"])}
            del n
        memory = _guard(cfg, "memory", lambda: _memory_pass(cfg, items, methods, detector)) if cfg.memory and items else {}
        metadata = _guard(cfg, "metadata", lambda: _metadata_check(cfg, items, methods, detector, work)) \
            if cfg.metadata and items else {}

        video = None
        if cfg.video and inputs.videos:
            from .video_eval import evaluate_videos

            _log(cfg, f"videos: {', '.join(v.name for v in inputs.videos)}")
            video = _guard(cfg, "video", lambda: evaluate_videos(
                inputs.videos, methods, judges, embedder, work, stride=cfg.video_stride,
                deface_cmd=deface_command(install=False) if "deface" in names else None,
                log=lambda m: _log(cfg, m),
            ))

        fd = {}
        if features is not None:
            real = np.asarray(orig_feats)
            for name, r in results.items():
                fd[name] = {"all": M.frechet(real, np.asarray(r.features)), "n": len(r.features)}
                by: dict[str, list[int]] = {}
                for i, meta in enumerate(r.feature_meta):
                    by.setdefault(f"set={meta['set']}", []).append(i)
                    for g, v in meta["groups"].items():
                        by.setdefault(f"{g}={v}", []).append(i)
                real_by: dict[str, list[int]] = {}
                for i, meta in enumerate(orig_feat_meta):
                    real_by.setdefault(f"set={meta['set']}", []).append(i)
                    for g, v in meta["groups"].items():
                        real_by.setdefault(f"{g}={v}", []).append(i)
                fake = np.asarray(r.features)
                fd[name]["by"] = {k: {"fd": M.frechet(real[real_by.get(k, [])], fake[ix]), "n": len(ix)}
                                  for k, ix in by.items() if len(ix) >= 2 and len(real_by.get(k, [])) >= 2}

        return {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
            "command": cfg.command,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "python": platform.python_version(),
                        "nice": os.nice(0)},
            "inputs": {"photos": len(items), "videos": [str(v) for v in inputs.videos], "notes": inputs.notes,
                       "sets": sorted({it.set for it in items})},
            "judges": [j.name for j in judges], "judges_missing": judges_missing,
            "methods": names, "unavailable": unavailable,
            "originals": originals,
            "results": {n: {"faces": r.faces, "times": r.times, "photos": r.photos,
                            "megapixels": r.megapixels, "errors": r.errors, "extra": r.extra}
                        for n, r in results.items()},
            "fd": fd, "fd_real_n": len(orig_feats), "fd_note": fd_note,
            "pose_original": _mean(pose_orig),
            "memory": memory, "metadata": metadata, "video": video,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "runtime_s": time.perf_counter() - t_start,
            "_contact": contact, "_misses": misses, "_largest": largest.entries,
        }
    finally:
        for j in judges:
            j.close()
        shutil.rmtree(work, ignore_errors=True)


def _guard(cfg: EvalConfig, what: str, fn):
    """Run one of the later stages; a failure there is reported, not fatal to the photo results."""
    try:
        return fn()
    except Exception as e:
        _log(cfg, f"{what} failed: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"}


@dataclass
class _Det:
    box: tuple
    score: float = 1.0
    detector: str = "ours"


@dataclass
class _RefFace:
    """One reference face of a photo, as the originals show it: computed once, then
    compared with every method's output."""

    width: float
    detectors: list[str]
    ours_found: bool  # our detector sees it in the original
    shape: object = None  # dlib alignment (faces ≥ MIN_REID_PX)
    embedding: np.ndarray | None = None  # dlib embedding of the original face
    pose: tuple | None = None  # (our box, landmarks in crop pixels) for the pose error
    scene: SceneFace | None = None  # seam / lighting reference at our erase box (faces ≥ MIN_SCENE_PX)

    def to_dict(self) -> dict:
        return {"width": self.width, "detectors": self.detectors, "ours_found": self.ours_found}


def _as_det(face) -> _Det:
    return _Det(tuple(float(v) for v in face.box))


def _mean(v: list) -> float | None:
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


def _pose_error(detector: FaceDetector, crop: np.ndarray, lm: np.ndarray) -> float | None:
    from ..training.metrics import landmark_error  # the one pose-error rule

    return landmark_error(detector, crop, lm)


class _LargestFaces:
    """The `n` largest reference faces of each set, with 100 % crops of the original and of
    every method's output (for `report.face_sheet`; per set, so tight UTKFace crops do not
    crowd out the faces in the wild). Per photo: `candidates` picks the faces that would
    enter, the method loop fills their crops, `add` keeps the n largest of the set."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.by_set: dict[str, list[dict]] = {}

    @property
    def entries(self) -> list[dict]:
        return [e for entries in self.by_set.values() for e in entries]

    def _threshold(self, set_name: str) -> float:
        entries = self.by_set.get(set_name, [])
        return entries[-1]["width"] if len(entries) >= self.n else -1.0

    def candidates(self, item: Item, rgb: np.ndarray, refs, infos) -> list[dict]:
        if self.n <= 0:
            return []
        out = []
        for ri, (ref, info) in enumerate(zip(refs, infos)):
            if info.width > self._threshold(item.set):
                box = info.scene.box if info.scene is not None else ref.main.box
                region = expand_box(box, SHEET_GROW, square=True)
                out.append({"item": item.key, "set": item.set, "face": ri, "width": info.width,
                            "our_box": info.scene is not None, "region": region,
                            "crops": {"original": _sheet_crop(rgb, region)}})
        return sorted(out, key=lambda e: -e["width"])[: self.n]

    def add(self, entries: list[dict]) -> None:
        for e in entries:
            e.pop("region", None)
            kept = self.by_set.setdefault(e["set"], [])
            kept.append(e)
            kept.sort(key=lambda x: -x["width"])
            del kept[self.n:]


#: Face-sheet crops: the square of this many face widths (erase box and some context) at 100 %.
SHEET_GROW = 1.7


def _sheet_crop(rgb: np.ndarray, region) -> np.ndarray:
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = clip_box(region, w, h)
    return rgb[y1:y2, x1:x2].copy()


def _pair_crop(orig: np.ndarray, out: np.ndarray, box) -> np.ndarray:
    a = crop_face(orig, box, 96, 1.6).pixels
    b = crop_face(out, box, 96, 1.6).pixels
    return np.concatenate([a, b], axis=1)


def _memory_pass(cfg: EvalConfig, items: list[Item], methods: dict, detector: FaceDetector) -> dict:
    """tracemalloc peak (Python + numpy allocations; onnxruntime's own arena is not
    seen) of decode → detect → cover → encode on the largest photo, per method."""
    sizes = []
    for it in items[:400]:
        try:
            with Image.open(it.path if it.path is not None else io.BytesIO(it.jpeg)) as im:
                sizes.append((im.size[0] * im.size[1], it))
        except Exception:
            pass
    if not sizes:
        return {}
    item = max(sizes, key=lambda s: s[0])[1]
    out = {"photo": item.key, "megapixels": round(max(s[0] for s in sizes) / 1e6, 2), "tracemalloc_peak_mb": {}}
    for name, m in methods.items():
        tracemalloc.start()
        try:
            picture = _decode(item)
            faces = detector.detect(picture.rgb)
            covered = m.cover_faces(picture.rgb, faces)
            encode_output(to_pil(picture, covered), picture, None, FileOptions())
            out["tracemalloc_peak_mb"][name] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        finally:
            tracemalloc.stop()
    return out


def _metadata_check(cfg: EvalConfig, items: list[Item], methods: dict, detector: FaceDetector, work: Path) -> dict:
    """Temporary JPEG and PNG copies of the first photo carrying every identifying tag,
    anonymized by each method's file path (`process_file`, defaults) and by deface."""
    from .detectors import deface_command

    rgb = _decode(items[0]).rgb
    s = min(1.0, 640 / max(rgb.shape[:2]))
    if s < 1:
        rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    d = work / "metadata"
    d.mkdir()
    srcs = {}
    for fmt, ext in (("JPEG", ".jpg"), ("PNG", ".png")):
        p = d / f"tagged{ext}"
        p.write_bytes(M.tagged_copy(rgb, fmt))
        srcs[ext] = p
    result = {"inputs": {ext: M.leaked_tags(p.read_bytes()) for ext, p in srcs.items()}, "outputs": {}}
    for name, m in methods.items():
        result["outputs"][name] = {}
        for ext, p in srcs.items():
            dst = d / f"{name}{ext}"
            if name == "none":
                shutil.copy(p, dst)
            else:
                m.process_file(p, dst)
            result["outputs"][name][ext] = M.leaked_tags(dst.read_bytes())
    if "deface" in cfg.methods:
        cmd = deface_command(install=False)
        if cmd is not None:
            result["outputs"]["deface"] = {}
            for ext, p in srcs.items():
                dst = d / f"deface{ext}"
                subprocess.run([*cmd, str(p), "-o", str(dst)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                result["outputs"]["deface"][ext] = M.leaked_tags(dst.read_bytes()) if dst.exists() else ["no output"]
    return result
