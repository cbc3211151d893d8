"""Does carrying the expression over carry the person? A control for issue 19.

With the expression conditions, dlib re-identifies more painted faces with
their originals (docs/generator.md, "What the generator is told"). dlib's
embedding is not blind to expression, so a painted face that smiles like the
original may be "closer" to it without holding anything of the person. This
tells the two apart. For every face ≥ 60 px our detector finds (the eval
photos plus held-out UTKFace photos, as in `cover_sweep.py`), the generator
paints it three times with the same latent:

* **neutral** — no expression (what ships);
* **own** — the face's own expression, measured on the original;
* **shuffled** — the expression of another face, from another photo.

and reports, for each, the share of painted faces within dlib's same-person
distance (0.6) of their own original, and — the control — of the original of
the *other* face whose expression is nearest to the one painted
(expression-matched impostors), and of a random other face's original.
If `own` re-identifies more than `shuffled` and more than its own
expression-matched impostors, the expression carries the person; if its
impostors match as often, dlib is matching expressions.

    python benchmarks/expression_reid.py ../shared/data/eval --utk ../shared/data/train/utkface --sample 300 \\
        --held-out data/faces/val-000.npz --synth runs/fast-expo/generator.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cover_sweep import add_photo_args, photos  # noqa: E402

from anonyface.anonymizers import CoverSettings  # noqa: E402
from anonyface.detection import FaceDetector  # noqa: E402
from anonyface.evaluation.identity import MIN_REID_PX, SAME_PERSON, FaceEmbedder  # noqa: E402
from anonyface.expression import expression_meter  # noqa: E402
from anonyface.generator import FaceGenerator, SynthCover  # noqa: E402
from anonyface.media import read_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_args(ap)
    ap.add_argument("--synth", required=True, help="generator ONNX that takes expression conditions")
    ap.add_argument("--json", default="benchmarks/results/expression_reid.json")
    args = ap.parse_args()

    gen = FaceGenerator(args.synth)
    if not gen.edim:
        raise SystemExit(f"{args.synth} takes no expression conditions")
    det, emb, meter = FaceDetector(), FaceEmbedder(), expression_meter()
    if meter is None:
        raise SystemExit("no expression meter (anonyface.expression) installed")
    t0 = time.perf_counter()

    # Pass 1: the originals — faces, expressions, embeddings.
    items = []  # (rgb, faces, judged indices, shapes, refs, expressions)
    for path in photos(args):
        rgb = read_image(path).rgb
        faces = det.detect(rgb)
        if not any(f.width >= MIN_REID_PX for f in faces):
            continue
        e = np.asarray(meter.measure(rgb, faces), np.float32).reshape(len(faces), gen.edim)
        e = np.where(np.isfinite(e), e, 0.0)
        judged = [i for i, f in enumerate(faces) if f.width >= MIN_REID_PX]
        shapes = [emb.align(rgb, faces[i].box, "ours") for i in judged]
        refs = [emb.embed(rgb, s) for s in shapes]
        items.append((rgb, faces, judged, shapes, refs, e))
    # every judged face: (item, face index); its expression and original embedding
    index = [(k, i) for k, it in enumerate(items) for i in it[2]]
    expr = np.stack([items[k][5][i] for k, i in index])
    refs = np.stack([items[k][4][items[k][2].index(i)] for k, i in index])
    n = len(index)
    rng = np.random.default_rng(0)
    photo_of = np.array([k for k, _ in index])
    # shuffled: each face gets the expression of a face from another photo
    donor = np.array([rng.choice(np.flatnonzero(photo_of != photo_of[j])) for j in range(n)])
    random_other = np.array([rng.choice(np.flatnonzero(photo_of != photo_of[j])) for j in range(n)])
    # expression-matched impostor: the nearest expression among faces of other photos
    dist_e = np.linalg.norm(expr[:, None] - expr[None], axis=-1)
    dist_e[photo_of[:, None] == photo_of[None]] = np.inf
    nearest = dist_e.argmin(1)

    where = {(k, i): j for j, (k, i) in enumerate(index)}
    rows = []
    for name, pick in (("neutral", None), ("own", np.arange(n)), ("shuffled", donor)):
        cover = SynthCover(gen, CoverSettings(synth_expression=True), seed=0)
        painted = np.zeros_like(refs)
        for k, (rgb, faces, judged, shapes, _, e) in enumerate(items):
            if pick is None:
                e_in = np.zeros_like(e)
            else:  # judged faces get the chosen expression; the others their own
                e_in = e.copy()
                for i in judged:
                    e_in[i] = expr[pick[where[(k, i)]]]
            def chosen(image, fs, ids, _e=e_in, _faces=faces):  # the input under study, per painted face
                return np.stack([_e[next(j for j, g in enumerate(_faces) if g is f)] for f in fs]).astype(np.float32)

            cover.expressions = chosen
            out = cover.cover_faces(rgb, faces)
            for i, s in zip(judged, shapes):
                painted[where[(k, i)]] = emb.embed(out, s)
        d_own = np.linalg.norm(painted - refs, axis=1)
        d_imp = np.linalg.norm(painted - refs[nearest], axis=1)
        d_rnd = np.linalg.norm(painted - refs[random_other], axis=1)
        row = {"setting": name, "faces": n,
               "reid_own_pct": round(100 * float((d_own < SAME_PERSON).mean()), 2),
               "match_expression_impostor_pct": round(100 * float((d_imp < SAME_PERSON).mean()), 2),
               "match_random_other_pct": round(100 * float((d_rnd < SAME_PERSON).mean()), 2),
               "mean_distance_own": round(float(d_own.mean()), 4),
               "mean_distance_impostor": round(float(d_imp.mean()), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{n} faces, {time.perf_counter() - t0:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.synth, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
