import cv2
import numpy as np
import pytest

import photos
from anonyface import Anonymizer
from anonyface.anonymizers import CoverSettings, cover
from anonyface.geometry import face_region


def _core_mask(shape, region):
    """Pixels inside the fully covered core of a region."""
    tight = type(region)(region.center, region.axes, region.angle, region.shape, 0.0)
    mask = np.zeros(shape[:2], np.float32)
    x1, y1, x2, y2 = (max(0, int(v)) for v in tight.bounds())
    x2, y2 = min(x2, shape[1]), min(y2, shape[0])
    mask[y1:y2, x1:x2] = tight.alpha(x1, y1, x2, y2)
    return mask == 1


def _far_outside(shape, region, margin=4):
    x1, y1, x2, y2 = region.bounds()
    mask = np.ones(shape[:2], bool)
    mask[max(0, int(y1) - margin) : int(y2) + margin, max(0, int(x1) - margin) : int(x2) + margin] = False
    return mask


def _detail(img, mask, face_px):
    """Energy of the facial-feature band (eyes, nose, mouth: about 1/30 to 1/6 of the
    face) inside a mask, as a difference of Gaussians scaled to the face."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    dog = cv2.GaussianBlur(g, (0, 0), max(0.5, face_px / 30)) - cv2.GaussianBlur(g, (0, 0), face_px / 6)
    return float(np.abs(dog)[mask].mean())


def _colours(img, mask):
    return len(np.unique(img[mask].reshape(-1, 3), axis=0))


@pytest.mark.parametrize("method", ["blur", "pixelate", "solid"])
def test_each_method_changes_every_face_and_nothing_far_outside(detector, group, method):
    img, placed = group
    anon = Anonymizer(method=method, detector=detector)
    faces = detector.detect(img)
    assert len(faces) == len(placed)
    out = anon.cover_faces(img, faces)
    outside = np.ones(img.shape[:2], bool)
    for face in faces:
        region = anon.settings.region(face)
        core = _core_mask(img.shape, region)
        changed = np.any(out != img, axis=2)[core].mean()
        assert changed > 0.6, f"{method}: only {changed:.0%} of a {face.width:.0f} px face changed"
        if method == "blur":
            assert _detail(out, core, face.width) < 0.3 * _detail(img, core, face.width)
        elif method == "pixelate":
            # A mosaic of about blocks × blocks cells (the feathered rim adds a few mixes).
            assert _colours(out, core) <= 2 * (anon.settings.blocks + 2) ** 2
        outside &= _far_outside(img.shape, region)
    assert np.array_equal(out[outside], img[outside])


def test_blur_kernel_scales_with_the_face():
    big = photos.background(900, 900, seed=5)
    placed_big = photos.paste_head(big, (450, 450), 300)
    small = photos.background(900, 900, seed=5)
    placed_small = photos.paste_head(small, (450, 450), 60)
    s = CoverSettings()
    for img, p in ((big, placed_big), (small, placed_small)):
        region = face_region(p.box, None, s.mask_scale, s.shape, s.feather)
        before = img.copy()
        cover(img, region, "blur", s)
        core = _core_mask(img.shape, region)
        # Both are blurred beyond recognition relative to their own size.
        assert _detail(img, core, p.width) < 0.3 * _detail(before, core, p.width)


def test_pixelate_block_count():
    img = photos.background(400, 400, seed=6)
    photos.paste_head(img, (200, 200), 160)
    region = face_region((120, 120, 280, 280), None, mask_scale=1.0, shape="box", feather=0.0)
    cover(img, region, "pixelate", CoverSettings(blocks=4))
    row = img[200, 125:275].astype(int)
    runs = 1 + int(np.count_nonzero(np.any(np.diff(row, axis=0) != 0, axis=-1) if row.ndim > 1 else np.diff(row)))
    assert 3 <= runs <= 6  # about 4 cells across the face


def test_solid_fills_with_colour():
    img = photos.background(300, 300)
    region = face_region((100, 100, 200, 200), None, 1.3, "ellipse", feather=0.0)
    cover(img, region, "solid", CoverSettings(color=(255, 0, 10)))
    assert tuple(img[150, 150]) == (255, 0, 10)


def test_unknown_method_rejected():
    with pytest.raises(ValueError):
        Anonymizer(method="sketch")
