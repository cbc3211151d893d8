"""The bundled ONNX models and the onnxruntime sessions that run them (detector and generator alike)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def model_path(name: str) -> Path:
    """Path of a model file shipped in the package's `models/` folder."""
    return Path(str(resources.files("anonyface") / "models" / name))


def open_session(path: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime session with full graph optimisation and quiet logging.

    `threads` sets the intra-op thread count (None: onnxruntime's default, all cores).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
