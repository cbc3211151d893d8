"""`anonyface-train grow CHECKPOINT RUN`: start a run one level larger from a trained one.

    anonyface-train grow runs/fast-expr/checkpoint.pt runs/quality     # 64 px → 128 px
    anonyface-train train --data data/faces --run runs/quality --log training/LOG.md

The quality tier is the fast tier grown (`model.grow`): the trained 64-px
networks become the inner ones, and a 128-px level is added whose RGB starts at
zero, so the grown generator begins by painting exactly the fast tier's face,
upsampled, and training only has to add what a 128-px face has beyond it. On
two CPU cores this is what makes a 128-px tier trainable at all: a fresh 128-px
model would first have to relearn everything the 64-px one knows. The
optimizers and the projected discriminator (sized to the crop) restart; images
seen carry over (the log says which leg grew).

    anonyface-train grow runs/fast-expo/checkpoint.pt runs/quality2 --outer-from runs/quality/checkpoint.pt

regrows on a re-trained fast model but keeps the 128-px level an earlier grown
run trained (`--outer-from`: every tensor outside `body.*`, G, G_ema and D):
when the inner model is fixed (a bias trained out of it), the outer level's
training is not thrown away with the old inner one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, atomic_write, build_checkpoint, load_checkpoint
from .model import Config, Discriminator, Generator, grow


def grow_checkpoint(src: str | Path, run: str | Path, seed: int = 0, outer_from: str | Path | None = None) -> dict:
    """Write RUN/checkpoint.pt, the grown version of `src` (with the outer level of the
    grown checkpoint `outer_from`, if given); returns its state (without nets)."""
    ck = load_checkpoint(src)
    config, nets = grow(Config.from_dict(ck["config"]), {k: ck["nets"][k] for k in ("G", "D", "G_ema")}, seed)
    if outer_from is not None:
        old = load_checkpoint(outer_from)
        if Config.from_dict(old["config"]) != config:
            raise ValueError(f"{outer_from} is not a '{config.name}' model grown from this one's config")
        for name in ("G", "D", "G_ema"):
            for k in nets[name]:
                if not k.startswith("body."):
                    nets[name][k] = old["nets"][name][k].float()
    modules = {"G": Generator(config), "D": Discriminator(config), "G_ema": Generator(config)}
    for name, m in modules.items():
        m.load_state_dict({k: v.float() for k, v in nets[name].items()})
    state = {
        "version": 1, "config": config.to_dict(), "hparams": ck["hparams"], "step": ck["step"],
        "images_seen": ck["images_seen"], "legs": ck.get("legs", 0), "rng": ck["rng"], "eval_s": None,
        "grown_from": {"checkpoint": str(src), "size": int(ck["config"]["size"]), "images_seen": ck["images_seen"],
                       **({"outer_from": str(outer_from)} if outer_from is not None else {})},
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    blob, fmt = build_checkpoint(state, modules, {})
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write(run / CHECKPOINT, blob)
    return {**state, "format": fmt, "bytes": len(blob)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anonyface-train grow", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a trained run's checkpoint.pt (not grown)")
    p.add_argument("run", help="new run folder; its checkpoint.pt is written (refused if it exists)")
    p.add_argument("--seed", type=int, default=0, help="initialisation of the new level")
    p.add_argument("--outer-from", default=None,
                   help="a grown checkpoint of the same config: take its trained outer level instead of a fresh one")
    args = p.parse_args(argv)
    if (Path(args.run) / CHECKPOINT).exists():
        print(f"{Path(args.run) / CHECKPOINT} exists: grow into a new run folder", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    st = grow_checkpoint(args.checkpoint, args.run, args.seed, args.outer_from)
    c = st["config"]
    print(f"[grow] {args.checkpoint} ({st['grown_from']['size']} px, {st['images_seen']} images) → "
          f"{Path(args.run) / CHECKPOINT}: '{c['name']}' at {c['size']} px, {st['format']}, {st['bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
