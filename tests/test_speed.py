"""The speed work (issue 20) keeps every face: the video's fine pass (a pyramid from the
reduced pass's size up) finds what the full pyramid finds, and the settings that buy the
speed (no spinning onnxruntime threads, x264 veryfast) are the ones in use."""

from __future__ import annotations

import numpy as np
import pytest

import photos
from anonyface.geometry import box_iou
from anonyface.media import read_image
from anonyface.detection import model_path
from anonyface.runtime import open_session
from anonyface.video import FrameProcessor, TrackingOptions, _encoder_options, auto_detect_size


def _same_faces(a, b) -> None:
    """Every face of `a` is in `b` and the other way round (IoU > 0.5)."""
    for x, y in ((a, b), (b, a)):
        for f in x:
            assert any(box_iou(f.box, g.box) > 0.5 for g in y), f"face {f.box} ({f.score:.2f}) is found by one pyramid only"


def test_fine_pyramid_from_reduced_size_levels_are_three_apart(detector):
    assert detector.scales(1280, 720, coarsest=427) == [pytest.approx(427 / 1280), 1.0]
    assert detector.scales(1280, 720) == [0.5, 1.0]  # photos keep their pyramid


def test_video_fine_pass_levels(detector, monkeypatch):
    """720p: 427 + 1280 (levels ≤ 3 apart); 4K keeps the photo pyramid (its large faces
    need a level no larger than 640); frames the photo pyramid sees in one pass keep it."""
    seen = []
    monkeypatch.setattr(detector, "_rows", lambda image, coarsest=None: seen.append(coarsest) or [])
    proc = FrameProcessor(_anonymizer(detector), TrackingOptions(fine_every=1))
    proc._detect(np.full((720, 1280, 3), 128, np.uint8))
    proc._detect(np.full((2160, 3840, 3), 128, np.uint8))
    proc._detect(np.full((480, 640, 3), 128, np.uint8))  # one pass already
    proc._detect(np.full((750, 1000, 3), 128, np.uint8))  # one pass already (1000 < 640 × √3)
    assert seen == [427, None, None, None]


def test_fine_pyramid_finds_the_same_faces_on_the_group_photo(detector):
    img = _group()
    size = auto_detect_size(img.shape[1], img.shape[0])
    full, fine = detector.detect(img), detector.detect(img, coarsest=size)
    assert len(full) >= 5
    _same_faces(full, fine)


def _group() -> np.ndarray:
    from importlib import resources

    return read_image(str(resources.files("anonyface") / "samples" / "group.jpg")).rgb


def test_fine_pass_finds_a_tiny_face_far_from_big_ones(detector):
    """Two big faces on one side of a 1280×720 frame and a 20 px one in the far corner:
    the video's fine pass finds all three, as the full pyramid does."""
    img = photos.background(1280, 720, seed=3)
    placed = [photos.paste_head(img, (200, 250), 180), photos.paste_head(img, (480, 300), 130),
              photos.paste_head(img, (1200, 660), 20)]
    proc = FrameProcessor(_anonymizer(detector), TrackingOptions(fine_every=1))
    faces, min_size = proc._detect(img)
    assert min_size == 0.0  # a fine pass
    for p in placed:
        assert any(photos.matches(f.box, p) for f in faces), f"missed the {p.width:.0f} px face"
    _same_faces(detector.detect(img), faces)


def _anonymizer(detector):
    from anonyface import Anonymizer

    return Anonymizer(method="blur", detector=detector, audit=False)


def test_sessions_do_not_spin():
    sess = open_session(model_path())
    cfg = sess.get_session_options().get_session_config_entry
    assert cfg("session.intra_op.allow_spinning") == "0"
    assert cfg("session.inter_op.allow_spinning") == "0"


def test_x264_default_preset_is_veryfast_and_can_be_chosen():
    assert _encoder_options("libx264", None, None)["preset"] == "veryfast"
    assert _encoder_options("libx264", None, "medium")["preset"] == "medium"
