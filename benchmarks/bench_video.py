"""Video speed, flicker and coverage: anonyface vs a plain PyAV transcode (the floor) and deface.

    nice -n -10 .venv/bin/python benchmarks/bench_video.py            # everything
    .venv/bin/python benchmarks/bench_video.py --only 640 --no-deface  # quick

Clips are made here (tests/test_video.make_clip: moving astronaut heads on a
texture, a sine tone): 640×480 with one face, 1280×720 with two, 1920×1080
with three (one of them small); plus ../shared/data/eval/{street,interview}.mp4
when present. For each: frames/s of a decode+encode transcode with the same
encoder settings (libx264 crf 20 preset medium, yuv420p), of anonyface (blur,
end to end: decode → detect → track → cover → encode), of deface, latency per
frame, flicker (frame-to-frame change inside the face regions of the output
relative to the original's, evaluation.flicker.FlickerMeter) and, on the made clips,
the share of true faces covered in every frame. One run each; numbers go to
docs/video.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import av  # noqa: E402

from anonyface import Anonymizer  # noqa: E402
from anonyface.geometry import box_iou, expand_box  # noqa: E402
from anonyface.evaluation.flicker import FlickerMeter  # noqa: E402
from anonyface.video import VideoOptions, VideoWriter, process_video  # noqa: E402

EVAL = ROOT.parent / "shared" / "data" / "eval"


def make_clips(d: Path, only: str | None) -> list[dict]:
    from test_video import make_clip

    specs = [
        ("640x480", (640, 480), 1, 110.0, 90),
        ("1280x720", (1280, 720), 2, 140.0, 60),
        ("1920x1080", (1920, 1080), 3, 200.0, 60),
    ]
    clips = []
    for name, size, faces, face, frames in specs:
        if only and only not in name:
            continue
        path = d / f"made_{name}.mp4"
        print(f"making {path.name} ...", file=sys.stderr)
        if name == "1920x1080":
            # Two large faces crossing, and a small one (40 px) that the reduced pass cannot see.
            imgs, boxes, _ = _make_1080(path, frames, face)
        else:
            imgs, boxes, _ = make_clip(path, frames=frames, fps=30, size=size, faces=faces, face=face)
            del imgs
        clips.append({"name": f"made {name}", "path": path, "boxes": boxes})
    if not only or "eval" in only:
        for name in ("interview.mp4", "street.mp4"):
            if (EVAL / name).exists():
                clips.append({"name": name, "path": EVAL / name, "boxes": None})
    return clips


def _make_1080(path: Path, frames: int, face: float):
    from fractions import Fraction

    import photos
    from test_video import face_track

    w, h = 1920, 1080
    c = av.open(str(path), "w")
    vs = c.add_stream("libx264", rate=30, options={"crf": "16", "preset": "ultrafast"})
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    boxes = []
    bg = photos.background(w, h, 5)
    for i in range(frames):
        img = bg.copy()
        b = [photos.paste_head(img, face_track(i, frames, w, h, face, phase=math.pi * k), face).box for k in range(2)]
        b.append(photos.paste_head(img, (1500 + 2 * i, 200), 40).box)
        boxes.append(b)
        fr = av.VideoFrame.from_ndarray(img, format="rgb24")
        fr.pts = i
        fr.time_base = Fraction(1, 30)
        c.mux(vs.encode(fr))
    c.mux(vs.encode(None))
    c.close()
    return None, boxes, None


def transcode(src: Path, dst: Path) -> dict:
    """The floor: decode and re-encode every frame with the same settings, nothing else."""
    t0 = time.perf_counter()
    n = 0
    with av.open(str(src)) as inp:
        v = inp.streams.video[0]
        v.thread_type = "AUTO"
        w = VideoWriter(dst, v.codec_context.width, v.codec_context.height, v.average_rate, v.time_base)
        for frame in inp.decode(v):
            frame = frame.reformat(width=w.width, height=w.height, format="yuv420p")
            frame.time_base = v.time_base
            w.container.mux(w.stream.encode(frame))
            n += 1
        w.close()
    s = time.perf_counter() - t0
    return {"frames": n, "seconds": round(s, 2), "fps": round(n / s, 1)}


def ours(anon, src: Path, dst: Path, boxes, **kw) -> dict:
    meter = FlickerMeter()
    cover = {"faces": 0, "covered": 0, "frames_all_covered": 0}
    idx = [0]

    def on_frame(orig, out, tracked, t):
        meter.add(orig, out, [tf.face.box for tf in tracked])
        if boxes is not None:
            i = idx[0]
            ok_all = True
            for gt in boxes[i] if i < len(boxes) else []:
                hit = any(
                    box_iou(expand_box(tf.face.box, anon.settings.mask_scale), gt) > 0.3
                    or _contains(expand_box(tf.face.box, anon.settings.mask_scale), gt)
                    for tf in tracked
                )
                cover["faces"] += 1
                cover["covered"] += hit
                ok_all &= hit
            cover["frames_all_covered"] += ok_all
        idx[0] += 1

    opts = VideoOptions(progress=False, **kw)
    st = process_video(anon, src, dst, opts, on_frame=on_frame)
    r = {
        "frames": st.frames,
        "seconds": round(st.seconds, 2),
        "fps": round(st.fps, 1),
        "latency_ms_mean": round(st.latency_ms_mean, 1),
        "latency_ms_p95": round(st.latency_ms_p95, 1),
        "detector_passes": st.detections,
        "tracks": st.tracks,
        "flicker": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in meter.result().items()},
    }
    if boxes is not None:
        r["true_faces_covered"] = f"{cover['covered']}/{cover['faces']}"
        r["frames_with_every_face_covered"] = f"{cover['frames_all_covered']}/{st.frames}"
    return r


def _contains(outer, inner) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3] and (outer[2] - outer[0]) >= 0.6 * (inner[2] - inner[0])


def deface(src: Path, dst: Path) -> dict:
    try:
        from anonyface.evaluation import deface as deface_env

        cmd = deface_env.command()
    except Exception as e:
        return {"error": f"deface not available: {e}"}
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, str(src), "-o", str(dst)], capture_output=True, text=True)
    s = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1:]}
    with av.open(str(src)) as c:
        n = c.streams.video[0].frames or sum(1 for _ in c.decode(video=0))
    return {"frames": n, "seconds": round(s, 2), "fps": round(n / s, 1), "note": "includes its start-up (model load)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="substring of the clip names to run (640, 1280, 1920, eval)")
    ap.add_argument("--no-deface", action="store_true")
    ap.add_argument("--methods", default="blur,synth", help="comma-separated methods to time (default: %(default)s)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_video.json"))
    args = ap.parse_args()
    anons = {m: Anonymizer(method=m) for m in args.methods.split(",")}
    for anon in anons.values():
        anon.detect(np.zeros((64, 64, 3), np.uint8))  # warm up
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), {platform.python_version()}",
        "nice": os.nice(0),
        "clips": [],
    }
    with tempfile.TemporaryDirectory() as td:
        d = Path(td)
        for clip in make_clips(d, args.only):
            src = clip["path"]
            with av.open(str(src)) as c:
                v = c.streams.video[0]
                info = f"{v.codec_context.width}x{v.codec_context.height} {v.codec_context.name} {float(v.average_rate):.2f} fps"
            print(f"== {clip['name']} ({info})", file=sys.stderr)
            r = {"clip": clip["name"], "video": info}
            r["transcode"] = transcode(src, d / "floor.mp4")
            print("  transcode", r["transcode"], file=sys.stderr)
            variants = {f"{m} N=2 (default)": (m, {}) for m in anons}
            if "640" in clip["name"] and "blur" in anons:
                variants.update({
                    "blur N=1": ("blur", {"detect_every": 1}),
                    "blur N=3": ("blur", {"detect_every": 3}),
                    "blur N=2 no smoothing": ("blur", {"smooth": False}),
                })
            for label, (m, kw) in variants.items():
                r[label] = ours(anons[m], src, d / "ours.mp4", clip["boxes"], **kw)
                r[label]["cost_vs_transcode"] = round(r["transcode"]["fps"] / max(r[label]["fps"], 1e-6), 2)
                print(f"  {label}", r[label], file=sys.stderr)
            if not args.no_deface:
                r["deface"] = deface(src, d / "deface.mp4")
                print("  deface", r["deface"], file=sys.stderr)
            results["clips"].append(r)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
