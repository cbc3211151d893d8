"""Issue 20's speed table in one run: anonyface against deface and a plain x264 transcode.

    python benchmarks/bench_speed.py [--rounds 2] [--pause-pid PID] [--photos DIR] [--clip SRC]

Rows (each ours and its baseline timed back to back, A/B, repeated `--rounds`
times, so a loaded machine hits both alike; the table gives the median ratio
and its spread over the rounds):

- photos, blur: `anonyface -m blur` over every *.jpg of DIR (default
  ../shared/data/eval) against `deface` over copies of them, one process each,
  wall time (start-up, model loading, reading and writing included);
- photos, synth (the default method, with the second-detector audit);
- 720p clip, blur: a 1280×720, 300-frame clip made here from SRC (default
  ../shared/data/eval/street.mp4, scaled, played forward and back so there is
  no cut) through `anonyface -m blur`, `deface`, and a plain PyAV decode +
  libx264 encode with ffmpeg's defaults (crf 23, preset medium): the floor;
- the same clip, synth;
  (`--profile`: instead of the table, where the time goes: stage timers per
  photo and per 720p frame, in one process)
- live 640×480 with one face (tests/test_video.make_clip, 300 frames): the
  live path's per-frame work (FrameProcessor.track + cover, blur and synth),
  frames/s and p95 latency, after decoding (a camera hands over decoded frames).

`--pause-pid` stops that process (SIGSTOP) around each timed pair and resumes
it (SIGCONT) right after, always (a background training job on a shared
machine). Other load cannot be paused: the table says how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "eval"
sys.path.insert(0, str(ROOT / "tests"))

import av  # noqa: E402

from anonyface.evaluation import deface as deface_env  # noqa: E402


@contextmanager
def paused(pid: int | None):
    """SIGSTOP `pid` for the duration, SIGCONT always after."""
    if not pid:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {r.stderr.strip()[-400:]}")
    return time.perf_counter() - t


def make_720p(src: Path, dst: Path, frames: int = 300) -> None:
    """`frames` frames of `src` scaled to 1280×720, forward then back (no cut), x264 crf 16."""
    with av.open(str(src)) as inp:
        v = inp.streams.video[0]
        imgs = [f.to_ndarray(width=1280, height=720, format="rgb24") for f in inp.decode(v)]
    seq = []
    i, step = 0, 1
    while len(seq) < frames:
        seq.append(imgs[i])
        if not 0 <= i + step < len(imgs):
            step = -step
        i += step
    write_clip(dst, seq, 25)


def write_clip(dst: Path, imgs: list[np.ndarray], fps: int) -> None:
    with av.open(str(dst), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "16", "preset": "veryfast"})
        s.height, s.width = imgs[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for k, img in enumerate(imgs):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts, fr.time_base = k, Fraction(1, fps)
            c.mux(s.encode(fr))
        c.mux(s.encode(None))


def transcode(src: Path, dst: Path) -> float:
    """The floor: decode and re-encode every frame with libx264 at ffmpeg's defaults."""
    t0 = time.perf_counter()
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = inp.streams.video[0]
        v.thread_type = "AUTO"
        s = out.add_stream("libx264", rate=v.average_rate, options={"crf": "23", "preset": "medium"})
        s.width, s.height, s.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
        for frame in inp.decode(v):
            frame = frame.reformat(format="yuv420p")
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    return time.perf_counter() - t0


def live(method: str, clip: Path) -> tuple[float, float]:
    """(frames/s, p95 latency in ms) of the live path's per-frame work on decoded frames."""
    from anonyface import Anonymizer
    from anonyface.video import FrameProcessor, TrackingOptions

    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    anon = Anonymizer(method=method, audit=False, seed=0)  # what `anonyface live` builds
    proc = FrameProcessor(anon, TrackingOptions(lookback=0))
    proc.cover(frames[0], proc.track(frames[0], 0.0)[0])  # warm up (first inference allocates)
    proc = FrameProcessor(anon, TrackingOptions(lookback=0))
    lat = []
    t0 = time.perf_counter()
    for i, rgb in enumerate(frames):
        t = time.perf_counter()
        tracked, _ = proc.track(rgb, i / 30)
        proc.cover(rgb, tracked)
        lat.append(time.perf_counter() - t)
    return len(frames) / (time.perf_counter() - t0), float(np.percentile(lat, 95) * 1000)


def profile(photos: list[Path], clip: Path | None, work: Path) -> None:
    """Where the time goes, in one process (models loaded once): per photo, and per 720p frame."""
    from anonyface import Anonymizer
    from anonyface.media import read_image
    from anonyface.video import FrameProcessor, VideoOptions, VideoWriter

    blur = Anonymizer(method="blur", seed=0)
    synth = Anonymizer(method="synth", seed=0, detector=blur.detector, audit=blur.audit)
    first = read_image(photos[0]).rgb
    synth.cover_faces(first, blur.detect(first))  # warm up
    st = dict.fromkeys(("read", "detect", "blur", "synth", "audit", "write jpeg"), 0.0)
    n_faces = 0
    for p in photos:
        t = time.perf_counter()
        rgb = read_image(p).rgb
        st["read"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = blur.detector.detect(rgb)
        st["detect"] += time.perf_counter() - t
        n_faces += len(faces)
        t = time.perf_counter()
        out = blur.cover_faces(rgb, faces)
        st["blur"] += time.perf_counter() - t
        t = time.perf_counter()
        synth.cover_faces(rgb, faces)
        st["synth"] += time.perf_counter() - t
        t = time.perf_counter()
        blur.audit.leaks(out, faces)
        st["audit"] += time.perf_counter() - t
        t = time.perf_counter()
        from PIL import Image

        Image.fromarray(out).save(work / "p.jpg", quality=95)
        st["write jpeg"] += time.perf_counter() - t
    print(f"profile, {len(photos)} photos, {n_faces} faces, ms per photo: "
          + ", ".join(f"{k} {1000 * v / len(photos):.0f}" for k, v in st.items()))
    if clip is None:
        return
    with av.open(str(clip)) as c:
        t = time.perf_counter()
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        dec = time.perf_counter() - t
    for m, anon in (("blur", blur), ("synth", synth)):
        proc = FrameProcessor(anon, VideoOptions())
        tt = tc = 0.0
        for i, rgb in enumerate(frames):
            t = time.perf_counter()
            tracked, _ = proc.track(rgb, i / 25)
            t2 = time.perf_counter()
            proc.cover(rgb, tracked)
            tt += t2 - t
            tc += time.perf_counter() - t2
        print(f"profile, 720p clip, {m}, ms per frame: decode {1000 * dec / len(frames):.1f}, "
              f"detect {1000 * proc.detect_seconds / len(frames):.1f} ({proc.passes} passes), "
              f"track {1000 * (tt - proc.detect_seconds) / len(frames):.1f}, cover {1000 * tc / len(frames):.1f}")
    for preset in ("medium", "veryfast"):
        w = VideoWriter(work / f"enc-{preset}.mp4", 1280, 720, Fraction(25), Fraction(1, 25), preset=preset)
        t = time.perf_counter()
        for i, rgb in enumerate(frames):
            w.write(rgb, i, Fraction(1, 25))
        w.close()
        print(f"profile, 720p clip, encode (libx264 crf 20, {preset}): {1000 * (time.perf_counter() - t) / len(frames):.1f} ms per frame, "
              f"{(work / f'enc-{preset}.mp4').stat().st_size / 1e6:.1f} MB")


def table_rows(t: dict[str, list[float]], v: str, n_photos: int, only: set[str], n: int = 300) -> list[tuple[str, ...]]:
    """The issue's rows for one version of anonyface (`v`: "" or "before ")."""
    ratio = lambda a, b: [x / y for x, y in zip(t[v + a], t[v + b])]  # noqa: E731
    fps = lambda k: [n / s for s in t[v + k]]  # noqa: E731
    rows = []
    if "photos" in only:
        rows += [
            (f"{v}{n_photos} eval photos, blur", f"{spread(ratio('photos blur', 'photos deface'))}× deface's time",
             f"{spread(t[v + 'photos deface'])} s", "", "≤ 0.33×"),
            (f"{v}the same photos, synth + audit", f"{spread(ratio('photos synth', 'photos deface2'))}× deface's time",
             f"{spread(t[v + 'photos deface2'])} s", "", "≤ 0.5×"),
        ]
    if "video" in only:
        rows += [
            (f"{v}720p clip, 300 frames, blur",
             f"{spread(fps('video blur'))} frames/s = {spread(ratio('video blur', 'video transcode'))}× a transcode's time",
             f"{spread(fps('video deface'))} frames/s", f"{spread(fps('video transcode'))} frames/s", "≤ 2× transcode"),
            (f"{v}the same clip, synth",
             f"{spread(fps('video synth'))} frames/s = {spread(ratio('video deface', 'video synth'))}× deface's frame rate",
             "", "", "≥ 4× deface"),
        ]
    if "live" in only:
        for m in ("blur", "synth"):
            rows.append((f"{v}live 640×480, one face, {m}", f"{spread(t[f'{v}live {m} fps'])} frames/s, p95 {spread(t[f'{v}live {m} p95'])} ms",
                         "", "", "≥ 30 frames/s, p95 ≤ 60 ms"))
    return rows


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else f"{xs[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=EVAL)
    ap.add_argument("--clip", type=Path, default=EVAL / "street.mp4", help="source of the 720p clip")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pause-pid", type=int, help="SIGSTOP this process around each timed pair")
    ap.add_argument("--only", default="photos,video,live", help="which parts to run (default: %(default)s)")
    ap.add_argument("--profile", action="store_true", help="only print where the time goes (stage timers), no table")
    ap.add_argument("--baseline-src", type=Path,
                    help="also time anonyface with this src/ folder on PYTHONPATH (e.g. main's), in the same rounds: before/after")
    ap.add_argument("--live-worker", nargs=2, metavar=("METHOD", "CLIP"), help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_speed.json")
    args = ap.parse_args()
    if args.live_worker:
        print(json.dumps(live(args.live_worker[0], Path(args.live_worker[1]))))
        return
    only = set(args.only.split(","))
    photos = sorted(args.photos.glob("*.jpg"))
    anonyface_cli = [str(Path(sys.executable).with_name("anonyface")), "-q"]
    deface_cli = deface_env.command()
    if deface_cli is None:
        raise SystemExit("deface is not available (anonyface.evaluation.deface could not install it)")
    work = Path(tempfile.mkdtemp(prefix="anonyface-speed-"))
    load_start = os.getloadavg()[1]
    t: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        t.setdefault(key, []).append(seconds)
        print(f"  {key}: {seconds:.2f} s", file=sys.stderr)

    try:
        theirs = work / "deface-photos"
        theirs.mkdir()
        for p in photos:
            shutil.copy(p, theirs / p.name)
        clip = work / "clip720.mp4"
        if "video" in only:
            make_720p(args.clip, clip)
        cam = work / "live640.mp4"
        if "live" in only:
            from test_video import make_clip

            make_clip(cam, frames=300, fps=30, size=(640, 480), faces=1, face=110.0)
        if args.profile:
            with paused(args.pause_pid):
                profile(photos, clip if "video" in only else None, work)
            return
        # Warm the page cache and both tools' imports once.
        timed([*anonyface_cli, "-m", "blur", str(photos[0]), "-o", str(work / "warm.jpg")])
        timed([*deface_cli, str(theirs / photos[0].name), "-o", str(work / "warm2.jpg")])
        versions = {"": None}
        if args.baseline_src:
            versions["before "] = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for v, env in versions.items():
                if "photos" in only:
                    with paused(args.pause_pid):
                        add(f"{v}photos blur", timed([*anonyface_cli, "-m", "blur", *map(str, photos), "-o", str(work / "ob")], env))
                        add(f"{v}photos deface", timed([*deface_cli, *[str(theirs / p.name) for p in photos]]))
                    with paused(args.pause_pid):
                        add(f"{v}photos synth", timed([*anonyface_cli, "-m", "synth", *map(str, photos), "-o", str(work / "os")], env))
                        add(f"{v}photos deface2", timed([*deface_cli, *[str(theirs / p.name) for p in photos]]))
                if "video" in only:
                    with paused(args.pause_pid):
                        add(f"{v}video transcode", transcode(clip, work / "floor.mp4"))
                        add(f"{v}video blur", timed([*anonyface_cli, "-m", "blur", str(clip), "-o", str(work / "vb.mp4")], env))
                    with paused(args.pause_pid):
                        add(f"{v}video deface", timed([*deface_cli, str(clip), "-o", str(work / "vd.mp4")]))
                        add(f"{v}video synth", timed([*anonyface_cli, "-m", "synth", str(clip), "-o", str(work / "vs.mp4")], env))
                if "live" in only:
                    with paused(args.pause_pid):
                        for m in ("blur", "synth"):
                            out = subprocess.run([sys.executable, __file__, "--live-worker", m, str(cam)], env=env,
                                                 capture_output=True, text=True, check=True).stdout
                            fps, p95 = json.loads(out.strip().splitlines()[-1])
                            t.setdefault(f"{v}live {m} fps", []).append(fps)
                            t.setdefault(f"{v}live {m} p95", []).append(p95)
                            print(f"  {v}live {m}: {fps:.1f} frames/s, p95 {p95:.0f} ms", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.profile:
        return

    load = os.getloadavg()[1]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared: load average "
               f"{load_start:.1f} at the start, {load:.1f} over the last 5 minutes at the end")
    rows = []
    for v in versions:
        rows += table_rows(t, v, len(photos), only)
    print(f"\n{machine}; {args.rounds} rounds, A/B interleaved; median (min–max)\n")
    print("| job | anonyface | deface | plain x264 transcode | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "rounds": args.rounds, "seconds": t, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
