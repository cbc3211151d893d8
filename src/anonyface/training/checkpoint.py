"""Checkpoints of a run: build (the most exact format under 16 MiB), atomic
write, load, and the RNG states that make a resumed leg equal an unbroken one.

Formats, tried in order until one fits `MAX_CHECKPOINT_BYTES`:
fp32 weights + fp32 Adam (exact resume); the same without Adam's first moments
when beta1 = 0 (they equal the last gradient); fp32 weights + bf16 second
moments; fp16 weights + bf16 second moments; fp16 weights without optimizer
(Adam restarts).
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import torch

from ..media import write_atomic

from .model import Config, Generator

CHECKPOINT = "checkpoint.pt"
MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024 - 64 * 1024  # leave room for the pickle overhead


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


def restore_opt(opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load an optimizer state saved by `build_checkpoint` (any format)."""
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


#: Temporary file, fsync, rename: a reader sees the old or the new file, never half
#: (the one atomic-write helper of the project, `media.write_atomic`).
atomic_write = write_atomic


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
