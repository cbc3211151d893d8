"""Gradient-domain blending of a painted face: no seam, the scene's light, the photo's colour."""

from __future__ import annotations

import numpy as np

import photos
from anonyface.blending import blend_into, colourfulness, harmonic_fill, saturation_for


def test_harmonic_fill_solves_the_laplace_equation():
    rng = np.random.default_rng(0)
    h, w = 9, 13
    top, bottom, left, right = rng.normal(size=(w, 2)), rng.normal(size=(w, 2)), rng.normal(size=(h, 2)), rng.normal(size=(h, 2))
    u = harmonic_fill(top, bottom, left, right)
    p = np.zeros((h + 2, w + 2, 2))
    p[1:-1, 1:-1], p[0, 1:-1], p[-1, 1:-1], p[1:-1, 0], p[1:-1, -1] = u, top, bottom, left, right
    lap = 4 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
    assert np.abs(lap).max() < 1e-9
    const = harmonic_fill(*(np.full((n, 1), 3.0) for n in (w, w, h, h)))
    assert np.allclose(const, 3.0)


def _step(image: np.ndarray, rect) -> float:
    """Mean absolute difference across the rectangle's border (inside row vs outside row)."""
    x1, y1, x2, y2 = rect
    i = image.astype(float)
    return float(np.mean([
        np.abs(i[y1, x1:x2] - i[y1 - 1, x1:x2]).mean(), np.abs(i[y2 - 1, x1:x2] - i[y2, x1:x2]).mean(),
        np.abs(i[y1:y2, x1] - i[y1:y2, x1 - 1]).mean(), np.abs(i[y1:y2, x2 - 1] - i[y1:y2, x2]).mean(),
    ]))


def test_no_seam_and_the_scene_light():
    scene = photos.background(200, 200, seed=2) // 4  # a dark, textured scene
    rect = (60, 50, 140, 150)
    x1, y1, x2, y2 = rect
    face = photos.astronaut()[100:200, 180:260]  # a bright, front-lit face
    hard = scene.copy()
    hard[y1:y2, x1:x2] = face
    soft = scene.copy()
    soft[y1:y2, x1:x2] = blend_into(scene, face, rect)
    assert _step(soft, rect) < 0.25 * _step(hard, rect)
    # Lit like the scene: as dark as its surroundings, not as the painted face was.
    ring = np.concatenate([scene[y1 - 3 : y1, x1:x2].reshape(-1, 3), scene[y2 : y2 + 3, x1:x2].reshape(-1, 3)])
    assert abs(soft[y1:y2, x1:x2].mean() - ring.mean()) < 0.5 * abs(face.mean() - ring.mean())
    # The face keeps its own detail (it is not a flat fill).
    assert soft[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20].std() > 5


def test_blend_reads_only_the_ring_outside_the_rectangle():
    scene = photos.background(120, 120, seed=4)
    rect = (30, 30, 90, 90)
    face = photos.astronaut()[120:180, 190:250]
    a = blend_into(scene, face, rect)
    other = scene.copy()
    other[30:90, 30:90] = 255 - other[30:90, 30:90]  # anything inside
    other[:28], other[:, :28] = 0, 0  # anything beyond the one-pixel ring
    assert np.array_equal(a, blend_into(other, face, rect))


def test_black_and_white_photos_get_grey_faces():
    colour = photos.astronaut()
    grey = np.repeat(colour.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert saturation_for(colourfulness(colour)) == 1.0
    s = saturation_for(colourfulness(grey))
    assert s == 0.0
    rect = (100, 100, 180, 180)
    out = blend_into(grey, colour[100:180, 180:260], rect, saturation=s)
    assert colourfulness(out) < 1.0
