"""`anonyface-train conditions DATA`: add the expression conditions to an existing data folder.

    anonyface-train conditions data/faces            # add / refresh `expression` in every shard
    anonyface-train conditions data/faces --stats    # only print the raw ratios' mean / std (train)

Every crop's expression (anonyface.expression, measured on the stored crop with its
face box and landmarks, exactly as the dataset builder does) is written into its
shard as a new array `expression` (float32[N, 5]), next to `landmarks`. The other
arrays are kept bit for bit. Each shard is written to a temporary file in the
same folder and renamed over the old one, so a training job that is reading the
folder sees either the old or the new shard, never a half-written one. The
manifest's shard sizes and hashes are updated the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ..detection import Face
from ..expression import EXPRESSION_NAMES, ExpressionMeter, expression_meter, normalise
from .dataset import _file_sha256, expression_summary
from .shards import write_npz

SPLITS = ("train", "val", "webval")
BATCH = 32


def crop_faces(z) -> list[Face]:
    """The face of each crop of an opened shard, in crop pixels."""
    boxes, lms, scores = z["face_box"], z["landmarks"], z["score"]
    return [Face(tuple(float(v) for v in boxes[i]), lms[i], float(scores[i])) for i in range(len(boxes))]


def shard_raw(path: str | os.PathLike, meter: ExpressionMeter, batch: int = BATCH) -> np.ndarray:
    """Raw expression ratios (float64[N, 5], NaN where unmeasurable) of every crop of a shard."""
    with np.load(path, allow_pickle=False) as z:
        jpeg, offsets = z["jpeg"], z["offsets"]
        faces = crop_faces(z)
    out = np.full((len(faces), len(EXPRESSION_NAMES)), np.nan)
    for a in range(0, len(faces), batch):
        pairs = []
        for i in range(a, min(a + batch, len(faces))):
            bgr = cv2.imdecode(jpeg[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)
            rgb = bgr[..., ::-1].copy() if bgr is not None else np.zeros((1, 1, 1), np.uint8)
            pairs.append((rgb, faces[i]))
        out[a : a + len(pairs)] = meter.measure_raw_pairs(pairs)
    return out


def add_expression(path: str | os.PathLike, meter: ExpressionMeter, raw: np.ndarray | None = None) -> dict:
    """Write `expression` into one shard (atomically); returns counts, size and sha256.
    `raw`: the shard's raw ratios if already measured (`--raw`)."""
    path = Path(path)
    if raw is None:
        raw = shard_raw(path, meter)
    expr = normalise(raw)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if len(expr) != len(arrays["offsets"]) - 1:
        raise ValueError(f"{path}: {len(expr)} expressions for {len(arrays['offsets']) - 1} crops")
    out: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        if k == "expression":
            continue
        out[k] = v
        if k == "landmarks":
            out["expression"] = expr
    if "expression" not in out:
        out["expression"] = expr
    write_npz(path, out)
    return {"file": path.name, "count": len(expr), "neutral": int((~np.all(np.isfinite(raw), axis=1)).sum()),
            "bytes": path.stat().st_size, "sha256": _file_sha256(path)}


def data_shards(data: Path, splits: tuple[str, ...] = SPLITS) -> list[Path]:
    return [p for s in splits for p in sorted(data.glob(f"{s}-*.npz"))]


def raw_stats(raw: np.ndarray) -> dict:
    """Mean and standard deviation of the measurable rows, per scalar."""
    ok = raw[np.all(np.isfinite(raw), axis=1)]
    return {"measured": len(ok), "of": len(raw), "mean": ok.mean(axis=0).tolist(), "std": ok.std(axis=0).tolist()}


def update_manifest(data: Path, results: list[dict], model: Path) -> None:
    """Record the new shard sizes / hashes and the expression summary in manifest.json (atomically)."""
    path = data / "manifest.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    by_file = {r["file"]: r for r in results}
    for sh in manifest.get("shards", []):
        r = by_file.get(sh.get("file"))
        if r is not None:
            sh["bytes"], sh["sha256"] = r["bytes"], r["sha256"]
    manifest["expression"] = expression_summary(
        model, sum(r["count"] for r in results), sum(r["neutral"] for r in results))
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _load_raw(path: Path, shards: list[Path]) -> dict[str, np.ndarray]:
    """Raw ratios saved by `--stats --save-raw`, checked against the shards' crop counts."""
    with np.load(path, allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    for s in shards:
        with np.load(s, allow_pickle=False) as z:
            n = len(z["offsets"]) - 1
        if s.name not in saved or len(saved[s.name]) != n:
            raise ValueError(f"{path} has no raw ratios for the {n} crops of {s.name}")
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anonyface-train conditions", description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="data folder made by `anonyface-train dataset`")
    p.add_argument("--stats", action="store_true",
                   help="print the raw ratios' mean and std over the train shards; write no shard")
    p.add_argument("--save-raw", type=Path, default=None,
                   help="with --stats: also measure the other splits and save every shard's raw ratios here")
    p.add_argument("--raw", type=Path, default=None,
                   help="use the raw ratios saved by --save-raw instead of measuring again")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    args = p.parse_args(argv)
    shards = data_shards(args.data, ("train",) if args.stats and not args.save_raw else SPLITS)
    if not shards:
        print(f"error: no shards in {args.data}", file=sys.stderr)
        return 2
    meter = expression_meter(args.threads)
    if meter is None or meter.session is None:
        print("error: the expression model is unavailable", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        saved = _load_raw(args.raw, shards) if args.raw else {}
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def raw_of(s: Path) -> np.ndarray:
        if s.name in saved:
            return saved[s.name]
        r = shard_raw(s, meter)
        print(f"  {s.name}: {len(r)} crops measured ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        return r

    if args.stats:
        raws = {s.name: raw_of(s) for s in shards}
        st = raw_stats(np.concatenate([r for name, r in raws.items() if name.startswith("train-")]))
        print(f"{st['measured']} of {st['of']} train crops measured ({time.perf_counter() - t0:.0f} s)")
        print(f"RAW_MEAN = np.array([{', '.join(f'{v:.5f}' for v in st['mean'])}], np.float32)")
        print(f"RAW_STD = np.array([{', '.join(f'{v:.5f}' for v in st['std'])}], np.float32)")
        if args.save_raw:
            np.savez(args.save_raw, **raws)
            print(f"raw ratios of {len(raws)} shards saved to {args.save_raw}")
        return 0
    results = []
    for s in shards:
        r = add_expression(s, meter, raw_of(s))
        results.append(r)
        print(f"  {r['file']}: expression written, {r['count']} crops, {r['neutral']} neutral",
              file=sys.stderr, flush=True)
    update_manifest(args.data, results, meter.path)
    n, k = sum(r["count"] for r in results), sum(r["neutral"] for r in results)
    print(f"expression added to {len(results)} shards: {n} crops, {k} neutral, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
