"""How strong must blur and pixelate be? dlib re-identification per setting.

For every face our detector finds (score ≥ the default threshold) that is at
least 60 px wide, the original is aligned once with dlib's 5-point model; each
covering setting is applied to the whole photo and the output is embedded at
exactly the same place (the attacker knows where the face was). A face counts
as re-identified when the distance to the original's embedding is below 0.6
(dlib's same-person threshold). The defaults in `CoverSettings` and the floors
in the CLI are chosen from this table (docs/detection.md, "Cover strength").

    python benchmarks/cover_sweep.py ../shared/data/eval --utk ../shared/data/train/utkface --sample 300

The generators are judged the same way (docs/generator.md, "What the generator
is told"): `--synth A.onnx,B.onnx` paints with each (seed 0) as shipped (a mean
face's landmarks in the detected pose, no expression); `--variants` adds each
with the person's own landmarks (`synth_exact_landmarks`) and, for a model
that takes them, with the expression carried over (`synth_expression`, with
pose and with own landmarks); `--held-out data/faces/val-000.npz` takes the
UTKFace photos only from the generator's held-out identities (the training
set's validation split):

    python benchmarks/cover_sweep.py ../shared/data/eval --utk ../shared/data/train/utkface --sample 300 \
        --held-out data/faces/val-000.npz --synth src/anonyface/models/generator.onnx --variants --only synth
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from anonyface.anonymizers import ClassicCover, CoverSettings
from anonyface.detection import FaceDetector
from anonyface.evaluation.identity import MIN_REID_PX, SAME_PERSON, FaceEmbedder
from anonyface.media import read_image

SETTINGS = [
    ("blur", dict(blur_strength=0.05)),
    ("blur", dict(blur_strength=0.08)),
    ("blur", dict(blur_strength=0.1)),
    ("blur", dict(blur_strength=0.125)),
    ("blur", dict(blur_strength=0.2)),
    ("blur", dict(blur_strength=0.3)),
    ("blur", dict(blur_strength=0.5)),
    ("blur", dict(blur_strength=0.3, mask_scale=1.5)),
    ("pixelate", dict(blocks=16)),
    ("pixelate", dict(blocks=12)),
    ("pixelate", dict(blocks=10)),
    ("pixelate", dict(blocks=8)),
    ("pixelate", dict(blocks=6)),
    ("pixelate", dict(blocks=5)),
    ("pixelate", dict(blocks=4)),
    ("pixelate", dict(blocks=5, mask_scale=1.5)),
    ("solid", dict()),
]


def add_photo_args(ap: argparse.ArgumentParser) -> None:
    """The arguments `photos` reads (shared with expression_reid.py)."""
    ap.add_argument("eval", help="folder of group photos (../shared/data/eval)")
    ap.add_argument("--utk", help="UTKFace folder: add --sample of its photos (one large face each)")
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--held-out", help="a shard (data/faces/val-000.npz): UTKFace photos only from its sources")


def photos(args) -> list[Path]:
    out = sorted(p for p in Path(args.eval).glob("*.jpg"))
    if args.utk:
        utk = sorted(Path(args.utk).glob("*.jpg"))
        if args.held_out:
            held = {str(s).split("/", 1)[1] for s in np.load(args.held_out, allow_pickle=True)["source"]
                    if str(s).startswith("utkface/")}
            utk = [p for p in utk if p.name in held]
        random.Random(0).shuffle(utk)
        out += utk[: args.sample]
    return out


def strategy(method: str, kw: dict, base: CoverSettings):
    if method != "synth":
        return ClassicCover(method, replace(base, **kw))
    from anonyface.generator import FaceGenerator, SynthCover

    options = {k: v for k, v in kw.items() if k != "model"}
    return SynthCover(FaceGenerator(kw["model"]), replace(base, **options), seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_args(ap)
    ap.add_argument("--json", default="benchmarks/results/cover_sweep.json")
    ap.add_argument("--only", help="comma-separated: run only the settings whose label contains one of these")
    ap.add_argument("--synth", help="comma-separated generator ONNX files to judge as well")
    ap.add_argument("--variants", action="store_true",
                    help="--synth: also each generator with its own landmarks and (models that take it) the expression")
    args = ap.parse_args()
    all_settings = list(SETTINGS)
    for model in (args.synth.split(",") if args.synth else []):
        from anonyface.generator import FaceGenerator

        all_settings.append(("synth", {"model": model}))
        if args.variants:
            all_settings.append(("synth", {"model": model, "synth_exact_landmarks": True}))
            if FaceGenerator(model).edim:  # a landmarks-only model takes no expression
                all_settings.append(("synth", {"model": model, "synth_expression": True}))
                all_settings.append(("synth", {"model": model, "synth_expression": True, "synth_exact_landmarks": True}))
    wanted = args.only.split(",") if args.only else [""]
    settings = [(m, kw) for m, kw in all_settings if any(w in f"{m} {json.dumps(kw)}" for w in wanted)]

    det, emb = FaceDetector(), FaceEmbedder()
    base = CoverSettings()
    strategies = [strategy(m, kw, base) for m, kw in settings]
    counts = {i: [0, 0] for i in range(len(settings))}  # re-identified, judged
    t0 = time.perf_counter()
    for path in photos(args):
        rgb = read_image(path).rgb
        faces = det.detect(rgb)
        judged = [(f, emb.align(rgb, f.box, "ours")) for f in faces if f.width >= MIN_REID_PX]
        if not judged:
            continue
        refs = [emb.embed(rgb, shape) for _, shape in judged]
        for i, cover in enumerate(strategies):
            out = cover.cover_faces(rgb, faces)
            for (_, shape), ref in zip(judged, refs):
                d = float(np.linalg.norm(ref - emb.embed(out, shape)))
                counts[i][0] += d < SAME_PERSON
                counts[i][1] += 1
    rows = []
    for i, (method, kw) in enumerate(settings):
        reid, n = counts[i]
        rows.append({"method": method, **kw, "judged": n, "reidentified": reid, "rate": reid / max(1, n)})
        print(f"{method:9s} {json.dumps(kw):40s} {reid:4d} / {n:4d} = {100 * reid / max(1, n):5.1f} %")
    print(f"{time.perf_counter() - t0:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
