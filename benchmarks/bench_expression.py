"""Cost of the expression conditions per face (anonyface.expression), on the bundled group photo.

    nice .venv/bin/python benchmarks/bench_expression.py                 # 2 threads, 50 repeats
    .venv/bin/python benchmarks/bench_expression.py --threads 1 --json out/expression.json

The faces are the ones our detector finds in `samples/group.jpg` that are big enough to
be measured (5 of 6). Reported, as medians over the repeats, in ms per face:
`measure` for one face per call and for all faces of the photo in one call (the way
the runtime calls it: both models run once per image), and the two model calls alone
(face mesh 192×192, eye model 64×64 twice per face) at the same batch. With
`--threads 1` the same is also given in CPU time of this process (`time.process_time`),
which a busy machine inflates far less than wall time. Numbers go to
docs/expression.md; say whether the machine was quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    import cv2

    from anonyface.detection import FaceDetector
    from anonyface.expression import MIN_FACE, ExpressionMeter

    image = np.ascontiguousarray(cv2.imread(str(ROOT / "src" / "anonyface" / "samples" / "group.jpg"))[..., ::-1])
    faces = [f for f in FaceDetector(threads=args.threads).detect(image) if max(f.width, f.height) >= MIN_FACE]
    meter = ExpressionMeter(threads=args.threads)
    n = len(faces)
    face_x, eye_x = meter.cuts(image, faces)
    fin, ein = meter.session.get_inputs()[0].name, meter.eye_session.get_inputs()[0].name
    r = args.repeats
    result = {
        "faces": n,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "measure_1_face_ms": _median_ms(lambda: meter.measure(image, faces[:1]), r),
        f"measure_{n}_faces_ms_per_face": _median_ms(lambda: meter.measure(image, faces), r) / n,
        "face_mesh_1_ms": _median_ms(lambda: meter.session.run(None, {fin: face_x[:1]}), r),
        f"face_mesh_{n}_ms_per_face": _median_ms(lambda: meter.session.run(None, {fin: face_x}), r) / n,
        "eye_model_2_eyes_ms": _median_ms(lambda: meter.eye_session.run(None, {ein: eye_x[:2]}), r),
        f"eye_model_{2 * n}_eyes_ms_per_face": _median_ms(lambda: meter.eye_session.run(None, {ein: eye_x}), r) / n,
    }
    if args.threads == 1:
        cpu = time.process_time
        result.update({
            "cpu_measure_1_face_ms": _median_ms(lambda: meter.measure(image, faces[:1]), r, cpu),
            f"cpu_measure_{n}_faces_ms_per_face": _median_ms(lambda: meter.measure(image, faces), r, cpu) / n,
            "cpu_face_mesh_1_ms": _median_ms(lambda: meter.session.run(None, {fin: face_x[:1]}), r, cpu),
            "cpu_eye_model_2_eyes_ms": _median_ms(lambda: meter.eye_session.run(None, {ein: eye_x[:2]}), r, cpu),
        })
    result = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    for k, v in result.items():
        print(f"{k:32s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
