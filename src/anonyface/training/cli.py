"""`anonyface-train`: build the data set, train the generator in legs, export it.

    anonyface-train dataset ../shared/data/train data/faces
    anonyface-train conditions data/faces      (add the expression conditions to existing shards)
    anonyface-train train --data data/faces --run runs/cpu --minutes 60 --config cpu --log training/LOG.md
    anonyface-train grow runs/cpu/checkpoint.pt runs/quality      (the 128-px tier from the 64-px one)
    anonyface-train export runs/cpu/checkpoint.pt src/anonyface/models/generator.onnx
    anonyface-train slim training/checkpoint.pt   (fp16, no Adam: the form checkpoints are committed in)
    anonyface-train leg pack --tier quality      (then on a GPU: make gpu-leg; docs/generator.md)
"""

from __future__ import annotations

import sys

COMMANDS = {
    "dataset": "anonyface.training.dataset",
    "train": "anonyface.training.train",
    "export": "anonyface.training.export",
    "leg": "anonyface.training.leg",
    "evaluate": "anonyface.training.evaluate",
    "conditions": "anonyface.training.conditions",
    "grow": "anonyface.training.grow",
    "slim": "anonyface.training.slim",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        print(f"\ncommands: {', '.join(COMMANDS)} (each has --help)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    result = module.main(argv[1:])
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
