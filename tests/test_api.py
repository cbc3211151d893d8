import numpy as np
import pytest
from PIL import Image

import anonyface


def test_anonymize_numpy_returns_new_array(astronaut):
    src = astronaut.copy()
    out = anonyface.anonymize(src)
    assert isinstance(out, np.ndarray) and out.shape == src.shape and out.dtype == np.uint8
    assert np.array_equal(src, astronaut)  # input untouched
    assert not np.array_equal(out, astronaut)
    assert np.array_equal(out[300:], astronaut[300:])  # nothing changed far below the face


def test_anonymize_pil_keeps_type_and_mode(astronaut):
    img = Image.fromarray(astronaut).convert("L")
    out = anonyface.anonymize(img, method="pixelate", blocks=6)
    assert isinstance(out, Image.Image) and out.mode == "L" and out.size == img.size
    assert np.asarray(out)[100:150, 200:250].tolist() != np.asarray(img)[100:150, 200:250].tolist()


def test_bgr_and_rgba_arrays(astronaut):
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    out = anonyface.anonymize(bgr, bgr=True, method="solid", color=(255, 0, 0))
    assert tuple(out[120, 224]) == (0, 0, 255)  # red in BGR order
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 77, np.uint8)])
    out = anonyface.anonymize(rgba, method="solid")
    assert out.shape == (512, 512, 4) and (out[..., 3] == 77).all()


def test_anonymizer_reuses_its_detector(astronaut):
    anon = anonyface.Anonymizer(method="blur")
    det = anon.detector
    out, faces = anon.anonymize_with_faces(astronaut)
    assert len(faces) == 1 and anon.detector is det
    assert anon(astronaut).shape == astronaut.shape


def test_no_faces_returns_identical_copy():
    img = np.full((64, 64, 3), 128, np.uint8)
    out = anonyface.anonymize(img)
    assert np.array_equal(out, img) and out is not img


def test_rejects_bad_arrays():
    with pytest.raises(TypeError):
        anonyface.anonymize(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        anonyface.anonymize(np.zeros((10, 10, 5), np.uint8))
