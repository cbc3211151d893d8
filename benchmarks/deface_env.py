"""deface in its own virtual environment, for side-by-side benchmarks.

deface (ORB-HD, CenterFace) pins its own dependencies, so it gets a venv of
its own under `.bench-envs/deface`, made on first use from PyPI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / ".bench-envs" / "deface"
VERSION = "1.5.0"

# Runs inside deface's venv: CenterFace detections (x1, y1, x2, y2, score) per file,
# exactly as deface's own image path computes them (full resolution, no --scale).
_DETECT = r"""
import json, sys
import imageio.v2 as iio
from deface.centerface import CenterFace
cf = CenterFace(in_shape=None, backend="auto")
out = {}
for path in sys.argv[2:]:
    frame = iio.imread(path)[..., :3]
    dets, _ = cf(frame, threshold=float(sys.argv[1]))
    out[path] = [[float(v) for v in d] for d in dets]
print(json.dumps(out))
"""


def ensure() -> Path:
    """Path of deface's Python, installing it on first use."""
    py = ENV / "bin" / "python"
    if not (ENV / "bin" / "deface").exists():
        print(f"installing deface=={VERSION} into {ENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"deface=={VERSION}", "onnxruntime"], check=True)
    return py


def detect(paths: list[Path], threshold: float = 0.2) -> dict[str, list[list[float]]]:
    py = ensure()
    res = subprocess.run(
        [str(py), "-c", _DETECT, str(threshold), *map(str, paths)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def command() -> list[str]:
    ensure()
    return [str(ENV / "bin" / "deface")]
