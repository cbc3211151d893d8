"""`anonyface-train slim CHECKPOINT...`: the form a checkpoint is committed in.

fp16 weights, no optimizer state (Adam restarts on resume): about a third of a
leg's checkpoint. Committed checkpoints travel with every device call inside the
64 MiB that the tree shares with `carry`, so every MiB kept here is a MiB of
training crops for the GPU leg (docs/generator.md). Keep the exact checkpoint in
the run folder for the legs of the machine that trained it.
"""

from __future__ import annotations

import argparse
import io
import sys

import torch

from .checkpoint import _cast, atomic_write, load_checkpoint


def slim(path: str) -> int:
    """Rewrite `path` as fp16 weights without optimizer state; returns its new size."""
    ck = load_checkpoint(path)
    ck["nets"] = {k: _cast(sd, torch.float16) for k, sd in ck["nets"].items()}
    ck["opts"] = None
    ck["format"] = "fp16"
    buf = io.BytesIO()
    torch.save(ck, buf)
    atomic_write(path, buf.getvalue())
    return len(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anonyface-train slim", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    for path in p.parse_args(argv).checkpoints:
        print(f"[slim] {path}: {slim(path) / 2**20:.1f} MiB (fp16, no optimizer state)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
