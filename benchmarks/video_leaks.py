"""Per-frame privacy audit of the video path: leaked face-frames and painted faces where nobody is.

For every frame of each clip, the product's own video path (`process_video`,
default options, the chosen method) hands over the original frame, its covered
version and the faces it covered. An independent detector (CenterFace, the
audit's model, at 0.5) then looks at

* the *output*: a face it finds at no covered place is a **leaked face-frame**
  (a face left with its detail); runs of leaked frames at about the same place
  give the **longest uncovered run**;
* the *original*, at every covered (painted or blurred) place: a covered place
  where neither CenterFace (at 0.3) nor our RetinaFace (at 0.3) sees a face in
  the original is a **false face** candidate (painted where nobody is; confirm
  by looking at the crops written with --crops).

    python benchmarks/video_leaks.py ../shared/data/eval/interview.mp4 ../shared/data/eval/street.mp4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anonyface import Anonymizer
from anonyface.audit import CenterFace, at_covered_place
from anonyface.detection import FaceDetector
from anonyface.geometry import box_iou, expand_box
from anonyface.video import VideoOptions, process_video


def audit_clip(path: Path, method: str, crops: Path | None) -> dict:
    anon = Anonymizer(method=method, seed=0, audit=False)
    judge, judge_low, ours_low = CenterFace(0.5), CenterFace(0.3), FaceDetector(threshold=0.3)
    leaks: list[tuple[int, tuple]] = []
    false_faces: list[tuple[int, tuple]] = []
    count = {"frames": 0, "covered": 0}

    def on_frame(original, covered, tracked, t):
        i = count["frames"]
        count["frames"] += 1
        count["covered"] += len(tracked)
        faces = [tf.face for tf in tracked]
        for f in judge.detect(covered):
            if not at_covered_place(f, faces):
                leaks.append((i, f.box))
                if crops is not None:  # look before calling it a leak: street.mp4's frame 95 is a heraldic lion
                    _save_crop(crops / f"{path.stem}-{method}-leak-{i:04d}.jpg", original, covered, f.box)
        if faces:
            seen = judge_low.detect(original) + ours_low.detect(original)
            for f in faces:
                if not any(box_iou(expand_box(f.box, 1.3), s.box) > 0.2 or at_covered_place(s, [f]) for s in seen):
                    false_faces.append((i, f.box))
                    if crops is not None:
                        _save_crop(crops / f"{path.stem}-{method}-{i:04d}.jpg", original, covered, f.box)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stats = process_video(anon, path, Path(tmp) / f"out{path.suffix}", VideoOptions(progress=False), on_frame=on_frame)
    return {
        "clip": path.name, "method": method, "frames": stats.frames, "shots": stats.shots, "tracks": stats.tracks,
        "covered_face_frames": count["covered"], "leaked_face_frames": len(leaks),
        "frames_with_a_leak": len({i for i, _ in leaks}), "longest_uncovered_run": _longest_run(leaks),
        "false_face_candidates": len(false_faces), "false_face_frames": sorted({i for i, _ in false_faces}),
        "leaks": [(i, [round(v) for v in b]) for i, b in leaks][:50], "seconds": round(time.perf_counter() - t0, 1),
    }


def _longest_run(leaks: list[tuple[int, tuple]]) -> int:
    """Longest run of consecutive frames with a leak at about the same place."""
    best = 0
    runs: list[tuple[int, tuple, int]] = []  # (last frame, box, length)
    for i, box in sorted(leaks):
        for k, (last, b, n) in enumerate(runs):
            if last == i - 1 and box_iou(b, box) > 0.3:
                runs[k] = (i, box, n + 1)
                best = max(best, n + 1)
                break
        else:
            runs.append((i, box, 1))
            best = max(best, 1)
    return best


def _save_crop(path: Path, original: np.ndarray, covered: np.ndarray, box) -> None:
    from PIL import Image

    x1, y1, x2, y2 = (int(v) for v in expand_box(box, 2.0))
    h, w = original.shape[:2]
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([original[y1:y2, x1:x2], covered[y1:y2, x1:x2]], axis=1)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--methods", default="synth,blur")
    ap.add_argument("--crops", type=Path, help="write original|output crops of every leak and false-face candidate here")
    ap.add_argument("--json", default="benchmarks/results/video_leaks.json")
    args = ap.parse_args()
    rows = []
    for clip in args.clips:
        for method in args.methods.split(","):
            r = audit_clip(clip, method, args.crops)
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "leaks"}), file=sys.stderr)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
