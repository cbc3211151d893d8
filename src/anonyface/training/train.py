"""Train the face generator in resumable legs: `anonyface-train train --data DIR --run DIR`.

One leg: load the shards, resume from RUN/checkpoint.pt if there is one, train
for a wall-clock budget, checkpoint atomically every few minutes and at the
end, write RUN/samples.png, evaluate a fixed validation set (Fréchet distance
on MobileNetV2 features, pose error with our own detector), append a line to
RUN/log.jsonl and to the Markdown table given by `--log` (default RUN/LOG.md),
and print a summary.

This file holds only the leg's loop and its command line; the rooms:
  data.py        shards → Data on the device → batches
  augment.py     flips / shift jitter of the data, DiffAugment of D's inputs
  loss.py        G / D (and projected-D) losses with their backward passes
  checkpoint.py  build / save / load, atomic write, RNG state
  evaluate.py    FD, pose error, sample grid      logbook.py  the LOG.md table
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (
    CHECKPOINT, MAX_CHECKPOINT_BYTES, atomic_write, build_checkpoint, load_checkpoint, load_generator,
    restore_opt, rng_state, set_rng_state,
)
from .data import Data, box_mask, load_split
from .augment import EXPOSURE_GAIN, EXPOSURE_P, LOWRES_P, diff_augment, shift_images
from .evaluate import FIXED_SEED, _detector, evaluate, expression_meter, generate, reference, sample_grid, write_png
from .logbook import LOG_HEADER, append_log
from .loss import R1_INTERVAL, FaceGANLoss, projected_d
from .model import CONFIGS, EXPRESSION_DIM, Config, Discriminator, Generator, add_expression, get_config

# Names other code and older scripts import from here.
__all__ = [
    "CHECKPOINT", "MAX_CHECKPOINT_BYTES", "FIXED_SEED", "LOG_HEADER", "R1_INTERVAL", "Data", "append_log",
    "atomic_write", "box_mask", "build_checkpoint", "diff_augment", "load_checkpoint", "load_generator",
    "load_split", "main", "shift_images",
]


# -- training -----------------------------------------------------------------------

#: The hparams a leg's command line may override (kept in the checkpoint), and that its summary reports.
LEG_HPARAMS = ("batch", "lr", "l1", "perc", "adv", "r1", "proj", "exposure_p", "exposure_gain", "lowres_p")

def parse_args(argv):
    p = argparse.ArgumentParser(prog="anonyface-train train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with train-*.npz and val-*.npz shards")
    p.add_argument("--run", required=True, help="run folder: checkpoint.pt, samples.png, log.jsonl")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of this leg, evaluation included")
    p.add_argument("--config", default="cpu", choices=sorted(CONFIGS), help="model size (ignored on resume)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--steps", type=int, default=None, help="stop at this total step count (tests)")
    p.add_argument("--log", default=None,
                   help="Markdown table to append the leg's line to (default RUN/LOG.md; '' for none); "
                        "the project's legs pass --log training/LOG.md")
    p.add_argument("--eval-n", type=int, default=1000, help="validation crops for FD / pose (0: no evaluation)")
    p.add_argument("--ckpt-minutes", type=float, default=3.0, help="checkpoint interval")
    p.add_argument("--log-seconds", type=float, default=30.0, help="interval of log lines")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--l1", type=float, default=None, help="L1 weight on the erased region")
    p.add_argument("--perc", type=float, default=None, help="perceptual (MobileNetV2) weight")
    p.add_argument("--adv", type=float, default=None, help="adversarial weight")
    p.add_argument("--r1", type=float, default=None, help="R1 gamma")
    p.add_argument("--proj", type=float, default=None,
                   help="weight of the projected discriminator on frozen MobileNetV2 features (0: none)")
    p.add_argument("--exposure-p", dest="exposure_p", type=float, default=None,
                   help="share of training crops darkened as by a camera's exposure (default 0.25; kept on resume)")
    p.add_argument("--exposure-gain", dest="exposure_gain", type=float, default=None,
                   help="darkest exposure gain in linear light (default 0.04; kept on resume)")
    p.add_argument("--lowres-p", dest="lowres_p", type=float, default=None,
                   help="share of training crops resampled to a lower resolution and back, as small faces' "
                        "crops are at run time (default 0; kept on resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (cpu device)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (cuda)")
    p.add_argument("--expression", action="store_true",
                   help="condition on expression (mouth, eyes, smile, brows; docs/expression.md): a new run "
                        "starts with it, a landmarks-only run grows it with zero-initialised weights "
                        "(the shards need `anonyface-train conditions DATA` first)")
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
    if args.expression and not config.edim:
        if ck:
            config, grown = add_expression(config, ck["nets"])
            ck = {**ck, "nets": {**ck["nets"], **grown}, "opts": None, "config": config.to_dict()}
            print(f"[train] grew the '{config.name}' run to {config.edim} expression conditions "
                  "(zero-initialised; Adam restarts)", flush=True)
        else:
            config = dataclasses.replace(config, edim=EXPRESSION_DIM)
    hp = dict(ck["hparams"]) if ck else {
        "batch": config.batch, "lr": config.lr, "l1": config.l1_weight, "perc": config.perc_weight,
        "adv": config.adv_weight, "r1": config.r1_gamma, "ema_kimg": config.ema_kimg,
        "proj": config.proj_weight,
    }
    hp.setdefault("proj", 0.0)  # checkpoints from before the projected D
    hp.setdefault("exposure_p", EXPOSURE_P)  # checkpoints from before the setting
    hp.setdefault("exposure_gain", EXPOSURE_GAIN)
    hp.setdefault("lowres_p", LOWRES_P)
    for k in LEG_HPARAMS:
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
    if config.edim and not train.has_expression:
        raise SystemExit(f"the shards in {args.data} have no expression conditions: "
                         f"run `anonyface-train conditions {args.data}` first")
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
                restore_opt(opt, ck["opts"][name])
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
    P = None
    if hp["proj"] > 0:
        P = projected_d(perc_size).to(device)
        opt_p = torch.optim.Adam(P.parameters(), lr=hp["lr"], betas=(0.0, 0.99), eps=1e-8, **fused)
        if ck and "P" in ck["nets"]:
            P.load_state_dict({k: v.float() for k, v in ck["nets"]["P"].items()})
            if ck.get("opts") and "P" in ck["opts"]:
                restore_opt(opt_p, ck["opts"]["P"])
                for g_ in opt_p.param_groups:
                    g_["lr"] = hp["lr"]
        elif ck:
            print("[train] the projected discriminator starts fresh", flush=True)
        nets["P"], opts["P"] = P, opt_p
    loss = FaceGANLoss(G, D, featnet, hp, perc_size, autocast, g_forward=G_step, d_forward=d_forward, P=P)

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

    # The real crops' reference is computed (once per run) before training. The
    # time kept for the evaluation at the end of the leg is measured here, on
    # this machine: the whole evaluation (generate, features, detector) on a
    # few crops, scaled to n. (A reference or an earlier leg's evaluation time
    # may come from another machine: a GPU leg's reference is made on the CPU.)
    n_eval = min(args.eval_n, len(val)) if val else 0
    detector, ref = None, None
    reserve = 5.0
    if n_eval >= 2:
        detector = _detector()
        ref = reference(val, n_eval, run, featnet, device, detector)
        k = min(n_eval, 16)
        if val.has_expression:
            expression_meter()  # loaded once, before the timing that is scaled to n
        t0 = time.time()
        with torch.no_grad():
            evaluate(G_ema, val, k, {"feats": ref["feats"][:k], "pose": ref["pose"], "rate": ref["rate"]},
                     featnet, device, detector)
        est = (time.time() - t0) * n_eval / k
        reserve += 1.3 * est
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
    print(f"[train] {config.name}: G {G.num_params() / 1e6:.2f} M, D {D.num_params() / 1e6:.2f} M"
          + (f", P {P.num_params() / 1e6:.2f} M" if P is not None else "") + " params, "
          f"batch {batch}, device {device}, budget {args.minutes:.1f} min (eval reserve {reserve:.0f} s); augmentation: exposure "
          f"{hp['exposure_p']:g} of crops down to ×{hp['exposure_gain']:g}, low resolution {hp['lowres_p']:g}", flush=True)

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
            break  # every leg takes at least one step, however short its budget
        idx = torch.randint(len(train), (batch,), generator=data_gen)
        image, erase, pad, lm, ex = train.batch(idx, data_gen, augment=True,
                                                exposure_p=hp["exposure_p"], exposure_gain=hp["exposure_gain"],
                                                lowres_p=hp["lowres_p"])
        ex = ex if config.edim else None
        z = torch.randn(batch, config.zdim, generator=data_gen).to(device)
        image = image.contiguous(memory_format=torch.channels_last)

        # -- generator step, then D's (and P's) on the same fake, detached
        opt_g.zero_grad(set_to_none=True)
        fake, parts = loss.generator(image, erase, pad, lm, z, ex)
        opt_g.step()
        opt_d.zero_grad(set_to_none=True)
        d_parts = loss.discriminator(fake, image, erase, pad, lm, step, ex)
        if hp["adv"] > 0:
            opt_d.step()
        if d_parts["r1"] is not None:
            last_r1 = float(d_parts["r1"].detach())
        if P is not None:
            opt_p.zero_grad(set_to_none=True)
            parts["p_loss"] = loss.projected(erase)
            opt_p.step()
        adv, l1, perc, loss_g, d_loss = (parts["g_adv"], parts["l1"], parts["perc"], parts["loss_g"],
                                         d_parts["d_loss"])

        # -- EMA of G (StyleGAN2-ADA: half-life in images, ramped up early on)
        seen += batch
        step += 1
        ema_nimg = min(ema_beta_cfg, seen * 0.05)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p.detach(), 1 - beta)

        extra = (("g_proj", parts["g_proj"]), ("p_loss", parts["p_loss"])) if P is not None else ()
        for k, v in (("g_adv", adv), ("l1", l1), ("perc", perc), ("d_loss", d_loss), *extra):
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
        image, erase, pad, lm, ex = val.batch(torch.arange(k))
        with torch.no_grad():
            fake = G_ema(image, erase, pad, lm, z, ex if config.edim else None)
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
    summary.update({k: last.get(k) for k in ("g_adv", "l1", "perc", "d_loss", "r1", "g_proj", "p_loss") if k in last})
    summary["hparams"] = {k: hp[k] for k in LEG_HPARAMS}
    summary.update(metrics)
    log_f.write(json.dumps({"leg": legs, **summary}) + "\n")
    log_f.close()
    log_path = run / "LOG.md" if args.log is None else (Path(args.log) if args.log else None)
    if log_path is not None:
        append_log(log_path, summary)
    print("[train] summary " + json.dumps(summary), flush=True)
    return summary


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu×{torch.get_num_threads()}"


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
