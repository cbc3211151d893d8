"""A GPU leg in one command: pack what travels here, train there, bring back the result.

    anonyface-train leg pack --data data/faces --tier quality     # here, before the device call
    anonyface-train leg run --minutes 8                           # there (make gpu-leg), OUT=$OUT

`pack` fills the git-ignored folder `pack/` (named in the device call's
`carry`) with everything a leg needs that does not travel with the checkout:
* the tier's checkpoint to resume from (none: the leg starts fresh);
* MobileNetV2's ImageNet weights without the classifier (perceptual loss, FD);
* the first `--eval-n` validation crops and their real-crop reference
  (features, pose floor), computed here so the device spends no time on them;
* as many training crops as fit the budget, copied byte for byte from the
  shards, taken in turn: each pack starts where the last one stopped (state
  in `training/gpu_legs.json`, which is committed), wrapping around, so legs
  see the whole data set in rotation.
The budget is min(`--mib`, 64 MiB − what else travels − a margin): the device
takes 64 MiB in all, tracked files included.

`run` resumes from the pack's checkpoint and trains for `--minutes` (loading
and the evaluation included) with bf16 autocast, channels-last and a large
batch on CUDA, or fp32 on the CPU (the rehearsal); then writes under $OUT the
checkpoint (≤ 16 MiB: `checkpoint.build_checkpoint` picks the format), the
sample grid, the leg's LOG.md line, log.jsonl and summary.json, and prints the
summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .shards import write_npz

MIB = 1024 * 1024
DEVICE_TREE_LIMIT = 64 * MIB
TREE_MARGIN = 2 * MIB
DEFAULT_PACK_MIB = 50.0
STATE_FILE = "training/gpu_legs.json"
PACK_DIR = "pack"
MANIFEST = "PACK.json"
WEIGHTS = "mobilenet_v2-features.pth"

#: The two tiers: model config, the committed checkpoint a leg resumes from
#: (the quality one is the fast one grown to 128 px, `anonyface-train grow`),
#: and the batch on a GPU (H100/H200; the models are small, the batch is what
#: fills the chip). Legs train with the expression conditions (docs/expression.md)
#: whenever the packed crops carry them: a fresh run starts with them, a
#: landmarks-only checkpoint grows them (`train --expression`).
#: Augmentation every leg trains with, whatever the checkpoint it resumes from was trained with:
#: no exposure darkening (it makes small faces under dark hair dim) and no low-resolution crops
#: (they make the tiniest faces smudges) — docs/generator.md, "Why the expression run paints
#: small faces dark". LEG_ARGS can override.
LEG_AUGMENT = ["--exposure-p", "0", "--lowres-p", "0"]
TIERS = {
    "quality": {"config": "quality", "checkpoint": "training/checkpoint-quality.pt", "gpu_batch": 256,
                "train_args": LEG_AUGMENT},
    "fast": {"config": "cpu", "checkpoint": "training/checkpoint.pt", "gpu_batch": 512, "train_args": LEG_AUGMENT},
}
CPU_BATCH = 8  # the rehearsal


# -- pack -----------------------------------------------------------------------------

def travelling_bytes(root: Path, exclude: Path | None = None) -> int:
    """Size of what the device call sends besides `carry`: tracked files and
    untracked files that git does not ignore (`exclude` left out)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        if not name:
            continue
        p = root / name
        if exclude is not None and (p == exclude or exclude in p.parents):
            continue
        if p.is_file():
            total += p.stat().st_size
    return total


def travels_with_tree(root: Path, path: Path) -> bool:
    """True when `path` is tracked by git and unchanged: the device gets it with
    the checkout, so the pack need not carry a second copy."""
    try:
        rel = path.resolve().relative_to(root)
        subprocess.run(["git", "ls-files", "--error-unmatch", str(rel)], cwd=root, capture_output=True, check=True)
        return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(rel)], cwd=root).returncode == 0
    except (ValueError, OSError, subprocess.CalledProcessError):
        return False


def _shard_index(paths: list[str]) -> list[tuple[str, int]]:
    out = []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            out.append((p, len(z["offsets"]) - 1))
    return out


def copy_crops(picks: list[tuple[str, int, int]], dst: Path) -> int:
    """Write one shard holding crops [a, b) of each listed shard, JPEG bytes copied
    unchanged (no re-encoding). Returns the number of crops."""
    from .shards import FIELDS, OPTIONAL_FIELDS

    jpegs, offsets, meta = [], [0], {k: [] for k in (*FIELDS, *OPTIONAL_FIELDS)}
    for path, a, b in picks:
        with np.load(path, allow_pickle=False) as z:
            off, jpeg = z["offsets"], z["jpeg"]
            jpegs.append(jpeg[off[a]:off[b]])
            offsets.extend((off[a + 1:b + 1] - off[a] + offsets[-1]).tolist())
            for k in FIELDS:
                meta[k].append(z[k][a:b])
            for k in OPTIONAL_FIELDS:  # kept only if every source shard has it
                meta[k].append(z[k][a:b] if k in z.files else None)
    arrays = {"jpeg": np.concatenate(jpegs) if jpegs else np.zeros(0, np.uint8),
              "offsets": np.asarray(offsets, np.int64)}
    for k in FIELDS:
        arrays[k] = np.concatenate(meta[k])
    for k in OPTIONAL_FIELDS:
        if meta[k] and all(v is not None for v in meta[k]):
            arrays[k] = np.concatenate(meta[k])
    write_npz(dst, arrays)
    return len(offsets) - 1


def _crop_sizes(path: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        off = z["offsets"]
        n = len(off) - 1
        fixed = sum(z[k].nbytes // max(n, 1) for k in ("landmarks", "face_box", "erase", "valid", "score",
                                                         "source", "identity", "expression") if k in z.files)
    return np.diff(off) + fixed + 8


def choose_train_crops(index: list[tuple[str, int]], start: int, budget: int) -> tuple[list[tuple[str, int, int]], int, int]:
    """Crops from global position `start` on (wrapping) while their bytes fit `budget`:
    ([(shard, a, b)], crops taken, next start)."""
    total = sum(n for _, n in index)
    if total == 0:
        return [], 0, 0
    start %= total
    sizes = {p: _crop_sizes(p) for p, _ in index}
    bounds, acc = [], 0
    for p, n in index:
        bounds.append((p, acc, acc + n))
        acc += n
    picks: list[list] = []
    used, taken, pos = 0, 0, start
    while taken < total:
        for p, lo, hi in bounds:
            if lo <= pos < hi:
                break
        i = pos - lo
        size = int(sizes[p][i])
        if used + size > budget:
            break
        used += size
        if picks and picks[-1][0] == p and picks[-1][2] == i:
            picks[-1][2] = i + 1
        else:
            picks.append([p, i, i + 1])
        taken += 1
        pos = (pos + 1) % total
    return [tuple(x) for x in picks], taken, pos


def pack(
    data: str | os.PathLike, tier: str = "quality", out: str | os.PathLike = PACK_DIR, *,
    mib: float = DEFAULT_PACK_MIB, eval_n: int = 500, state_file: str | os.PathLike | None = STATE_FILE,
    root: str | os.PathLike = ".", checkpoint: str | None = None, config: str | None = None,
    advance: bool = True, weights: str | os.PathLike | None = None, progress: bool = True,
) -> dict:
    """Fill `out` for one leg of `tier`; returns (and writes as PACK.json) what it holds."""
    import torch

    from .data import Data, load_split, shard_paths
    from .evaluate import _detector, reference
    from .mobilenet import FeatureNet, save_features
    from .model import get_config

    root, out, data = Path(root).resolve(), Path(root) / out, Path(data)
    spec = dict(TIERS[tier])
    if checkpoint is not None:
        spec["checkpoint"] = checkpoint
    if config is not None:
        spec["config"] = config
    cfg = get_config(spec["config"])
    from .mobilenet import weights_path

    weights = Path(weights or weights_path()).resolve()
    weights_copy = Path(tempfile.mkdtemp(prefix="pack-w-")) / WEIGHTS
    save_features(weights_copy, weights)  # before out/ is cleared: the source may lie there
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()

    ck_src = root / spec["checkpoint"]
    ck_name = None
    if ck_src.exists():
        ck = torch.load(str(ck_src), map_location="cpu", weights_only=False)
        if ck["config"]["name"] != cfg.name:
            raise ValueError(f"{ck_src} is a '{ck['config']['name']}' checkpoint, tier {tier} wants '{cfg.name}'")
        del ck
        if travels_with_tree(root, ck_src):  # committed: it is on the device already
            ck_name = Path(os.path.relpath(ck_src.resolve(), out.resolve())).as_posix()
        else:
            ck_name = "checkpoint.pt"
            shutil.copyfile(ck_src, out / ck_name)
    shutil.move(str(weights_copy), out / WEIGHTS)
    shutil.rmtree(weights_copy.parent, ignore_errors=True)

    val_paths = shard_paths(data, "val")
    n_val = 0
    if eval_n > 0 and val_paths:
        index = _shard_index(val_paths)
        picks, left = [], eval_n
        for p, n in index:
            if left <= 0:
                break
            k = min(n, left)
            picks.append((p, 0, k))
            left -= k
        n_val = copy_crops(picks, out / "val-000.npz")
        val_set, _ = load_split(out, "val")
        val = Data(val_set, cfg.size, torch.device("cpu"))
        featnet = FeatureNet(out / WEIGHTS)
        if progress:
            print(f"[pack] reference of {n_val} validation crops at {cfg.size} px …", file=sys.stderr, flush=True)
        reference(val, n_val, out, featnet, torch.device("cpu"), _detector())

    fixed = sum(f.stat().st_size for f in out.iterdir())
    limit = min(int(mib * MIB), DEVICE_TREE_LIMIT - travelling_bytes(root, exclude=out) - TREE_MARGIN)
    budget = limit - fixed - 64 * 1024  # npz headers
    if budget <= 0:
        raise ValueError(f"nothing left for training crops: limit {limit / MIB:.1f} MiB, fixed files {fixed / MIB:.1f} MiB")

    state_path = (root / state_file) if state_file else None
    state = json.loads(state_path.read_text()) if state_path and state_path.exists() else {}
    tier_state = state.setdefault(tier, {"next_crop": 0, "packs": 0})
    train_paths = shard_paths(data, "train")
    index = _shard_index(train_paths)
    start = int(tier_state["next_crop"])
    picks, taken, nxt = choose_train_crops(index, start, budget)
    if not taken:
        raise ValueError(f"no training crops fit (budget {budget} bytes, {len(index)} train shards in {data})")
    copy_crops(picks, out / "train-000.npz")
    with np.load(out / "train-000.npz") as z:
        expression = "expression" in z.files
    total = sum(n for _, n in index)
    info = {
        "tier": tier, "config": cfg.name, "size": cfg.size, "gpu_batch": spec["gpu_batch"],
        "checkpoint": ck_name, "checkpoint_source": spec["checkpoint"] if ck_name else None,
        "weights": WEIGHTS, "eval_n": n_val,
        "train_crops": taken, "train_total": total, "train_start": start % max(total, 1), "next_crop": nxt,
        "train_from": [{"shard": Path(p).name, "first": a, "stop": b} for p, a, b in picks],
        "data": str(data), "limit_bytes": limit, "expression": expression,
        "train_args": list(spec.get("train_args", [])),
    }
    (out / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
    info["bytes"] = sum(f.stat().st_size for f in out.iterdir())
    (out / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
    if advance and state_path is not None:
        tier_state["next_crop"] = nxt
        tier_state["packs"] = int(tier_state.get("packs", 0)) + 1
        tier_state["total"] = total
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    if progress:
        print(f"[pack] {out}: {info['bytes'] / MIB:.1f} MiB (limit {limit / MIB:.1f}): {taken} of {total} train crops "
              f"from #{start} (next #{nxt}), {n_val} val crops, checkpoint {ck_name or 'none (fresh start)'}, "
              f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return info


# -- run ------------------------------------------------------------------------------

def run_leg(pack_dir: str | os.PathLike = PACK_DIR, minutes: float = 8.0, out: str | os.PathLike | None = None,
            device: str | None = None, batch: int | None = None, steps: int | None = None,
            extra: list[str] | None = None, eval_n: int | None = None) -> dict:
    """Train one leg from a pack; the results land in `out` (≤ 8 files, each ≤ 16 MiB)."""
    import torch

    from . import train

    pack_dir = Path(pack_dir)
    info = json.loads((pack_dir / MANIFEST).read_text())
    out = Path(out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="leg-out-"))
    out.mkdir(parents=True, exist_ok=True)
    old_env = os.environ.get("ANONYFACE_MOBILENET")
    os.environ["ANONYFACE_MOBILENET"] = str((pack_dir / info["weights"]).resolve())
    try:
        return _run(pack_dir, info, minutes, out, device, batch, steps, extra, eval_n)
    finally:
        if old_env is None:
            os.environ.pop("ANONYFACE_MOBILENET", None)
        else:
            os.environ["ANONYFACE_MOBILENET"] = old_env


def _run(pack_dir: Path, info: dict, minutes, out: Path, device, batch, steps, extra, eval_n) -> dict:
    import torch

    from . import train

    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    run = Path(tempfile.mkdtemp(prefix="leg-run-"))
    if info["checkpoint"]:
        shutil.copyfile(pack_dir / info["checkpoint"], run / "checkpoint.pt")
    for ref in pack_dir.glob("eval_ref_*.npz"):
        shutil.copyfile(ref, run / ref.name)
    if batch is None:
        batch = info["gpu_batch"] if cuda else CPU_BATCH
    argv = ["--data", str(pack_dir), "--run", str(run), "--config", info["config"], "--minutes", str(minutes),
            "--eval-n", str(info["eval_n"] if eval_n is None else min(eval_n, info["eval_n"])), "--batch", str(batch), "--log", str(run / "LOG.md"),
            "--device", "cuda" if cuda else "cpu", "--ckpt-minutes", "2"]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if info.get("expression"):
        argv += ["--expression"]
    argv += list(info.get("train_args", [])) + list(extra or [])  # extra last: it overrides
    summary = train.main(argv)
    summary["tier"] = info["tier"]
    summary["pack"] = {k: info[k] for k in ("train_start", "train_crops", "train_total", "next_crop")}
    summary["resumed_from"] = info["checkpoint_source"]
    name = f"checkpoint-{info['tier']}.pt"
    shutil.copyfile(run / "checkpoint.pt", out / name)
    if (run / "samples.png").exists():
        shutil.copyfile(run / "samples.png", out / "samples.png")
    rows = [x for x in (run / "LOG.md").read_text().splitlines() if x.startswith("| 20")]
    (out / "LOG-line.md").write_text((rows[-1] if rows else "") + "\n")
    shutil.copyfile(run / "log.jsonl", out / "log.jsonl")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    too_big = [f.name for f in out.iterdir() if f.stat().st_size > 16 * MIB]
    if too_big:
        raise SystemExit(f"files over 16 MiB in {out}: {too_big}")
    shutil.rmtree(run, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anonyface-train leg", description="Pack, and run, a GPU training leg.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="fill pack/ for the next leg (here)")
    pk.add_argument("--data", default="data/faces")
    pk.add_argument("--tier", default="quality", choices=sorted(TIERS))
    pk.add_argument("--out", default=PACK_DIR)
    pk.add_argument("--mib", type=float, default=DEFAULT_PACK_MIB, help="largest pack (MiB; default %(default)s)")
    pk.add_argument("--eval-n", type=int, default=500)
    pk.add_argument("--state", default=STATE_FILE, help="rotation state file ('' for none)")
    pk.add_argument("--no-advance", action="store_true", help="leave the rotation where it is")
    pk.add_argument("--checkpoint", default=None, help="resume from this file instead of the tier's")
    pk.add_argument("--config", default=None, help="model config instead of the tier's (tests)")
    rn = sub.add_parser("run", help="train one leg from pack/ (on the device)")
    rn.add_argument("--pack", default=PACK_DIR)
    rn.add_argument("--minutes", type=float, default=8.0)
    rn.add_argument("--out", default=None, help="default $OUT")
    rn.add_argument("--device", choices=["cpu", "cuda"], default=None)
    rn.add_argument("--batch", type=int, default=None)
    rn.add_argument("--steps", type=int, default=None)
    rn.add_argument("--eval-n", type=int, default=None,
                    help="evaluate on fewer of the packed validation crops (the CPU rehearsal)")
    args, rest = p.parse_known_args(argv)
    if args.cmd == "pack":
        if rest:
            p.error(f"unknown arguments {rest}")
        info = pack(args.data, args.tier, args.out, mib=args.mib, eval_n=args.eval_n, state_file=args.state or None,
                    checkpoint=args.checkpoint, config=args.config, advance=not args.no_advance)
        print(json.dumps(info))
        return 0
    s = run_leg(args.pack, args.minutes, args.out, args.device, args.batch, args.steps, rest, args.eval_n)
    keys = ("tier", "device", "minutes", "step", "images_seen", "leg_images", "img_s", "fd", "pose_err", "det_rate",
            "checkpoint_format", "checkpoint_bytes")
    print("LEG SUMMARY " + json.dumps({k: s.get(k) for k in keys} | {"out": str(args.out or os.environ.get("OUT"))}),
          flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
