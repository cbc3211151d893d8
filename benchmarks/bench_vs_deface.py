"""anonyface vs deface on the same photos, same machine, one run each.

Measures, for blur mode:
- wall time of each tool's command line over all photos (one process each, model
  loading included, outputs written), and per-photo time inside one process;
- faces each finds (deface: CenterFace at its default threshold 0.2);
- coverage: every face deface finds with score ≥ 0.5 must be covered by our
  output (≥ 90 % of the inner half of its box changed in our output image).

    python benchmarks/bench_vs_deface.py [PHOTO_DIR] [-o benchmarks/results]

deface is installed into its own venv on first use (anonyface.evaluation.deface).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from anonyface.evaluation import deface as deface_env  # noqa: E402

from anonyface.media import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def covered(src: np.ndarray, out: np.ndarray, box) -> float:
    """Share of the inner half of `box` whose pixels our output changed."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ix1, iy1 = int(x1 + w / 4), int(y1 + h / 4)
    ix2, iy2 = max(ix1 + 1, int(x2 - w / 4)), max(iy1 + 1, int(y2 - h / 4))
    a, b = src[iy1:iy2, ix1:ix2].astype(int), out[iy1:iy2, ix1:ix2].astype(int)
    if a.size == 0:
        return 1.0
    return float(np.any(np.abs(a - b) > 0, axis=2).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photo_dir", nargs="?", default=str(ROOT.parent / "shared" / "data" / "eval"))
    ap.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    photos = sorted(Path(args.photo_dir).glob("*.jpg"))
    if not photos:
        sys.exit(f"no .jpg photos in {args.photo_dir}")
    res_dir = Path(args.out)
    res_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="anonyface-bench-"))
    ours_dir, theirs_dir = work / "ours", work / "deface"
    ours_dir.mkdir()
    theirs_dir.mkdir()
    anonyface_cli = [str(Path(sys.executable).with_name("anonyface"))]
    deface_cli = deface_env.command()
    mpx = sum(np.prod(Image.open(p).size) for p in photos) / 1e6

    # Warm the page cache and both tools' imports once, so neither pays for the other's disk reads.
    timed([*anonyface_cli, "-q", str(photos[0]), "-o", str(work / "warm.jpg")])
    timed([*deface_cli, str(photos[0]), "-o", str(work / "warm2.jpg")])

    t_ours = timed([*anonyface_cli, "-q", *map(str, photos), "-o", str(ours_dir), "--json", str(work / "ours.json")])
    # deface takes one -o per input; a folder input writes next to the inputs, so run per file in one process
    # by giving it all inputs and letting it write beside copies of them.
    for p in photos:
        shutil.copy(p, theirs_dir / p.name)
    t_theirs = timed([*deface_cli, *[str(theirs_dir / p.name) for p in photos]])

    doc = json.loads((work / "ours.json").read_text())
    ours_faces = {Path(f["file"]).name: f["faces"] for f in doc["files"]}
    ref = deface_env.detect(photos, threshold=0.2)
    rows = []
    n_sure = n_sure_covered = 0
    missed = []
    for p in photos:
        src = read_image(p).rgb
        out = np.asarray(Image.open(ours_dir / p.name).convert("RGB"))
        dets = ref[str(p)]
        sure = [d for d in dets if d[4] >= 0.5]
        cov = [covered(src, out, d[:4]) for d in sure]
        n_sure += len(sure)
        n_sure_covered += sum(c >= 0.9 for c in cov)
        missed += [(p.name, [round(v) for v in d[:4]], round(d[4], 2), round(c, 2)) for d, c in zip(sure, cov) if c < 0.9]
        rows.append({"file": p.name, "ours": len(ours_faces[p.name]), "deface": len(dets), "deface>=0.5": len(sure)})

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "photos": len(photos),
        "megapixels": round(mpx, 2),
        "anonyface_s": round(t_ours, 2),
        "deface_s": round(t_theirs, 2),
        "speedup": round(t_theirs / t_ours, 2),
        "faces_ours": sum(r["ours"] for r in rows),
        "faces_deface": sum(r["deface"] for r in rows),
        "deface_sure": n_sure,
        "deface_sure_covered_by_us": n_sure_covered,
        "not_covered": missed,
        "per_file": rows,
    }
    (res_dir / "bench_vs_deface.json").write_text(json.dumps(result, indent=1))
    print(f"{len(photos)} photos, {mpx:.1f} MP, {result['machine']}")
    print(f"{'file':<16}{'ours':>6}{'deface':>8}{'deface>=0.5':>13}")
    for r in rows:
        print(f"{r['file']:<16}{r['ours']:>6}{r['deface']:>8}{r['deface>=0.5']:>13}")
    print(f"wall time, blur, whole batch: anonyface {t_ours:.1f} s, deface {t_theirs:.1f} s -> {t_theirs / t_ours:.1f}x")
    print(f"faces: anonyface {result['faces_ours']}, deface {result['faces_deface']} (thresh 0.2), "
          f"deface >= 0.5 covered by us: {n_sure_covered}/{n_sure}")
    for m in missed:
        print("  not covered:", m)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
