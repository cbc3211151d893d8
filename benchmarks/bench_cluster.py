"""The batch job on Ray vs the local CLI: photos/s, start-up overhead, and why a video is one task.

    .venv/bin/python benchmarks/bench_cluster.py                 # everything (~15 min on 2 cores)
    .venv/bin/python benchmarks/bench_cluster.py --rounds 1 --no-video

Photos: the photos of ../shared/data/eval (copies of the bundled sample when absent),
as a set of N and a set of 2N (the same photos twice, under other names). Each
command runs as a user runs it, a fresh process: `anonyface SET -o OUT --seed 0`
locally, then with `--ray --workers 1` and `--ray --workers 2` (a local Ray instance
started by the command). From the wall times of N and 2N photos:
per photo = (T(2N) - T(N)) / N, start-up overhead = T(N) - N * per photo (process
start, imports, Ray start, model loading); the same from CPU time (the command's and
its children's, plus each Ray worker's per file from the manifest's cpu_seconds),
which a loaded machine disturbs far less than wall time. The outputs of every run are compared
with the local CLI's, byte for byte. "local, 1 thread" is the local CLI with
onnxruntime on one thread per model, as each Ray worker runs it (`Anonymizer(threads=1)`):
the difference between it and "Ray, 1 worker" is what Ray and the manifest cost.

Video (one task, or keyframe segments?): for each eval clip, the time of the whole
clip as one task, the keyframes a segmenting scheduler could cut at, and how many
tracks cross one (each would be cut in two: two fake identities for one person, and
the look-back at the start of the second half is lost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from anonyface.cluster import MANIFEST_NAME, Manifest, read_manifest, sha256_file  # noqa: E402


EVAL = ROOT.parent / "shared" / "data" / "eval"
SAMPLE = ROOT / "src" / "anonyface" / "samples" / "group.jpg"


#: The local CLI with onnxruntime on one thread per model, as each Ray worker runs it:
#: tells what Ray adds from what the thread count does.
ONE_THREAD = """
import sys, anonyface.api as api, anonyface.cli as cli
init = api.Anonymizer.__init__
api.Anonymizer.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "threads": 1})
sys.exit(cli.main(sys.argv[1:]))
"""


def photo_set(folder: Path, copies: int) -> int:
    """Write the photo set `copies` times into `folder`; return how many photos."""
    photos = sorted(EVAL.glob("*.jpg")) if EVAL.is_dir() else [SAMPLE] * 12
    n = 0
    for c in range(copies):
        for i, p in enumerate(photos):
            shutil.copy(p, folder / f"{c}-{i:02d}-{p.name}")
            n += 1
    return n


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and of the processes it started and
    reaped (Ray's workers are not among them: their CPU is read from the manifest), summary line)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = [ln for ln in proc.stderr.splitlines() if " anonymized (" in ln][-1]
    return wall, cpu, summary


def same_outputs(a: Path, b: Path) -> bool:
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and not p.name.endswith(".jsonl")}  # noqa: E731
    return files(a) == files(b)


def bench_photos(rounds: int) -> list[dict]:
    """Every configuration on N and 2N photos, in `rounds` interleaved rounds (the load of
    a shared machine drifts: each round sees about the same); the fastest run counts."""
    configs = [("local CLI", []), ("local, 1 thread", ["1T"]), ("Ray, 1 worker", ["--ray", "--workers", "1"]),
               ("Ray, 2 workers", ["--ray", "--workers", "2"])]
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        sets = []
        for copies in (1, 2):
            d = Path(tmp) / f"set{copies}"
            d.mkdir()
            sets.append((d, photo_set(d, copies)))
        for r in range(rounds):
            for ci, (name, extra) in enumerate(configs):
                for d, n in sets:
                    out = Path(tmp) / f"out-{ci}-{n}-{r}"
                    shutil.rmtree(out, ignore_errors=True)
                    program = ["-c", ONE_THREAD] if extra == ["1T"] else ["-m", "anonyface"]
                    flags = [] if extra == ["1T"] else extra
                    wall, cpu, summary = timed([sys.executable, *program, str(d), "-o", str(out), "--seed", "0", *flags])
                    if ci:
                        assert same_outputs(out, Path(tmp) / f"out-0-{n}-0"), f"{name}: outputs differ from the local CLI's"
                    if "--ray" in extra:  # the workers' CPU, from the manifest (not our children)
                        cpu += sum(r.get("cpu_seconds") or 0 for r in read_manifest(out / MANIFEST_NAME)[0].values())
                    walls.setdefault((name, n), []).append(round(wall, 2))
                    cpus.setdefault((name, n), []).append(round(cpu, 2))
                    print(f"round {r}  {name:16s} {n:3d} photos  {wall:6.1f} s  cpu {cpu:6.1f} s  load {os.getloadavg()[0]:.1f}  [{summary.split(': ', 1)[1]}]", flush=True)
    rows = []
    for name, _ in configs:
        (n1, t1), (n2, t2) = sorted((n, min(w)) for (c, n), w in walls.items() if c == name)
        per = (t2 - t1) / (n2 - n1)
        c1, c2 = min(cpus[(name, n1)]), min(cpus[(name, n2)])
        cpu_per = (c2 - c1) / (n2 - n1)
        rows.append({"config": name, "photos": [n1, n2], "wall_s": [t1, t2], "all_walls_s": [walls[(name, n1)], walls[(name, n2)]],
                     "cpu_s": [c1, c2], "cpu_s_per_photo": round(cpu_per, 3), "cpu_overhead_s": round(c1 - n1 * cpu_per, 2),
                     "s_per_photo": round(per, 3), "photos_per_s": round(1 / per, 3) if per > 0 else None,
                     "overhead_s": round(t1 - n1 * per, 2)})
    return rows


def bench_video() -> list[dict]:
    import av

    from anonyface import Anonymizer
    from anonyface.video import VideoOptions, process_video

    clips = sorted(EVAL.glob("*.mp4")) if EVAL.is_dir() else []
    anon = Anonymizer(seed=0)
    rows = []
    for clip in clips:
        with av.open(str(clip)) as c:
            v = c.streams.video[0]
            keys = [float(p.pts * p.time_base) for p in c.demux(v) if p.is_keyframe and p.pts is not None]
        alive: dict[int, tuple[float, float]] = {}

        def on_frame(orig, covered, tracked, t):
            for tf in tracked:
                a, b = alive.get(tf.track_id, (t, t))
                alive[tf.track_id] = (min(a, t), max(b, t))

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stats = process_video(anon, clip, Path(tmp) / clip.name, VideoOptions(progress=False), on_frame=on_frame)
            seconds = time.perf_counter() - t0
        inner = sorted(k for k in keys if k > min(keys))  # cut points a segmenter could use
        crossing = sum(any(a < k <= b for k in inner) for a, b in alive.values())
        rows.append({"clip": clip.name, "frames": stats.frames, "seconds": round(seconds, 1), "fps": round(stats.frames / seconds, 1),
                     "keyframes": len(keys), "cut_points": len(inner), "tracks": len(alive), "tracks_crossing_a_cut": crossing})
        print(rows[-1], flush=True)
    return rows


def per_file_costs(folder: Path) -> dict:
    """What the Ray path adds per file on the driver and worker, in milliseconds: one
    manifest record (write + fsync), the sha256 of an output (the eval photos' outputs)."""
    with tempfile.TemporaryDirectory() as tmp:
        m = Manifest(Path(tmp) / MANIFEST_NAME)
        t0 = time.perf_counter()
        for i in range(200):
            m.append({"input": f"x{i}.jpg", "status": "done", "sha256": "0" * 64, "faces": 3})
        record = (time.perf_counter() - t0) / 200 * 1000
        m.close()
    photos = sorted(folder.glob("*.jpg"))
    t0 = time.perf_counter()
    for p in photos:
        sha256_file(p)
    digest = (time.perf_counter() - t0) / len(photos) * 1000
    return {"manifest_record_ms": round(record, 2), "sha256_per_photo_ms": round(digest, 2),
            "photo_mb_mean": round(sum(p.stat().st_size for p in photos) / len(photos) / 1e6, 2)}


def task_overhead() -> float:
    """Milliseconds per actor call that does nothing (the price of a task)."""
    import ray

    ray.init(num_cpus=1, object_store_memory=100 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        class Noop:
            def run(self, x):
                return x

        a = Noop.remote()
        ray.get(a.run.remote(0))
        t0 = time.perf_counter()
        for i in range(200):
            ray.get(a.run.remote(i))
        return (time.perf_counter() - t0) / 200 * 1000
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest run of each point counts")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--no-photos", action="store_true")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cluster.json"))
    args = p.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "load_at_start": os.getloadavg()[0]}
    result["task_overhead_ms"] = round(task_overhead(), 2)
    result["per_file"] = per_file_costs(EVAL if EVAL.is_dir() else SAMPLE.parent)
    print(result["per_file"], flush=True)
    print(f"Ray actor call round trip: {result['task_overhead_ms']} ms", flush=True)
    if not args.no_photos:
        result["photos"] = bench_photos(args.rounds)
    if not args.no_video:
        result["video"] = bench_video()
    result["load_at_end"] = os.getloadavg()[0]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    for r in result.get("photos", []):
        print(f"{r['config']:16s} {r['s_per_photo']:.3f} s/photo ({r['photos_per_s']} photos/s), start-up {r['overhead_s']} s; "
              f"CPU {r['cpu_s_per_photo']:.3f} s/photo, start-up {r['cpu_overhead_s']} s")


if __name__ == "__main__":
    main()
