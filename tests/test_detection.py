import numpy as np
import pytest

import photos
from anonyface import FaceDetector
from anonyface.detection import merge_detections


def test_astronaut_face_box_and_landmarks(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.9
    assert f.box == pytest.approx(photos.ASTRONAUT_FACE, abs=8)
    lm = f.landmarks
    assert lm.shape == (5, 2)
    # Eyes above nose above mouth, all inside the box.
    assert lm[0, 1] < lm[2, 1] < lm[3, 1] and lm[1, 1] < lm[2, 1] < lm[4, 1]
    assert ((lm[:, 0] > f.box[0]) & (lm[:, 0] < f.box[2])).all()


def test_finds_every_face_down_to_16px_in_a_group_photo(detector, group):
    img, placed = group
    faces = detector.detect(img)
    for p in placed:
        hits = [f for f in faces if photos.matches(f.box, p)]
        assert len(hits) == 1, f"face of {p.width:.0f} px at {p.center} found {len(hits)} times"
    assert len(faces) == len(placed), "false positives on the background"


def test_small_face_in_a_large_photo_needs_the_fine_pass(detector):
    img = photos.background(3000, 2000, seed=3)
    placed = photos.paste_head(img, (2500, 1500), 20)
    assert detector.scales(3000, 2000)[0] < 0.25  # the coarse pass alone cannot see 20 px
    faces = detector.detect(img)
    assert [f for f in faces if photos.matches(f.box, placed)]


def test_large_face_is_found_once(detector):
    img = photos.background(1400, 1400, seed=4)
    placed = photos.paste_head(img, (700, 700), 600)
    faces = detector.detect(img)
    assert len(faces) == 1 and photos.matches(faces[0].box, placed)


def test_tiles_cover_the_image_with_overlap():
    det = FaceDetector(tile_size=1000, overlap=200)
    tiles = det._tiles(2500, 900)
    xs = sorted({t[0] for t in tiles})
    assert xs[0] == 0 and max(t[2] for t in tiles) == 2500
    for a, b in zip(xs, xs[1:]):
        assert a + 1000 - b >= 200


def test_threshold_filters(detector, group):
    img, _ = group
    scores = sorted(f.score for f in detector.detect(img))
    cut = (scores[0] + scores[-1]) / 2
    strict = FaceDetector(threshold=cut).detect(img)
    assert 0 < len(strict) < len(scores) and all(f.score >= cut for f in strict)
    with pytest.raises(ValueError):
        FaceDetector(threshold=1.5)


def test_merge_keeps_best_of_duplicates():
    rows = np.zeros((3, 15), np.float32)
    rows[0, :4] = (0, 0, 100, 100); rows[0, 14] = 0.9
    rows[1, :4] = (5, 5, 102, 98); rows[1, 14] = 0.95
    rows[2, :4] = (300, 300, 350, 350); rows[2, 14] = 0.6
    out = merge_detections(rows)
    assert len(out) == 2 and out[0, 14] == pytest.approx(0.95)


def test_no_faces_in_a_faceless_image(detector):
    assert detector.detect(photos.background(800, 600, seed=9)) == []


def test_rejects_wrong_input(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))
