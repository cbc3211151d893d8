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
    The worker threads do not spin while waiting for work: spinning burns the cores
    that the decoder, the encoder and everything else on the machine need, and on a
    busy 2-core machine it made the detector 2.3× slower (docs/speed.md).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
