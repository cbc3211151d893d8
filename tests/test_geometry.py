import math

import numpy as np
import pytest

from anonyface.geometry import Region, box_iou, crop_face, expand_box, face_region, from_crop, roll_angle


def test_expand_box_keeps_centre_and_squares():
    b = expand_box((10, 20, 30, 60), 2.0, square=True)
    assert b == pytest.approx((-20, 0, 60, 80))
    assert expand_box((0, 0, 10, 10), 1.0) == (0, 0, 10, 10)


def test_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_roll_angle_follows_eye_line():
    eyes = np.array([[0, 0], [10, 10], [5, 5], [0, 0], [0, 0]], np.float32)
    assert roll_angle(eyes) == pytest.approx(math.pi / 4)
    assert roll_angle(None) == 0.0


@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_region_core_fully_covered_and_feather_outside(shape):
    r = Region((50, 50), (20, 10), 0.3, shape, feather=0.2)
    x1, y1, x2, y2 = (int(v) for v in r.bounds())
    a = r.alpha(x1, y1, x2, y2)
    ys, xs = np.mgrid[y1:y2, x1:x2] + 0.5
    u = ((xs - 50) * math.cos(0.3) + (ys - 50) * math.sin(0.3)) / 20
    v = (-(xs - 50) * math.sin(0.3) + (ys - 50) * math.cos(0.3)) / 10
    d = np.hypot(u, v) if shape == "ellipse" else np.maximum(abs(u), abs(v))
    assert np.all(a[d <= 1.0] == 1.0)  # the core is never softened
    assert np.all(a[d >= 1.2] == 0.0)
    assert 0 < a[(d > 1.02) & (d < 1.18)].mean() < 1
    # The bounds really hold the whole feathered region.
    assert a[0].max() == 0 and a[-1].max() == 0 and a[:, 0].max() == 0 and a[:, -1].max() == 0


def test_face_region_scales_with_mask_scale():
    small = face_region((0, 0, 100, 100), None, 1.0, "ellipse", 0.1)
    big = face_region((0, 0, 100, 100), None, 1.5, "ellipse", 0.1)
    assert big.axes[0] == pytest.approx(1.5 * small.axes[0])


def test_crop_and_paste_round_trip(astronaut):
    img = astronaut.copy()
    face = (177.0, 60.0, 270.0, 181.0)
    crop = crop_face(img, face, 256)
    assert crop.pixels.shape == (256, 256, 3) and crop.valid.all()
    # Resampling the crop back to its place gives the image (nearly) as it was.
    x1, y1, x2, y2 = rect = (int(crop.box[0]) + 2, int(crop.box[1]) + 2, int(crop.box[2]) - 2, int(crop.box[3]) - 2)
    back = from_crop(crop.pixels, crop, rect)
    diff = np.abs(back.astype(int) - astronaut[y1:y2, x1:x2].astype(int))
    assert diff.mean() < 3.0  # two linear resamplings, aligned
    # A crop larger than its place (a tiny face painted at the model's size) is shrunk, not aliased.
    small = crop_face(img, (200.0, 100.0, 216.0, 116.0), 128)
    r = (int(small.box[0]) + 1, int(small.box[1]) + 1, int(small.box[2]) - 1, int(small.box[3]) - 1)
    shrunk = from_crop(small.pixels, small, r)
    assert np.abs(shrunk.astype(int) - astronaut[r[1] : r[3], r[0] : r[2]].astype(int)).mean() < 6.0
    # Points map there and back.
    pts = np.array([[200.0, 100.0], [250.0, 150.0]])
    assert crop.to_image(crop.to_crop(pts)) == pytest.approx(pts, abs=1e-3)


def test_crop_marks_padding_outside_the_image(astronaut):
    crop = crop_face(astronaut, (0, 0, 60, 60), 64)  # face in the corner: crop runs off
    assert not crop.valid.all() and crop.valid.any()
    assert crop.valid[-1, -1] and not crop.valid[0, 0]
    assert (crop.pixels[~crop.valid] == 0).all()


def test_pose_landmarks_keep_the_pose_and_drop_the_face_shape():
    from anonyface.geometry import MEAN_FACE_3D, _rot, pose_landmarks

    def posed(yaw, pitch, roll, scale=1.7, at=(300, 200)):
        r = _rot(np.radians(roll), np.radians(yaw), np.radians(pitch))
        return scale * MEAN_FACE_3D @ r[:2].T + np.asarray(at)

    # a mean face in any pose on the 15° grid is returned as it is, roll and scale included
    for yaw, pitch, roll in ((0, 0, 0), (30, 0, 10), (-45, 15, -25), (60, -15, 5)):
        lm = posed(yaw, pitch, roll)
        assert np.abs(pose_landmarks(lm) - lm).max() < 1e-3
    # off the grid: rounded (35° → 30°); step 0 keeps the angle
    assert np.abs(pose_landmarks(posed(35, 0, 0)) - posed(30, 0, 0)).max() < 1.0  # placed by a similarity fit
    assert np.abs(pose_landmarks(posed(35, 0, 0), step_deg=0) - posed(35, 0, 0)).max() < 1e-3
    # a face of its own shape (wide mouth, long face), frontal: the mean face comes back
    own = posed(0, 0, 0)
    own[3:, 0] += np.array([-4.0, 4.0])  # mouth corners 8 px wider
    own[3:, 1] += 5.0  # mouth 5 px lower
    out = pose_landmarks(own)

    def shape(lm):  # mouth width and eye-to-mouth height over the eye distance
        ipd = np.linalg.norm(lm[1] - lm[0])
        return np.linalg.norm(lm[4] - lm[3]) / ipd, (lm[3:, 1].mean() - lm[:2, 1].mean()) / ipd

    assert np.allclose(shape(out), shape(posed(0, 0, 0)), atol=1e-3)  # the mean face's proportions
    assert shape(own)[0] > shape(out)[0] + 0.1 and shape(own)[1] > shape(out)[1] + 0.05
