"""Load test of `anonyface serve`: N parallel uploads against a server on localhost.

Starts `anonyface serve` in a subprocess on a free 127.0.0.1 port, sends `--requests`
uploads of the bundled sample photo from `--clients` threads at once, and reports
throughput, latency and the server's peak memory (VmHWM from /proc); checks that
every request got its answer (no request lost: all 200, each with the same number
of faces). Traffic goes to 127.0.0.1 only, and the run is bounded in count and time.

    python benchmarks/bench_web.py --clients 8 --requests 32 --workers 1 --method blur
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "anonyface" / "samples" / "group.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8, help="uploads in flight at once")
    ap.add_argument("--requests", type=int, default=32, help="uploads in all")
    ap.add_argument("--workers", type=int, default=1, help="the server's --workers")
    ap.add_argument("--method", default="blur")
    ap.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    server = subprocess.Popen([sys.executable, "-m", "anonyface", "serve", "--port", str(port), "--workers", str(args.workers),
                               "--queue", str(args.requests)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                idle_mb = peak_rss_mb(server.pid)
                httpx.get(url + "/v1/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
        data = SAMPLE.read_bytes()
        with httpx.Client(base_url=url, timeout=args.timeout) as client:
            client.post("/v1/anonymize", files={"file": ("warm.jpg", data)}, data={"method": args.method}).raise_for_status()
            loaded_mb = peak_rss_mb(server.pid)

            def one(i: int) -> tuple[int, int, float]:
                t = time.perf_counter()
                r = client.post("/v1/anonymize", files={"file": (f"g{i}.jpg", data)}, data={"method": args.method})
                faces = int(r.headers.get("x-anonyface-faces", -1)) if r.status_code == 200 else -1
                return r.status_code, faces, time.perf_counter() - t

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as ex:
                answers = list(ex.map(one, range(args.requests)))
            wall = time.perf_counter() - start
            health = client.get("/v1/health").json()
        peak_mb = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    codes = [a[0] for a in answers]
    faces = {a[1] for a in answers}
    lat = sorted(a[2] for a in answers)
    ok = codes.count(200)
    result = {
        "clients": args.clients, "requests": args.requests, "workers": args.workers, "method": args.method,
        "ok": ok, "lost": args.requests - ok, "faces_per_image": sorted(faces),
        "throughput_img_s": round(ok / wall, 2), "wall_s": round(wall, 1),
        "latency_p50_s": round(statistics.median(lat), 2), "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 2),
        "rss_idle_mb": round(idle_mb), "rss_after_first_mb": round(loaded_mb), "rss_peak_mb": round(peak_mb),
        "server_done": health["done"], "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if ok != args.requests or len(faces) != 1 or health["done"] != args.requests + 1:
        print("FAIL: a request was lost or answered differently", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
