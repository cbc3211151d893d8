"""Peak memory (resident set) of the command line, per photo size and video resolution.

    nice .venv/bin/python benchmarks/bench_memory.py             # everything (~10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_memory.py --only photo-1   # one case
    .venv/bin/python benchmarks/bench_memory.py --method blur --json out/memory.json

Each case runs `anonyface INPUT -o OUTPUT` in its own process, exactly as a user
would, and reads that process's peak resident set size from the kernel when it
ends (`os.wait4`: ru_maxrss). Inputs are made here: the test suite's composite
of astronaut heads (tests/photos.group_photo), scaled to 1, 12, 48 and 100
megapixels and saved as JPEG; and 3-second clips (tests/test_video.render:
two moving heads) at 1280×720, 1920×1080 and 3840×2160, 24 frames/s,
long enough for every queue, the look-back and the encoder's look-ahead to
fill. "models" is the floor: the models loaded, a 64×64 photo. Numbers go to
README.md ("Memory").
"""

from __future__ import annotations

import argparse
import json
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

PHOTOS = {"models": 64 * 64, "photo-1MP": 1_000_000, "photo-12MP": 12_000_000, "photo-48MP": 48_000_000, "photo-100MP": 100_000_000}
VIDEOS = {"video-720p": (1280, 720), "video-1080p": (1920, 1080), "video-4K": (3840, 2160)}


def make_photo(path: Path, pixels: int) -> tuple[int, int]:
    """The group composite scaled to `pixels` (3:2), as a JPEG."""
    import cv2
    import photos
    from PIL import Image

    img, _ = photos.group_photo()
    w = int(round((pixels * 1.5) ** 0.5))
    h = pixels // w
    big = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(big).save(path, quality=90)
    return w, h


def make_video(path: Path, size: tuple[int, int], frames: int = 72, fps: int = 24) -> None:
    """Two heads crossing (tests/test_video.render), encoded frame by frame (no clip in memory)."""
    import av
    from test_video import render

    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img, _ = render(i, frames, w, h, faces=2, face=h / 5)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


def measure(args: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit status) of one command-line run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "anonyface", "-q", *args], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return kib / 1024, time.perf_counter() - t, proc.returncode


def run_case(name: str, d: Path, method: str) -> dict:
    if name in PHOTOS:
        src = d / f"{name}.jpg"
        w, h = make_photo(src, PHOTOS[name])
        extra = ["--max-pixels", str(max(w * h, 100_000_000))]
    else:
        w, h = VIDEOS[name]
        src = d / f"{name}.mp4"
        make_video(src, (w, h))
        extra = []
    out = d / f"out-{src.name}"
    mib, seconds, status = measure([str(src), "-o", str(out), "-m", method, *extra])
    out.unlink(missing_ok=True)
    src.unlink()
    return {"case": name, "width": w, "height": h, "megapixels": round(w * h / 1e6, 1), "method": method,
            "peak_rss_mib": round(mib), "seconds": round(seconds, 1), "exit": status}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="run the cases whose name contains this")
    p.add_argument("--method", default="synth", help="covering method (default: synth, the default)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    names = [n for n in [*PHOTOS, *VIDEOS] if not args.only or args.only in n]
    rows = []
    print(f"{'case':<14}{'size':>12}{'peak RSS':>12}{'time':>9}", flush=True)
    with tempfile.TemporaryDirectory(prefix="anonyface-mem-") as tmp:
        for name in names:
            row = run_case(name, Path(tmp), args.method)
            rows.append(row)
            ok = "" if row["exit"] == 0 else f"  (exit {row['exit']})"
            print(f"{name:<14}{row['width']:>6}×{row['height']:<5}{row['peak_rss_mib']:>8} MiB{row['seconds']:>7.1f} s{ok}", flush=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average": os.getloadavg()}
    print(f"machine: {machine}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
