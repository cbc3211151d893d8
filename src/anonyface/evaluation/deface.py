"""deface (ORB-HD, CenterFace) in a virtual environment of its own, for side-by-side runs.

deface pins its own dependencies, so it gets a venv made on first use from
PyPI: `$ANONYFACE_DEFACE_ENV`, else `~/.cache/anonyface/deface-VERSION`
(`$XDG_CACHE_HOME` respected). `$ANONYFACE_DEFACE_PYTHON` points at an existing
deface installation instead. Used by `anonyface-eval` (its CenterFace judge and
the deface peer) and by the benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def env_dir() -> Path:
    if os.environ.get("ANONYFACE_DEFACE_ENV"):
        return Path(os.environ["ANONYFACE_DEFACE_ENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "anonyface" / f"deface-{VERSION}"


def ensure() -> Path:
    """Path of deface's Python, installing it on first use."""
    if os.environ.get("ANONYFACE_DEFACE_PYTHON"):
        return Path(os.environ["ANONYFACE_DEFACE_PYTHON"])
    env = env_dir()
    py = env / "bin" / "python"
    if not (env / "bin" / "deface").exists():
        print(f"installing deface=={VERSION} into {env} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"deface=={VERSION}", "onnxruntime"], check=True)
    return py


def python(install: bool = True) -> Path | None:
    """deface's Python, or None when it is not installed (and `install` is False or fails)."""
    if os.environ.get("ANONYFACE_DEFACE_PYTHON"):
        return Path(os.environ["ANONYFACE_DEFACE_PYTHON"])
    py = env_dir() / "bin" / "python"
    if py.with_name("deface").exists():
        return py
    if not install:
        return None
    try:
        return ensure()
    except (OSError, subprocess.CalledProcessError):
        return None


def command(install: bool = True) -> list[str] | None:
    """deface's command line, or None when it is not available."""
    py = python(install)
    if py is None:
        return None
    cli = py.with_name("deface")
    return [str(cli)] if cli.exists() else None


def detect(paths: list[Path], threshold: float = 0.2) -> dict[str, list[list[float]]]:
    """CenterFace detections per photo, as deface itself computes them."""
    py = ensure()
    res = subprocess.run(
        [str(py), "-c", _DETECT, str(threshold), *map(str, paths)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])
