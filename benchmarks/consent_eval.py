"""How often does --keep leave a stranger uncovered? False-keep and true-keep on LFW identities.

    nice python benchmarks/consent_eval.py [--lfw ../shared/data/train/lfw] [--cache /tmp/anonyface-consent.npz]

Every face goes through the runtime path (our RetinaFace detector → dlib 5-point
alignment from its box, checked against its eyes → dlib ResNet embedding:
`anonyface.consent.FaceRecognizer`). People with two or more photos are split at
random (seed 0) into a *tuning* half and a *held-out* half; each person's first
photo is their reference, their other photos are genuine probes (true-keep: the
person is kept), and every photo of every other person is a stranger probe
(false-keep: a stranger is kept). The threshold is chosen on the tuning half
(the largest at which false-keep stays under `--target`), then measured on the
held-out half, with a 95 % Clopper–Pearson upper bound both per trial (one
stranger photo against one reference) and per pair of people (a stranger
*person* kept by any of their photos), which counts correlated trials once.
The threshold is the largest (0.01 steps) whose upper bounds, both, stay under
`--target` (0.05 %: half the 0.1 % required) on the tuning half.

A second study shrinks probe faces (the whole photo resized) to 30–60 px wide:
why faces under `consent.MIN_FACE_PX` are never kept. A third puts each probe in
a simulated picture with four strangers, to show what the separation rule costs.

Embeddings are cached (`--cache`), so the analysis can be re-run in seconds.
LFW: research benchmark, no formal licence; nothing from it is stored in the
project (../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anonyface import consent  # noqa: E402
from anonyface.detection import Face, FaceDetector  # noqa: E402

SIZES = (30, 40, 50, 60)
SEED = 0


def person_of(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0]


def choose_files(lfw: Path, singles: int) -> list[Path]:
    """Every photo of people with ≥ 2 photos, and `singles` one-photo people (strangers only)."""
    files = sorted(lfw.glob("*.jpg"))
    by_person: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        by_person[person_of(f)].append(f)
    multi = [f for fs in by_person.values() if len(fs) > 1 for f in fs]
    one = [fs[0] for fs in by_person.values() if len(fs) == 1]
    rng = np.random.default_rng(SEED)
    one = [one[i] for i in sorted(rng.choice(len(one), min(singles, len(one)), replace=False))]
    return sorted(multi + one)


def central_face(faces: list[Face], w: int, h: int) -> Face | None:
    """LFW photos are centred on their person: the detection nearest the centre."""
    if not faces:
        return None
    return min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - w / 2) + abs((f.box[1] + f.box[3]) / 2 - h / 2))


def scaled(face: Face, s: float) -> Face:
    return Face(tuple(v * s for v in face.box), face.landmarks * s, face.score)


def embed_all(files: list[Path], cache: Path, size_probes: int) -> dict:
    """name → record; resumable (the cache is saved every 250 photos)."""
    data = dict(np.load(cache, allow_pickle=True))["records"].item() if cache.exists() else {}
    todo = [f for f in files if f.name not in data]
    if todo:
        det, rec = FaceDetector(), consent.FaceRecognizer(max_eye_error=math.inf)
        rng = np.random.default_rng(SEED + 1)
        shrink = set(rng.choice([f.name for f in files], min(size_probes, len(files)), replace=False))
        t0 = time.perf_counter()
        for i, f in enumerate(todo):
            rgb = np.asarray(Image.open(f).convert("RGB"))
            face = central_face(det.detect(rgb), rgb.shape[1], rgb.shape[0])
            r: dict = {"person": person_of(f), "found": face is not None}
            if face is not None:
                emb, err = rec.embed(rgb, face)
                r.update(width=face.width, score=face.score, eye_error=err, emb=emb)
                if f.name in shrink:
                    r["small"] = {}
                    for px in SIZES:
                        s = px / face.width
                        small = np.asarray(Image.fromarray(rgb).resize((max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))), Image.BILINEAR))
                        r["small"][px] = rec.embed(small, scaled(face, small.shape[1] / rgb.shape[1]))
            data[f.name] = r
            if (i + 1) % 250 == 0 or i + 1 == len(todo):
                np.savez(cache, records=np.array(data, dtype=object))
                rate = (time.perf_counter() - t0) / (i + 1)
                print(f"  {i + 1}/{len(todo)} photos, {rate * 1000:.0f} ms each, {rate * (len(todo) - i - 1) / 60:.1f} min left", file=sys.stderr)
    return data


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided upper bound on a rate from k events in n trials."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(conf, k + 1, n - k))


def split(data: dict) -> tuple[dict, list[str], list[str]]:
    """(person → sorted usable names, tuning people, held-out people)."""
    people: dict[str, list[str]] = defaultdict(list)
    for name in sorted(data):
        people[data[name]["person"]].append(name)
    multi = sorted(p for p, ns in people.items() if len(ns) > 1)
    rng = np.random.default_rng(SEED)
    rng.shuffle(multi)
    half = len(multi) // 2
    return people, sorted(multi[:half]), sorted(multi[half:])


def usable(r: dict, max_eye_error: float, min_px: float = consent.MIN_FACE_PX) -> bool:
    return (r["found"] and r["emb"] is not None and r["score"] >= consent.MIN_SCORE and r["width"] >= min_px
            and r["eye_error"] <= max_eye_error)


def trials(data: dict, people: dict, refs: list[str], max_eye_error: float):
    """Distances of genuine probes (one per probe photo; inf when the probe cannot be
    embedded: never kept) and of stranger probes (reference × stranger photo matrix,
    with the stranger's person index for per-person counting)."""
    names = sorted(data)
    ok = [n for n in names if usable(data[n], max_eye_error)]
    emb = np.stack([data[n]["emb"] for n in ok])
    person_ids = {p: i for i, p in enumerate(sorted(people))}
    probe_person = np.array([person_ids[data[n]["person"]] for n in ok])
    ref_names, genuine = [], []
    for p in refs:
        ns = people[p]
        if not usable(data[ns[0]], max_eye_error):
            continue  # a reference that cannot be embedded is refused at run time
        ref_names.append(ns[0])
        r = data[ns[0]]["emb"]
        for n in ns[1:]:
            genuine.append(float(np.linalg.norm(data[n]["emb"] - r)) if usable(data[n], max_eye_error) else math.inf)
    ref_emb = np.stack([data[n]["emb"] for n in ref_names])
    ref_person = np.array([person_ids[data[n]["person"]] for n in ref_names])
    d = np.sqrt(np.maximum(0, (ref_emb**2).sum(1)[:, None] + (emb**2).sum(1)[None, :] - 2 * ref_emb @ emb.T))
    stranger = ref_person[:, None] != probe_person[None, :]
    n_unusable = sum(1 for n in names if not usable(data[n], max_eye_error))
    return np.array(genuine), d, stranger, probe_person, ref_person, n_unusable


def rates(t: float, genuine, d, stranger, probe_person) -> dict:
    fk = (d < t) & stranger
    k, n = int(fk.sum()), int(stranger.sum())
    # Per pair of people: a stranger person is kept for a reference when any photo is.
    rows, cols = np.nonzero(fk)
    kept_pairs = len(set(zip(rows.tolist(), probe_person[cols].tolist())))
    n_people = len(np.unique(probe_person))
    n_pairs = d.shape[0] * (n_people - 1)
    return {
        "threshold": round(t, 3),
        "false_keep": k / n, "false_keep_trials": n, "false_keeps": k, "false_keep_upper95": clopper_pearson_upper(k, n),
        "false_keep_person_pairs": kept_pairs / n_pairs, "person_pairs": n_pairs, "person_pairs_kept": kept_pairs,
        "person_pairs_upper95": clopper_pearson_upper(kept_pairs, n_pairs),
        "true_keep": float((genuine < t).mean()), "genuine_trials": len(genuine),
    }


def scene_true_keep(genuine_pairs, d_strangers, t: float, sep: float, others: int = 4, seed: int = SEED) -> float:
    """Each genuine probe in a picture with `others` random strangers: kept only when it is
    under `t` and every stranger is at least `sep` farther from the reference."""
    rng = np.random.default_rng(seed)
    kept = 0
    for ref_i, dist in genuine_pairs:
        row = d_strangers[ref_i]
        near = row[rng.integers(0, len(row), others)]
        kept += dist < t and bool((near >= dist + sep).all())
    return kept / max(1, len(genuine_pairs))


def size_study(data: dict, people: dict, refs: list[str], t: float, max_eye_error: float) -> list[dict]:
    """Probes shrunk to SIZES px: true-keep against their own reference, false-keep against
    every other reference."""
    ref_of = {p: people[p][0] for p in refs if usable(data[people[p][0]], max_eye_error)}
    ref_emb = {p: data[n]["emb"] for p, n in ref_of.items()}
    out = []
    for px in SIZES:
        gen, fk, n_fk, n_probes, n_none = [], 0, 0, 0, 0
        for name, r in data.items():
            if "small" not in r or name in ref_of.values():
                continue
            emb, err = r["small"][px]
            n_probes += 1
            ok = emb is not None and err <= max_eye_error and r["score"] >= consent.MIN_SCORE
            if not ok:
                n_none += 1
            if r["person"] in ref_emb:
                gen.append(ok and float(np.linalg.norm(emb - ref_emb[r["person"]])) < t)
            if ok:
                others = np.stack([e for p, e in ref_emb.items() if p != r["person"]])
                dist = np.linalg.norm(others - emb, axis=1)
                fk += int((dist < t).sum())
                n_fk += len(dist)
            else:
                n_fk += len(ref_emb) - (r["person"] in ref_emb)
        out.append({"face_px": px, "probes": n_probes, "not_embedded": n_none, "true_keep": float(np.mean(gen)) if gen else None,
                    "genuine_trials": len(gen), "false_keep": fk / max(1, n_fk), "false_keeps": fk, "false_keep_trials": n_fk})
    return out


def several_references(data: dict, people: dict, held: list[str], t: float, max_eye_error: float, k: int = 3) -> dict:
    """Held-out people with more than `k` photos: true-keep and false-keep with their first
    photo as the only reference, and with their first `k` (distance = the nearest)."""
    names = [n for n in sorted(data) if usable(data[n], max_eye_error)]
    emb = np.stack([data[n]["emb"] for n in names])
    who = np.array([data[n]["person"] for n in names])
    out = {}
    for refs_n in (1, k):
        gen, fk, n_fk = [], 0, 0
        for p in held:
            ns = people[p]
            if len(ns) <= k:
                continue
            refs = [data[n]["emb"] for n in ns[:refs_n] if usable(data[n], max_eye_error)]
            if not refs:
                continue
            r = np.stack(refs)
            for n in ns[k:]:
                gen.append(usable(data[n], max_eye_error) and float(np.linalg.norm(r - data[n]["emb"], axis=1).min()) < t)
            d = np.sqrt(np.maximum(0, (emb**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2 * emb @ r.T)).min(1)
            strangers = who != p
            fk += int((d[strangers] < t).sum())
            n_fk += int(strangers.sum())
        out[f"{refs_n} reference(s)"] = {"true_keep": float(np.mean(gen)), "genuine_trials": len(gen),
                                         "false_keep": fk / max(1, n_fk), "false_keeps": fk, "false_keep_trials": n_fk,
                                         "false_keep_upper95": clopper_pearson_upper(fk, n_fk)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "data" / "train" / "lfw")
    p.add_argument("--cache", type=Path, default=Path("/tmp/anonyface-consent-lfw.npz"))
    p.add_argument("--singles", type=int, default=1500, help="one-photo people added as strangers")
    p.add_argument("--size-probes", type=int, default=300, help="photos also embedded shrunk (size study)")
    p.add_argument("--target", type=float, default=0.0005,
                   help="95 %% upper bound on false-keep (per trial and per pair of people) the threshold is tuned to on the "
                        "tuning half: half the 0.1 %% required, headroom for the held-out half")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "consent_eval.json")
    args = p.parse_args(argv)
    if not args.lfw.is_dir():
        print(f"no LFW folder at {args.lfw}", file=sys.stderr)
        return 2
    files = choose_files(args.lfw, args.singles)
    print(f"{len(files)} photos; embedding (cache {args.cache})", file=sys.stderr)
    data = embed_all(files, args.cache, args.size_probes)
    data = {f.name: data[f.name] for f in files}
    people, tune, held = split(data)
    found = [r for r in data.values() if r["found"]]
    eye = np.array([r["eye_error"] for r in found])
    report: dict = {
        "photos": len(data), "people": len(people), "tuning_people": len(tune), "held_out_people": len(held),
        "no_face_found": len(data) - len(found),
        "eye_error_percentiles": {q: round(float(np.percentile(eye, q)), 3) for q in (50, 90, 99, 99.9)},
        "eye_error_rejected": float((eye > consent.MAX_EYE_ERROR).mean()),
        "under_min_px": int(sum(r["width"] < consent.MIN_FACE_PX for r in found)),
        "score_under_min": int(sum(r["score"] < consent.MIN_SCORE for r in found)),
    }
    tune_t = trials(data, people, tune, consent.MAX_EYE_ERROR)
    grid = np.round(np.arange(0.30, 0.6201, 0.01), 3)
    sweep_tune = [rates(t, tune_t[0], tune_t[1], tune_t[2], tune_t[3]) for t in grid]
    ok = [r["threshold"] for r in sweep_tune if r["person_pairs_upper95"] <= args.target and r["false_keep_upper95"] <= args.target]
    chosen = max(ok) if ok else float(grid[0])
    held_t = trials(data, people, held, consent.MAX_EYE_ERROR)
    sweep_held = [rates(t, held_t[0], held_t[1], held_t[2], held_t[3]) for t in grid]
    at = next(r for r in sweep_held if r["threshold"] == chosen)
    at_shipped = next(r for r in sweep_held if abs(r["threshold"] - consent.KEEP_THRESHOLD) < 1e-9)
    # Scenes: genuine pairs (reference index, distance) of the held-out half.
    g, d, stranger = held_t[0], held_t[1], held_t[2]
    ref_index = []
    for i, p in enumerate(p for p in held if usable(data[people[p][0]], consent.MAX_EYE_ERROR)):
        ref_index += [i] * (len(people[p]) - 1)
    d_str = [d[i][stranger[i]] for i in range(d.shape[0])]
    pairs = list(zip(ref_index, g))
    report.update(
        target=args.target, chosen_threshold=chosen, shipped_threshold=consent.KEEP_THRESHOLD,
        held_out_at_chosen=at, held_out_at_shipped=at_shipped,
        unusable_photos=tune_t[5],
        scene_true_keep={f"sep {s}": float(scene_true_keep(pairs, d_str, consent.KEEP_THRESHOLD, s)) for s in (0.0, consent.SEPARATION, 0.1)},
        size_study=size_study(data, people, held, consent.KEEP_THRESHOLD, consent.MAX_EYE_ERROR),
        several_references=several_references(data, people, held, consent.KEEP_THRESHOLD, consent.MAX_EYE_ERROR),
        sweep_tune=sweep_tune, sweep_held=sweep_held,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print_report(report)
    return 0


def print_report(r: dict) -> None:
    print(f"{r['photos']} photos of {r['people']} people; tuning {r['tuning_people']}, held out {r['held_out_people']} people with ≥ 2 photos")
    print(f"no face found: {r['no_face_found']}; eye error percentiles {r['eye_error_percentiles']}, rejected at {consent.MAX_EYE_ERROR}: {100 * r['eye_error_rejected']:.2f} %")
    print(f"threshold chosen on the tuning half (95 % upper bounds ≤ {100 * r['target']:.3f} %): {r['chosen_threshold']}; shipped: {r['shipped_threshold']}")
    print("\nheld-out half:")
    print("| threshold | false-keep (trials) | 95 % upper | false-keep (person pairs) | 95 % upper | true-keep |")
    print("|---|---|---|---|---|---|")
    for s in r["sweep_held"]:
        if round(s["threshold"] * 100) % 2 == 0 or s["threshold"] in (r["chosen_threshold"], r["shipped_threshold"]):
            print(f"| {s['threshold']:.2f} | {100 * s['false_keep']:.4f} % ({s['false_keeps']} of {s['false_keep_trials']:,}) | {100 * s['false_keep_upper95']:.4f} % "
                  f"| {100 * s['false_keep_person_pairs']:.4f} % ({s['person_pairs_kept']} of {s['person_pairs']:,}) | {100 * s['person_pairs_upper95']:.4f} % "
                  f"| {100 * s['true_keep']:.1f} % of {s['genuine_trials']} |")
    print("\nscenes (probe + 4 strangers), true-keep at the shipped threshold:", {k: round(100 * v, 1) for k, v in r["scene_true_keep"].items()})
    print("\nseveral references per person (held-out people with > 3 photos), shipped threshold:")
    for name, v in r["several_references"].items():
        print(f"  {name}: true-keep {100 * v['true_keep']:.1f} % of {v['genuine_trials']}, false-keep {100 * v['false_keep']:.4f} % "
              f"({v['false_keeps']} of {v['false_keep_trials']:,}, 95 % upper {100 * v['false_keep_upper95']:.4f} %)")
    print("\nshrunk probes, shipped threshold:")
    for s in r["size_study"]:
        tk = f"{100 * s['true_keep']:.1f} %" if s["true_keep"] is not None else "-"
        print(f"  {s['face_px']} px: true-keep {tk} of {s['genuine_trials']}, false-keep {100 * s['false_keep']:.4f} % ({s['false_keeps']} of {s['false_keep_trials']:,}), not embedded {s['not_embedded']}/{s['probes']}")


if __name__ == "__main__":
    sys.exit(main())
