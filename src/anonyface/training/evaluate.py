"""Evaluation of a generator on the fixed validation set, and the sample grid.

First N validation crops, z from a fixed seed, the EMA generator:
* FD: Fréchet distance of generated vs real crops on MobileNetV2 ImageNet
  1280-d pooled features (`metrics.frechet_distance_features`);
* pose error: our RetinaFace on each generated crop vs the conditioning
  landmarks / inter-ocular distance, and the detection rate;
the real crops' numbers (the floor) are computed once and cached in the run.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write
from .data import Data
from .model import Generator

FIXED_SEED = 1234  # validation z and sample z


# -- images -------------------------------------------------------------------------

def to_uint8(x: torch.Tensor) -> np.ndarray:
    """B×3×H×W in [-1, 1] → B×H×W×3 uint8."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def sample_grid(real: torch.Tensor, erase: torch.Tensor, fake: torch.Tensor, cell: int = 128) -> np.ndarray:
    """Rows: real / erased input (grey where erased) / generated."""
    shown = real * (1 - erase) + 0.0 * erase  # erased area shown as mid-grey (0 in [-1, 1])
    rows = []
    for t in (real, shown, fake):
        imgs = to_uint8(t)
        if imgs.shape[1] != cell:
            import cv2

            imgs = np.stack([cv2.resize(i, (cell, cell), interpolation=cv2.INTER_NEAREST) for i in imgs])
        rows.append(np.concatenate(list(imgs), 1))
    return np.concatenate(rows, 0)


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write(path, buf.tobytes())



# -- evaluation ---------------------------------------------------------------------

@torch.no_grad()
def generate(g: Generator, data: Data, n: int, zdim: int, device, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(generated uint8 crops, real uint8 crops) for the first n items with fixed z."""
    gen = torch.Generator().manual_seed(FIXED_SEED)
    z_all = torch.randn(n, zdim, generator=gen)
    fakes, reals = [], []
    for i in range(0, n, batch):
        idx = torch.arange(i, min(n, i + batch))
        image, erase, pad, lm, ex = data.batch(idx)
        fakes.append(to_uint8(g(image, erase, pad, lm, z_all[idx].to(device), ex if g.config.edim else None)))
        reals.append(to_uint8(image))
    return np.concatenate(fakes), np.concatenate(reals)


def reference(val: Data, n: int, run: Path, featnet, device, detector) -> dict:
    """Features and pose numbers of the real validation crops (cached in the run folder)."""
    from . import metrics

    ref_path = run / f"eval_ref_{n}_{val.size}.npz"
    if ref_path.exists():
        with np.load(ref_path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    real = np.concatenate([to_uint8(val.batch(torch.arange(i, min(n, i + 64)))[0]) for i in range(0, n, 64)])
    feats = metrics.pooled_features(featnet, real, device=device).astype(np.float32)
    lms = val.landmarks[:n].cpu().numpy()
    pose, rate = metrics.pose_error(detector, real, lms) if detector else (float("nan"), float("nan"))
    ref = {"feats": feats, "pose": np.float64(pose), "rate": np.float64(rate), "seconds": np.float64(time.time() - t0)}
    buf = io.BytesIO()
    np.savez(buf, **ref)
    atomic_write(ref_path, buf.getvalue())
    return ref


def evaluate(g: Generator, val: Data, n: int, ref: dict, featnet, device, detector) -> dict:
    from . import metrics

    t0 = time.time()
    fake, _ = generate(g, val, n, g.config.zdim, device)
    lms = val.landmarks[:n].cpu().numpy()
    feats_f = metrics.pooled_features(featnet, fake, device=device)
    fd = metrics.frechet_distance_features(feats_f, ref["feats"])
    pose, rate = metrics.pose_error(detector, fake, lms) if detector else (float("nan"), float("nan"))
    return {
        "eval_n": n, "fd": fd, "pose_err": pose, "det_rate": rate,
        "real_pose_err": float(ref["pose"]), "real_det_rate": float(ref["rate"]),
        **expression_following(fake, val, n), "eval_s": time.time() - t0,
    }


@functools.lru_cache(maxsize=1)
def expression_meter():
    """The expression meter, loaded once per process (None when missing): a leg's
    evaluation-time estimate must not scale its loading up to n crops."""
    from ..expression import expression_meter as load

    return load()


def expression_following(fake: np.ndarray, val: Data, n: int) -> dict:
    """Does the generated face do what the real one did? Pearson r between the
    real crops' expression conditions (mouth opening; eye openness, both eyes
    pooled) and the same meter on the generated crops, at the same box; {} when
    the split has no conditions or the meter is missing. A landmarks-only
    generator gives the baseline."""
    if not val.has_expression:
        return {}
    try:
        from ..detection import Face
        from ..expression import EXPRESSION_NAMES
    except ImportError:
        return {}
    meter = expression_meter()
    if meter is None:
        return {}
    lms = val.landmarks[:n].cpu().numpy()
    pairs = [(fake[i], Face(tuple(float(v) for v in val.face_box[i]), lms[i], 1.0)) for i in range(n)]
    got = meter.measure_raw_pairs(pairs)
    want = val.expression[:n].cpu().numpy()
    ok = np.all(np.isfinite(got), axis=1) & np.any(want != 0, axis=1)
    if ok.sum() < 10:
        return {}
    out = {}
    for key, cols in (("expr_r_mouth", [EXPRESSION_NAMES.index("mouth_open")]),
                      ("expr_r_eyes", [EXPRESSION_NAMES.index("left_eye_open"), EXPRESSION_NAMES.index("right_eye_open")])):
        a, b = want[ok][:, cols].ravel(), got[ok][:, cols].ravel()
        out[key] = float(np.corrcoef(a, b)[0, 1])
    return out


def _detector():
    try:
        from ..detection import FaceDetector

        # 2 threads on this project's 2-core machines; more where there are
        # more cores (a GPU machine has 16 and the detector runs on the CPU).
        return FaceDetector(threads=max(2, min(8, os.cpu_count() or 2)))
    except Exception as e:  # noqa: BLE001 - report and go on without pose numbers
        print(f"[train] no face detector for the pose metric: {e}", file=sys.stderr)
        return None


def evaluate_checkpoints(checkpoints: list[str], data: str, split: str = "val", n: int = 500,
                         cache: str | None = None, grid: str | None = None, threads: int = 2) -> list[dict]:
    """FD / pose error / detection rate of each checkpoint's EMA generator on the
    first n crops of `split` (e.g. `webval`: the held-out context photos), at each
    checkpoint's own size; the real-crop reference is cached in `cache`. With
    `grid`, writes GRID-NAME.png sample grids (real / erased / generated)."""
    from .checkpoint import load_generator
    from .data import load_split
    from .mobilenet import FeatureNet

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    faces, _ = load_split(data, split)
    if faces is None:
        raise SystemExit(f"no {split}-*.npz shards in {data}")
    featnet = FeatureNet().to(memory_format=torch.channels_last)
    detector = _detector()
    cache_dir = Path(cache) if cache else Path(data)
    out, sets = [], {}
    for path in checkpoints:
        g = load_generator(path)
        size = g.config.size
        if size not in sets:
            sets[size] = Data(faces, size, device)
        val = sets[size]
        k = min(n, len(val))
        sub = cache_dir / f"{split}_ref"
        sub.mkdir(parents=True, exist_ok=True)
        ref = reference(val, k, sub, featnet, device, detector)
        res = {"checkpoint": str(path), "split": split, "config": g.config.name,
               **evaluate(g, val, k, ref, featnet, device, detector)}
        if grid:
            m = min(8, k)
            z = torch.randn(m, g.config.zdim, generator=torch.Generator().manual_seed(FIXED_SEED))
            image, erase, pad, lm, ex = val.batch(torch.arange(m))
            with torch.no_grad():
                fake = g(image, erase, pad, lm, z, ex if g.config.edim else None)
            name = Path(path).parent.name or Path(path).stem
            write_png(Path(f"{grid}-{name}.png"), sample_grid(image, erase, fake))
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="anonyface-train evaluate",
                                description="FD, pose error and detection rate of checkpoints on a fixed split.")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default="data/faces")
    p.add_argument("--split", default="val", help="val (the fixed set of the legs) or webval (context photos)")
    p.add_argument("--n", type=int, default=500, help="first N crops of the split")
    p.add_argument("--cache", default=None, help="folder for the real-crop reference (default: the data folder)")
    p.add_argument("--grid", default=None, help="write PREFIX-RUN.png sample grids")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    evaluate_checkpoints(args.checkpoints, args.data, args.split, args.n, args.cache, args.grid, args.threads)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
