"""int8 vs float32 detector: same faces? how much faster? On real photos.

    python benchmarks/detector_precision.py [PHOTO_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from anonyface import FaceDetector
from anonyface.geometry import box_iou
from anonyface.media import read_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "eval"
    images = [read_image(p).rgb for p in sorted(folder.glob("*.jpg"))]
    dets = {p: FaceDetector(precision=p) for p in ("fp32", "int8")}
    found, times = {}, {}
    for name, det in dets.items():
        det.detect(images[0])  # warm-up
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            found[name] = [det.detect(im) for im in images]
            runs.append(time.perf_counter() - t)
        times[name] = sorted(runs)[1]
    missed = sum(
        1 for a, b in zip(found["fp32"], found["int8"]) for f in a if not any(box_iou(f.box, g.box) > 0.5 for g in b)
    )
    extra = sum(
        1 for a, b in zip(found["fp32"], found["int8"]) for g in b if not any(box_iou(f.box, g.box) > 0.5 for f in a)
    )
    mpx = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    for name in dets:
        print(f"{name}: {sum(map(len, found[name]))} faces, {times[name]:.2f} s for {len(images)} photos "
              f"({mpx / times[name]:.1f} MP/s, median of 3)")
    print(f"faces of fp32 not found by int8: {missed}; int8 faces fp32 does not have: {extra}; "
          f"speed-up {times['fp32'] / times['int8']:.2f}x")


if __name__ == "__main__":
    main()
