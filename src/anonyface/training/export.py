"""Export the EMA generator of a checkpoint to ONNX: `anonyface-train export RUN/checkpoint.pt OUT.onnx`.

Interface (opset 17, dynamic batch B, S = crop side, stored in metadata_props
with zdim and the config name):
  inputs  image [B,3,S,S] float32 in [-1, 1]; erase [B,1,S,S] (1 = erased);
          pad [B,1,S,S] (1 = padding); landmarks [B,5,2] in [0, 1] of the crop;
          z [B,zdim] standard normal; expression [B,edim] normalised scalars
          (only when the config has edim > 0: anonyface.expression)
  output  out [B,3,S,S] in [-1, 1]; equal to the input outside the erased area
The export is checked against torch on random inputs (max abs diff ≤ 1e-3,
otherwise it fails) and timed with onnxruntime (2 threads, batch 1 and 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .model import Generator

INPUTS = ("image", "erase", "pad", "landmarks", "z")
TOLERANCE = 1e-3


def input_names(config) -> tuple[str, ...]:
    return INPUTS + (("expression",) if config.edim else ())


class Exported(torch.nn.Module):
    """The generator with its output clamped to [-1, 1]."""

    def __init__(self, g: Generator):
        super().__init__()
        self.g = g

    def forward(self, image, erase, pad, landmarks, z, expression=None):
        return self.g(image, erase, pad, landmarks, z, expression).clamp(-1.0, 1.0)


def random_inputs(size: int, zdim: int, b: int, seed: int = 0, edim: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    erase = torch.zeros(b, 1, size, size)
    pad = torch.zeros(b, 1, size, size)
    for i in range(b):
        x1, y1 = torch.randint(0, size // 4, (2,), generator=g).tolist()
        erase[i, :, y1 : y1 + size * 5 // 8, x1 : x1 + size * 5 // 8] = 1
        pad[i, :, : i * size // 16] = 1
    lm = torch.tensor([[0.38, 0.42], [0.62, 0.42], [0.5, 0.55], [0.41, 0.68], [0.59, 0.68]]).repeat(b, 1, 1)
    lm = lm + torch.randn(b, 5, 2, generator=g) * 0.02
    z = torch.randn(b, zdim, generator=g)
    if edim:
        return image, erase, pad, lm, z, torch.randn(b, edim, generator=g)
    return image, erase, pad, lm, z


def export_generator(g: Generator, path: str | os.PathLike, config_name: str | None = None) -> None:
    import onnx

    g = g.eval().requires_grad_(False).float().cpu()
    c = g.config
    args = random_inputs(c.size, c.zdim, 2, edim=c.edim)
    names = input_names(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Exported(g), args, str(path), input_names=list(names), output_names=["out"], opset_version=17,
            dynamic_axes={k: {0: "batch"} for k in (*names, "out")}, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load(str(path))
    meta = {"size": str(c.size), "zdim": str(c.zdim), "edim": str(c.edim), "config": config_name or c.name,
            "producer": "anonyface.training.export", "config_json": json.dumps(c.to_dict())}
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    tmp = Path(str(path) + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def session(path: str | os.PathLike, threads: int = 2, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check(g: Generator, path: str | os.PathLike, batch: int = 3) -> float:
    """Max abs difference of ORT vs torch on random inputs."""
    c = g.config
    sess = session(path)
    worst = 0.0
    for seed, b in ((0, 1), (1, batch)):
        args = random_inputs(c.size, c.zdim, b, seed, c.edim)
        with torch.no_grad():
            ref = Exported(g)(*args).numpy()
        out = sess.run(None, {k: v.numpy() for k, v in zip(input_names(c), args)})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def bench(path: str | os.PathLike, size: int, zdim: int, threads: int = 2, runs: int = 20, optimize: bool = True,
          edim: int = 0) -> dict:
    """ORT milliseconds per face at batch 1 and 4: median and fastest run (wall
    clock), and CPU time of this process (all threads) per face. On a shared
    machine the fastest run is the closest to what a quiet one gives."""
    sess = session(path, threads, optimize)
    res = {}
    for b in (1, 4):
        names = INPUTS + (("expression",) if edim else ())
        feed = {k: v.numpy() for k, v in zip(names, random_inputs(size, zdim, b, edim=edim))}
        for _ in range(3):
            sess.run(None, feed)
        ts = []
        c0 = time.process_time()
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            ts.append(time.perf_counter() - t)
        res[f"ms_per_face_b{b}"] = float(np.median(ts) * 1000 / b)
        res[f"min_ms_per_face_b{b}"] = float(np.min(ts) * 1000 / b)
        res[f"cpu_ms_per_face_b{b}"] = float((time.process_time() - c0) * 1000 / (runs * b))
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="anonyface-train export", description="Export the EMA generator to ONNX.")
    p.add_argument("checkpoint", help="RUN/checkpoint.pt")
    p.add_argument("output", help="OUT.onnx")
    p.add_argument("--raw", action="store_true", help="export the training generator instead of the EMA one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bench-runs", type=int, default=20, help="timed runs per batch size (0: no timing)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from .checkpoint import load_generator

    g = load_generator(args.checkpoint, ema=not args.raw)
    export_generator(g, args.output)
    diff = check(g, args.output)
    info = {"output": str(args.output), "config": g.config.name, "size": g.config.size, "zdim": g.config.zdim,
            "params": g.num_params(), "bytes": os.path.getsize(args.output), "max_abs_diff": diff}
    if diff > TOLERANCE:
        print(json.dumps(info), file=sys.stderr)
        raise SystemExit(f"ONNX output differs from torch by {diff:.2e} > {TOLERANCE}")
    if args.bench_runs > 0:
        info.update(bench(args.output, g.config.size, g.config.zdim, args.threads, args.bench_runs, edim=g.config.edim))
    print(f"[export] {args.output}: {info['bytes'] / 1e6:.2f} MB, {info['params'] / 1e6:.2f} M params, "
          f"max |ORT - torch| = {diff:.2e}"
          + (f", ORT {info['ms_per_face_b1']:.2f} ms/face (batch 1; fastest {info['min_ms_per_face_b1']:.2f}), "
             f"{info['ms_per_face_b4']:.2f} ms/face (batch 4; fastest {info['min_ms_per_face_b4']:.2f}), "
             f"{args.threads} threads" if args.bench_runs > 0 else ""), flush=True)
    return info


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
