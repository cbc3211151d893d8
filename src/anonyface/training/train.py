"""Train the face generator in resumable legs: `anonyface-train train --data DIR --run DIR`.

One leg: load the shards, resume from RUN/checkpoint.pt if there is one, train
for a wall-clock budget, checkpoint atomically every few minutes and at the
end, write RUN/samples.png, evaluate a fixed validation set (Fréchet distance
on MobileNetV2 features, pose error with our own detector), append a line to
RUN/log.jsonl and to the Markdown table training/LOG.md, and print a summary.

Losses (see docs/generator.md):
  G: adv·softplus(−D(fake)) + l1·L1(erased region) + perc·Σ|φ(fake)−φ(real)|
  D: softplus(D(fake)) + softplus(−D(real)) + lazy R1 on reals (every 16 steps)
with DiffAugment (colour, translation, cutout) on every D input, EMA of G.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import io
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .model import CONFIGS, FLIP_PERM, Config, Discriminator, Generator, get_config

CHECKPOINT = "checkpoint.pt"
MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024 - 64 * 1024  # leave room for the pickle overhead
R1_INTERVAL = 16
FIXED_SEED = 1234  # validation z and sample z


def _default_log() -> str:
    """training/LOG.md at the repository root (source checkout), else under the working directory."""
    root = Path(__file__).resolve().parents[3]
    return str(root / "training" / "LOG.md") if (root / "pyproject.toml").exists() else "training/LOG.md"


DEFAULT_LOG = _default_log()


# -- data --------------------------------------------------------------------------

class Data:
    """All crops of one split on the device as uint8, with geometry at the training size."""

    def __init__(self, faceset, size: int, device: torch.device):
        imgs = torch.from_numpy(np.ascontiguousarray(faceset.images)).permute(0, 3, 1, 2)  # N×3×H×W uint8
        src = imgs.shape[-1]
        f = size / src
        if size != src:
            out = []
            for i in range(0, len(imgs), 1024):
                x = imgs[i : i + 1024].float()
                x = F.interpolate(x, size=(size, size), mode="area")
                out.append(x.round().clamp(0, 255).to(torch.uint8))
            imgs = torch.cat(out) if out else imgs[:, :, :size, :size]
        self.images = imgs.contiguous().to(device)
        self.landmarks = torch.from_numpy(faceset.landmarks.astype(np.float32) * f).to(device)  # crop px
        er = faceset.erase.astype(np.float64) * f
        va = faceset.valid.astype(np.float64) * f
        # Erase area rounded outwards, valid area inwards: never less erased.
        erase = np.stack([np.floor(er[:, 0]), np.floor(er[:, 1]), np.ceil(er[:, 2]), np.ceil(er[:, 3])], 1)
        valid = np.stack([np.ceil(va[:, 0]), np.ceil(va[:, 1]), np.floor(va[:, 2]), np.floor(va[:, 3])], 1)
        self.erase = torch.from_numpy(np.clip(erase, 0, size).astype(np.int64)).to(device)
        self.valid = torch.from_numpy(np.clip(valid, 0, size).astype(np.int64)).to(device)
        self.size = size
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, gen: torch.Generator | None = None, augment: bool = False, jitter: float = 0.03):
        """(image [-1,1], erase, pad, landmarks [0,1]) for indices; optional flip + shift jitter."""
        idx = idx.to(self.device)
        img = self.images[idx].float()
        lm = self.landmarks[idx].clone()
        er = self.erase[idx].clone()
        va = self.valid[idx].clone()
        s = self.size
        b = len(idx)
        if augment:
            # Random numbers are drawn on the CPU generator, so the stream is
            # the same on every device and is saved in the checkpoint.
            flip = (torch.rand(b, generator=gen) < 0.5).to(self.device)
            j = max(0, int(round(jitter * s)))
            shift = torch.randint(-j, j + 1, (b, 2), generator=gen).to(self.device)
            img = torch.where(flip[:, None, None, None], img.flip(3), img)
            lm_f = lm[:, list(FLIP_PERM)].clone()
            lm_f[..., 0] = s - lm_f[..., 0]
            lm = torch.where(flip[:, None, None], lm_f, lm)
            for box in (er, va):
                fx1, fx2 = s - box[:, 2], s - box[:, 0]
                box[:, 0] = torch.where(flip, fx1, box[:, 0])
                box[:, 2] = torch.where(flip, fx2, box[:, 2])
            if j > 0:
                img = shift_images(img, shift[:, 0], shift[:, 1])
                lm = lm + shift[:, None, :].float()
                for box in (er, va):
                    box += shift.repeat(1, 2)
                    box.clamp_(0, s)
        erase = box_mask(er, s)
        pad = 1.0 - box_mask(va, s)
        image = img / 127.5 - 1.0
        return image, erase, pad, lm / s


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """B×1×S×S float mask, 1 inside the integer boxes (x1, y1, x2, y2)."""
    r = torch.arange(size, device=boxes.device)
    mx = (r[None] >= boxes[:, 0:1]) & (r[None] < boxes[:, 2:3])  # B×S
    my = (r[None] >= boxes[:, 1:2]) & (r[None] < boxes[:, 3:4])
    return (my[:, :, None] & mx[:, None, :]).float()[:, None]


def shift_images(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move each image by integer (dx, dy) pixels, filling with zeros."""
    b, c, h, w = x.shape
    xs = torch.arange(w, device=x.device)[None] - dx[:, None]  # B×W source column
    ys = torch.arange(h, device=x.device)[None] - dy[:, None]
    okx = (xs >= 0) & (xs < w)
    oky = (ys >= 0) & (ys < h)
    x = x.gather(3, xs.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
    x = x.gather(2, ys.clamp(0, h - 1)[:, None, :, None].expand(b, c, h, w))
    keep = (oky[:, :, None] & okx[:, None, :])[:, None].to(x.dtype)
    return x * keep


def load_split(data_dir: str, split: str):
    from .shards import read_shards

    paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-*.npz")))
    if not paths:
        return None, []
    return read_shards(paths), paths


# -- DiffAugment (Zhao et al. 2020): colour, translation, cutout -----------------

def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Augment a stacked D input (first 3 channels RGB in [-1, 1], the rest masks/maps)."""
    b, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    rgb, rest = x[:, :3], x[:, 3:]
    rgb = rgb + (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) - 0.5)  # brightness
    mean = rgb.mean(1, keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) * 2) + mean  # saturation
    mean = rgb.mean((1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=dt) + 0.5) + mean  # contrast
    x = torch.cat([rgb, rest], 1)
    t = max(1, int(round(w * 0.125)))  # translation, 1/8 of the side
    d = torch.randint(-t, t + 1, (b, 2), device=dev)
    x = shift_images(x, d[:, 0], d[:, 1])
    cs = max(1, int(round(w * 0.5)))  # cutout, half the side
    ox = torch.randint(0, w + (1 - cs % 2), (b, 1), device=dev)
    oy = torch.randint(0, h + (1 - cs % 2), (b, 1), device=dev)
    r = torch.arange(w, device=dev)[None]
    inx = ((r - ox + cs // 2) >= 0) & ((r - ox + cs // 2) < cs)
    iny = ((r - oy + cs // 2) >= 0) & ((r - oy + cs // 2) < cs)
    cut = (iny[:, :, None] & inx[:, None, :])[:, None].to(dt)
    return x * (1 - cut)


# -- checkpoints --------------------------------------------------------------------

def _cast(sd: dict, dtype: torch.dtype) -> dict:
    return {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()) for k, v in sd.items()}


def _opt_state(opt: torch.optim.Optimizer, dtype: torch.dtype, drop_m: bool = False) -> dict:
    """Adam state in `dtype`; with `drop_m`, without the first moments (with
    beta1 = 0 they are just the last gradient and are rebuilt from zero)."""
    sd = opt.state_dict()
    state = {}
    for i, st in sd["state"].items():
        state[i] = {}
        for k, v in st.items():
            if k == "exp_avg" and drop_m:
                continue
            state[i][k] = v.detach().to("cpu", dtype) if torch.is_tensor(v) and k != "step" else (
                v.detach().cpu() if torch.is_tensor(v) else v)
    return {"state": state, "param_groups": sd["param_groups"]}


def _restore_opt(opt: torch.optim.Optimizer, sd: dict) -> None:
    state = {}
    for i, st in sd["state"].items():
        st = {k: (v.float() if torch.is_tensor(v) and k != "step" else v) for k, v in st.items()}
        if "exp_avg" not in st and "exp_avg_sq" in st:
            st["exp_avg"] = torch.zeros_like(st["exp_avg_sq"])
        state[i] = st
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


def build_checkpoint(state: dict, nets: dict, opts: dict, limit: int = MAX_CHECKPOINT_BYTES) -> tuple[bytes, str]:
    """Serialise the run state, choosing the most exact format under `limit` bytes.

    Tried in order: fp32 weights + fp32 Adam (exact resume); the same without
    Adam's first moments when beta1 = 0 (they equal the last gradient: exact
    up to rounding); fp32 weights + bf16 second moments; fp16 weights + bf16
    second moments; fp16 weights without optimizer (Adam restarts).
    """
    n_w = sum(p.numel() for net in nets.values() for p in net.state_dict().values())
    n_p = sum(p.numel() for opt in opts.values() for g in opt.param_groups for p in g["params"])
    beta1_zero = all(g["betas"][0] == 0 for opt in opts.values() for g in opt.param_groups)
    f32, f16, b16 = torch.float32, torch.float16, torch.bfloat16
    plans = [("fp32+adam32", f32, f32, False)]
    if beta1_zero:
        plans += [("fp32+adam32v", f32, f32, True), ("fp32+adam16v", f32, b16, True), ("fp16+adam16v", f16, b16, True)]
    else:
        plans += [("fp32+adam16", f32, b16, False), ("fp16+adam16", f16, b16, False)]
    plans.append(("fp16", f16, None, False))
    for name, wdt, odt, drop_m in plans:
        est = n_w * wdt.itemsize + (n_p * odt.itemsize * (1 if drop_m else 2) if odt else 0)
        if est > limit and name != "fp16":
            continue
        ck = dict(state)
        ck["format"] = name
        ck["nets"] = {k: _cast(net.state_dict(), wdt) for k, net in nets.items()}
        ck["opts"] = {k: _opt_state(o, odt, drop_m) for k, o in opts.items()} if odt is not None else None
        buf = io.BytesIO()
        torch.save(ck, buf)
        data = buf.getvalue()
        if len(data) <= limit or name == "fp16":
            return data, name
    raise AssertionError("unreachable")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state(data_gen: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "data": data_gen.get_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict, data_gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    data_gen.set_state(st["data"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(str(path), map_location=map_location, weights_only=False)


def load_generator(path: str | os.PathLike, ema: bool = True) -> Generator:
    """The (EMA) generator of a checkpoint, in fp32 and eval mode."""
    ck = load_checkpoint(path)
    g = Generator(Config.from_dict(ck["config"]))
    g.load_state_dict({k: v.float() for k, v in ck["nets"]["G_ema" if ema else "G"].items()})
    return g.eval().requires_grad_(False)


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
        image, erase, pad, lm = data.batch(idx)
        fakes.append(to_uint8(g(image, erase, pad, lm, z_all[idx].to(device))))
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
        "real_pose_err": float(ref["pose"]), "real_det_rate": float(ref["rate"]), "eval_s": time.time() - t0,
    }


def _detector():
    try:
        from ..detection import FaceDetector

        return FaceDetector(threads=2)
    except Exception as e:  # noqa: BLE001 - report and go on without pose numbers
        print(f"[train] no face detector for the pose metric: {e}", file=sys.stderr)
        return None


# -- LOG.md -------------------------------------------------------------------------

LOG_HEADER = """# Generator training log

One line per training leg (`anonyface-train train`), appended automatically.
FD = Fréchet distance of generated vs real validation crops on ImageNet
MobileNetV2 1280-d pooled features (fixed first-N validation crops, fixed z):
comparable only across these legs, **not** to published FID. Pose error = mean
landmark distance (our RetinaFace on the generated crop vs the conditioning
landmarks) / inter-ocular distance; det. = share of generated crops where a
face was detected. "real" columns give the same measures on the real crops.

| date (UTC) | run | config | device | minutes | steps | images seen | img/s | G adv | L1 | perc | D loss | FD | pose err | det. | real pose | real det. |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def append_log(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(LOG_HEADER)

    def f(v, fmt="{:.3f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    cells = [
        row["date"], row["run"], row["config"], row["device"], f(row["minutes"], "{:.1f}"), str(row["step"]),
        str(row["images_seen"]), f(row["img_s"], "{:.1f}"), f(row.get("g_adv")), f(row.get("l1")), f(row.get("perc")),
        f(row.get("d_loss")), f(row.get("fd"), "{:.2f}"), f(row.get("pose_err")), f(row.get("det_rate"), "{:.2f}"),
        f(row.get("real_pose_err")), f(row.get("real_det_rate"), "{:.2f}"),
    ]
    with open(path, "a") as fh:
        fh.write("| " + " | ".join(cells) + " |\n")


# -- training -----------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="anonyface-train train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with train-*.npz and val-*.npz shards")
    p.add_argument("--run", required=True, help="run folder: checkpoint.pt, samples.png, log.jsonl")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of this leg, evaluation included")
    p.add_argument("--config", default="cpu", choices=sorted(CONFIGS), help="model size (ignored on resume)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--steps", type=int, default=None, help="stop at this total step count (tests)")
    p.add_argument("--log", default=DEFAULT_LOG, help="Markdown table to append a line to ('' for none; default: training/LOG.md at the repo root)")
    p.add_argument("--eval-n", type=int, default=1000, help="validation crops for FD / pose (0: no evaluation)")
    p.add_argument("--ckpt-minutes", type=float, default=3.0, help="checkpoint interval")
    p.add_argument("--log-seconds", type=float, default=30.0, help="interval of log lines")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--l1", type=float, default=None, help="L1 weight on the erased region")
    p.add_argument("--perc", type=float, default=None, help="perceptual (MobileNetV2) weight")
    p.add_argument("--adv", type=float, default=None, help="adversarial weight")
    p.add_argument("--r1", type=float, default=None, help="R1 gamma")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (cpu device)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (cuda)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.time()
    budget = args.minutes * 60.0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    ck_path = run / CHECKPOINT
    ck = load_checkpoint(ck_path) if ck_path.exists() else None

    config = Config.from_dict(ck["config"]) if ck else get_config(args.config)
    if ck and args.config != config.name:
        print(f"[train] resuming a '{config.name}' run; --config {args.config} ignored", file=sys.stderr)
    hp = dict(ck["hparams"]) if ck else {
        "batch": config.batch, "lr": config.lr, "l1": config.l1_weight, "perc": config.perc_weight,
        "adv": config.adv_weight, "r1": config.r1_gamma, "ema_kimg": config.ema_kimg,
    }
    for k in ("batch", "lr", "l1", "perc", "adv", "r1"):
        v = getattr(args, k)
        if v is not None:
            hp[k] = v
    batch = int(hp["batch"])

    if not ck:
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        random.seed(args.seed)
    data_gen = torch.Generator().manual_seed(args.seed + 1)

    # data
    t0 = time.time()
    train_set, train_paths = load_split(args.data, "train")
    if train_set is None:
        raise SystemExit(f"no train-*.npz shards in {args.data}")
    val_set, _ = load_split(args.data, "val")
    train = Data(train_set, config.size, device)
    val = Data(val_set, config.size, device) if val_set is not None and len(val_set) else None
    del train_set, val_set
    print(f"[train] data: {len(train)} train, {len(val) if val else 0} val crops at {config.size}px "
          f"({time.time() - t0:.1f} s)", flush=True)

    # models
    G = Generator(config).to(device)
    D = Discriminator(config).to(device)
    G_ema = Generator(config).to(device).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    c = R1_INTERVAL / (R1_INTERVAL + 1)
    fused = {"fused": True} if cuda else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=hp["lr"], betas=(0.0, 0.99), eps=1e-8, **fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=hp["lr"] * c, betas=(0.0, 0.99 ** c), eps=1e-8, **fused)
    step, seen, legs, eval_s_prev = 0, 0, 0, None
    if ck:
        for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
            net.load_state_dict({k: v.float() for k, v in ck["nets"][name].items()})
        if ck.get("opts"):
            for name, opt in (("G", opt_g), ("D", opt_d)):
                _restore_opt(opt, ck["opts"][name])
                for g_ in opt.param_groups:  # a changed --lr applies on resume
                    g_["lr"] = hp["lr"] * (1 if name == "G" else c)
        else:
            print("[train] checkpoint holds no optimizer state: Adam restarts", flush=True)
        step, seen, legs = ck["step"], ck["images_seen"], ck.get("legs", 0)
        eval_s_prev = ck.get("eval_s")
        print(f"[train] resumed {ck_path} at step {step}, {seen} images ({ck.get('format')})", flush=True)
    # channels-last pays on the CPU too (oneDNN): measured 1.3-2× per step.
    G = G.to(memory_format=torch.channels_last)
    D = D.to(memory_format=torch.channels_last)
    G_step, d_forward = G, D.forward_stacked
    if args.compile:
        G_step, d_forward = torch.compile(G), torch.compile(D.forward_stacked)

    from .mobilenet import FeatureNet

    featnet = FeatureNet().to(device).to(memory_format=torch.channels_last)
    perc_size = max(64, config.size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    nets = {"G": G, "D": D, "G_ema": G_ema}
    opts = {"G": opt_g, "D": opt_d}

    def save(extra: dict | None = None, rng: dict | None = None) -> str:
        st = {
            "version": 1, "config": config.to_dict(), "hparams": hp, "step": step, "images_seen": seen,
            "legs": legs, "rng": rng or rng_state(data_gen), "eval_s": eval_s_prev,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra:
            st.update(extra)
        blob, fmt = build_checkpoint(st, nets, opts)
        atomic_write(ck_path, blob)
        return fmt

    # The real crops' reference is computed (once per run) before training; its
    # duration, plus a timed generator batch, calibrates the time kept for the
    # evaluation at the end of the leg.
    n_eval = min(args.eval_n, len(val)) if val else 0
    detector, ref = None, None
    reserve = 5.0
    if n_eval >= 2:
        detector = _detector()
        ref = reference(val, n_eval, run, featnet, device, detector)
        t0 = time.time()
        with torch.no_grad():
            generate(G_ema, val, min(n_eval, 32), config.zdim, device)
        gen_s = (time.time() - t0) * n_eval / min(n_eval, 32)
        est = float(ref["seconds"]) + gen_s
        reserve += 1.3 * max(est, eval_s_prev or 0.0)
    deadline = t_start + budget - reserve
    if ck:  # last thing before the loop: building nets above draws random numbers
        set_rng_state(ck["rng"], data_gen)
    log_f = open(run / "log.jsonl", "a")
    sums: dict[str, float] = {}
    count = 0
    last_r1 = None
    leg_step0, leg_seen0 = step, seen
    t_train = time.time()
    t_log = t_ckpt = t_train
    ema_beta_cfg = hp["ema_kimg"] * 1000
    print(f"[train] {config.name}: G {G.num_params() / 1e6:.2f} M, D {D.num_params() / 1e6:.2f} M params, "
          f"batch {batch}, device {device}, budget {args.minutes:.1f} min (eval reserve {reserve:.0f} s)", flush=True)

    def log_line(final: bool = False) -> dict:
        now = time.time()
        line = {"time": now, "step": step, "kimg": seen / 1000,
                "img_s": (seen - leg_seen0) / max(1e-6, now - t_train)}
        line.update({k: v / max(1, count) for k, v in sums.items()})
        if last_r1 is not None:
            line["r1"] = last_r1
        log_f.write(json.dumps(line) + "\n")
        log_f.flush()
        print("[train] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in line.items() if k != "time"),
              flush=True)
        return line

    # Ctrl-C / SIGTERM end the leg cleanly: checkpoint, samples, evaluation, log.
    # A second signal stops at once.
    stop = {"requested": False}

    def request_stop(signum, _frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print(f"[train] signal {signum}: ending the leg after this step", flush=True)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)

    while True:
        if stop["requested"]:
            break
        if args.steps is not None and step >= args.steps:
            break
        if time.time() >= deadline and step > leg_step0:
            break
        if time.time() >= deadline and args.steps is None:
            break
        idx = torch.randint(len(train), (batch,), generator=data_gen)
        image, erase, pad, lm = train.batch(idx, data_gen, augment=True)
        z = torch.randn(batch, config.zdim, generator=data_gen).to(device)
        image = image.contiguous(memory_format=torch.channels_last)

        # -- generator step
        D.requires_grad_(False)
        with autocast:
            fake = G_step(image, erase, pad, lm, z)
            logits = d_forward(diff_augment(D.inputs(fake, erase, pad, lm))) if hp["adv"] > 0 else None
        fake32 = fake.float()
        adv = F.softplus(-logits.float()).mean() if logits is not None else fake32.new_zeros(())
        l1 = ((fake32 - image).abs() * erase).sum() / (erase.sum() * 3 + 1e-6)
        if hp["perc"] > 0:
            with autocast:
                with torch.no_grad():
                    f_real = featnet.taps(image, perc_size)
                f_fake = featnet.taps(fake, perc_size)
            perc = sum((a.float() - b.float()).abs().mean() for a, b in zip(f_fake, f_real))
        else:
            perc = fake32.new_zeros(())
        loss_g = hp["adv"] * adv + hp["l1"] * l1 + hp["perc"] * perc
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)

        # -- discriminator step
        d_loss = fake32.new_zeros(())
        r1 = fake32.new_zeros(())
        if hp["adv"] > 0:
            with autocast:
                d_fake = d_forward(diff_augment(D.inputs(fake.detach(), erase, pad, lm)))
                d_real = d_forward(diff_augment(D.inputs(image, erase, pad, lm)))
            d_loss = F.softplus(d_fake.float()).mean() + F.softplus(-d_real.float()).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if step % R1_INTERVAL == 0 and hp["r1"] > 0:
                real = image.detach().requires_grad_(True)
                out = D.forward_stacked(diff_augment(D.inputs(real, erase, pad, lm)))
                (grad,) = torch.autograd.grad(out.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum((1, 2, 3)).mean()
                (r1 * (hp["r1"] / 2) * R1_INTERVAL).backward()
                last_r1 = float(r1.detach())
            opt_d.step()

        # -- EMA of G (StyleGAN2-ADA: half-life in images, ramped up early on)
        seen += batch
        step += 1
        ema_nimg = min(ema_beta_cfg, seen * 0.05)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p.detach(), 1 - beta)

        for k, v in (("g_adv", adv), ("l1", l1), ("perc", perc), ("d_loss", d_loss)):
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        count += 1
        if not all(math.isfinite(float(v.detach())) for v in (loss_g, d_loss)):
            raise FloatingPointError(f"non-finite loss at step {step}: G {float(loss_g)}, D {float(d_loss)}")
        now = time.time()
        if now - t_log >= args.log_seconds or step == leg_step0 + 1:
            last = log_line()
            t_log = now
        if now - t_ckpt >= args.ckpt_minutes * 60:
            save()
            t_ckpt = now

    # end of the leg: checkpoint, samples, evaluation, logs
    train_s = time.time() - t_train
    last = log_line(final=True) if count else {}
    legs += 1
    rng = rng_state(data_gen)
    fmt = save(rng=rng)
    G_ema.eval()
    if val is not None:
        k = min(8, len(val))
        gen = torch.Generator().manual_seed(FIXED_SEED)
        z = torch.randn(k, config.zdim, generator=gen).to(device)
        image, erase, pad, lm = val.batch(torch.arange(k))
        with torch.no_grad():
            fake = G_ema(image, erase, pad, lm, z)
        write_png(run / "samples.png", sample_grid(image, erase, fake))
    metrics = evaluate(G_ema, val, n_eval, ref, featnet, device, detector) if ref is not None else {}
    if metrics:
        eval_s_prev = metrics["eval_s"]
        save(rng=rng)
    img_s = (seen - leg_seen0) / max(train_s, 1e-6)
    summary = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "run": str(run), "config": config.name,
        "device": _device_name(device), "minutes": (time.time() - t_start) / 60, "step": step, "images_seen": seen,
        "leg_images": seen - leg_seen0, "img_s": img_s, "checkpoint_format": fmt,
        "checkpoint_bytes": ck_path.stat().st_size, "data_shards": len(train_paths),
    }
    summary.update({k: last.get(k) for k in ("g_adv", "l1", "perc", "d_loss", "r1")})
    summary.update(metrics)
    log_f.write(json.dumps({"leg": legs, **summary}) + "\n")
    log_f.close()
    if args.log:
        append_log(Path(args.log), summary)
    print("[train] summary " + json.dumps(summary), flush=True)
    return summary


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu×{torch.get_num_threads()}"


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
