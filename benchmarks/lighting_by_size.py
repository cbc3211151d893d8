"""Are painted faces lit like the real ones, at every size? A quick check between legs.

For the faces our detector finds (≥ 16 px) in a few crowd photos, the luminance
offset of the face box from its surroundings (`evaluation.scene.SceneFace`:
face box − the ring from the erase box to 1.5× it, on the original) in the
output of each generator, against the real face's, by face width. The same
measure as `anonyface-eval`'s lighting table, on fewer photos, in a minute:

    python benchmarks/lighting_by_size.py ../shared/data/eval src/anonyface/models/generator.onnx runs/fast-expo/generator.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anonyface.api import Anonymizer
from anonyface.detection import FaceDetector
from anonyface.evaluation.scene import SceneFace
from anonyface.media import read_image

PHOTOS = ("wild-1", "wild-11", "wild-10", "wild-15", "wild-6", "bbt3")  # crowds: many faces of 16–80 px
BANDS = ((16, 32), (32, 48), (48, 80), (80, 10_000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval", help="the eval photo folder (../shared/data/eval)")
    ap.add_argument("models", nargs="+", help="generator ONNX files")
    ap.add_argument("--photos", default=",".join(PHOTOS), help="photo names (without .jpg)")
    args = ap.parse_args()
    det = FaceDetector()
    photos = []
    for name in args.photos.split(","):
        rgb = read_image(Path(args.eval) / f"{name}.jpg").rgb
        photos.append((rgb, [f for f in det.detect(rgb) if f.width >= 16]))
    print("offset of the face from its surroundings, painted / real (faces), by face width in px")
    for model in args.models:
        anon = Anonymizer(method="synth", generator=model, seed=1)
        rows = []
        for rgb, faces in photos:
            out = anon.anonymize(rgb)
            for f in faces:
                lum = SceneFace(rgb, f.box).measure(out)["lighting"]["luminance"]
                rows.append((f.width, lum["out"], lum["real"]))
        r = np.array(rows)
        cells = []
        for lo, hi in BANDS:
            sel = (r[:, 0] >= lo) & (r[:, 0] < hi)
            cells.append(f"{lo}-{hi if hi < 10_000 else ''}: {r[sel, 1].mean():+6.1f} / {r[sel, 2].mean():+6.1f} ({sel.sum()})"
                         if sel.any() else f"{lo}-: –")
        print(f"{model}: " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
