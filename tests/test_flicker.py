"""The model-free video measures of the evaluation (flicker, identity stability)."""

from __future__ import annotations

import numpy as np
import pytest

from anonyface.evaluation.flicker import FlickerMeter, identity_stability


def test_flicker_meter_and_identity_stability():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (60, 60, 3)).astype(np.uint8)
    m = FlickerMeter(grow=1.0)
    for i in range(5):
        orig = np.roll(base, i, axis=1)
        out = orig.copy()
        out[10:50, 10:50] = 128 + (i % 2) * 40  # a flickering cover
        m.add(orig, out, [(10, 10, 50, 50)])
    r = m.result()
    assert r["pairs"] == 4 and r["output_change"] == pytest.approx(40.0) and r["flicker_ratio"] > 0
    crops = {0: [np.full((8, 8), v, np.float32) for v in (1, 1, 1)], 1: [np.eye(8, dtype=np.float32), np.ones((8, 8), np.float32)]}
    s = identity_stability(crops, embed=lambda c: c.ravel())
    assert s["tracks"] == 2 and 0 < s["consecutive_similarity"] < 1 and s["same_identity_rate"] == pytest.approx(2 / 3)
