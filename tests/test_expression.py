"""The expression meter on real faces (the bundled group photo, our detector), and the
`anonyface-train conditions` command on a shard made here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from photos import open_mouth, squash_eye

from anonyface import expression
from anonyface.detection import Face
from anonyface.expression import EXPRESSION_DIM, EXPRESSION_NAMES, NEUTRAL, ExpressionMeter
from anonyface.geometry import CROP_GROW, GEN_SIZE, crop_face
from anonyface.training import shards

SAMPLE = Path(expression.__file__).parent / "samples" / "group.jpg"
MOUTH, LEFT_EYE, RIGHT_EYE = (EXPRESSION_NAMES.index(n) for n in ("mouth_open", "left_eye_open", "right_eye_open"))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(SAMPLE))[..., ::-1])


@pytest.fixture(scope="module")
def faces(photo, detector) -> list[Face]:
    found = detector.detect(photo)
    assert len(found) >= 4
    return found


@pytest.fixture(scope="module")
def meter() -> ExpressionMeter:
    m = expression.expression_meter(threads=2)
    assert m is not None and m.session is not None, "the bundled expression models must load"
    return m


def _big(faces: list[Face]) -> Face:
    return max(faces, key=lambda f: f.width)


def test_interface_constants():
    assert EXPRESSION_NAMES == ("mouth_open", "left_eye_open", "right_eye_open", "smile", "brow_raise")
    assert EXPRESSION_DIM == 5
    assert NEUTRAL.shape == (5,) and NEUTRAL.dtype == np.float32 and not NEUTRAL.any()
    assert np.all(expression.RAW_STD > 0)


def test_real_faces_give_finite_normalised_values(photo, faces, meter):
    values = meter.measure(photo, faces)
    assert values.shape == (len(faces), EXPRESSION_DIM) and values.dtype == np.float32
    assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= expression.CLIP)
    measurable = [i for i, f in enumerate(faces) if max(f.width, f.height) >= expression.MIN_FACE]
    assert len(measurable) >= 4
    # Every face big enough is measured (not NEUTRAL), and the raw ratios are plausible.
    raw = meter.measure_raw(photo, [faces[i] for i in measurable])
    assert np.all(np.isfinite(raw))
    assert np.all(raw[:, [LEFT_EYE, RIGHT_EYE]] > 0.1) and np.all(raw[:, [LEFT_EYE, RIGHT_EYE]] < 0.6)
    assert np.all(raw[:, MOUTH] > -0.05) and np.all(raw[:, MOUTH] < 0.5)
    assert meter.measure(photo, []).shape == (0, EXPRESSION_DIM)


def test_tiny_or_broken_faces_get_neutral(photo, faces, meter):
    big = _big(faces)
    cx, cy = (big.box[0] + big.box[2]) / 2, (big.box[1] + big.box[3]) / 2
    tiny = Face((cx - 8, cy - 8, cx + 8, cy + 8), big.landmarks, 0.9)
    nan = Face(big.box, np.full((5, 2), np.nan, np.float32), 0.9)
    values = meter.measure(photo, [tiny, big, nan])
    assert np.array_equal(values[0], NEUTRAL) and np.array_equal(values[2], NEUTRAL)
    assert not np.array_equal(values[1], NEUTRAL)
    # A face on a blank image: the mesh finds no face there → NEUTRAL, no error.
    blank = np.full_like(photo, 128)
    assert np.array_equal(meter.measure(blank, [big])[0], NEUTRAL)


def test_missing_model_gives_neutral_not_an_error(photo, faces, tmp_path, monkeypatch):
    with pytest.warns(RuntimeWarning, match="neutral"):
        m = ExpressionMeter(tmp_path / "absent.onnx")
    values = m.measure(photo, faces)
    assert values.shape == (len(faces), EXPRESSION_DIM) and not values.any()
    monkeypatch.setattr(expression, "model_path", lambda: tmp_path / "absent.onnx")
    monkeypatch.setattr(expression, "_warned_missing", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert expression.expression_meter() is None
        assert expression.expression_meter() is None
    assert len([w for w in caught if "neutral" in str(w.message)]) == 1  # warned once


def test_opening_the_mouth_raises_mouth_open(photo, faces, meter):
    face = _big(faces)
    before = meter.measure(photo, [face])[0]
    after = meter.measure(open_mouth(photo, face, 0.2 * face.width), [face])[0]
    assert after[MOUTH] > before[MOUTH] + 1.0, (before, after)  # in standard deviations


@pytest.mark.parametrize("k", [0, 1])
def test_squashing_an_eye_lowers_that_eye(photo, faces, meter, k):
    face = _big(faces)
    idx, other = (LEFT_EYE, RIGHT_EYE) if k == 0 else (RIGHT_EYE, LEFT_EYE)
    before = meter.measure(photo, [face])[0]
    after = meter.measure(squash_eye(photo, face, k), [face])[0]
    assert after[idx] < before[idx] - 1.5, (before, after)
    assert abs(after[other] - before[other]) < 0.75, (before, after)


def test_roll_changes_little(photo, faces, meter, detector):
    """Rotate the whole photo 20°: the faces found again measure (nearly) the same."""
    h, w = photo.shape[:2]
    for angle in (20, -20):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        nw, nh = int(w * cos + h * sin), int(w * sin + h * cos)
        m[0, 2] += nw / 2 - w / 2
        m[1, 2] += nh / 2 - h / 2
        rotated = cv2.warpAffine(photo, m, (nw, nh), flags=cv2.INTER_LINEAR)
        inv = cv2.invertAffineTransform(m)
        compared = 0
        for face, value in zip(found := detector.detect(rotated), meter.measure(rotated, found)):
            if face.width < 60:
                continue  # small faces: a few pixels of resampling move the ratios more
            c = inv[:, :2] @ np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2]) + inv[:, 2]
            orig = min(faces, key=lambda f: np.hypot(c[0] - (f.box[0] + f.box[2]) / 2, c[1] - (f.box[1] + f.box[3]) / 2))
            ref = meter.measure(photo, [orig])[0]
            assert np.abs(value - ref).max() < 0.6, (angle, ref, value)
            compared += 1
        assert compared >= 2


def _small_shard(photo, faces, path: Path) -> None:
    imgs, meta = [], {k: [] for k in shards.FIELDS}
    for i, f in enumerate(faces):
        crop = crop_face(photo, f.box, GEN_SIZE, CROP_GROW)
        imgs.append(crop.pixels)
        meta["landmarks"].append(crop.to_crop(f.landmarks))
        meta["face_box"].append(crop.to_crop(np.array([[f.box[0], f.box[1]], [f.box[2], f.box[3]]])).ravel())
        meta["erase"].append((10, 10, 100, 100))
        meta["valid"].append((0, 0, GEN_SIZE, GEN_SIZE))
        meta["score"].append(f.score)
        meta["source"].append(f"group.jpg#{i}")
        meta["identity"].append("group")
    shards.write_shard(path, imgs, meta)


def test_conditions_command_adds_expression_and_keeps_the_rest(photo, faces, tmp_path, meter):
    from anonyface.training.cli import main

    data = tmp_path / "faces"
    data.mkdir()
    _small_shard(photo, faces, data / "train-000.npz")
    _small_shard(photo, faces[:2], data / "val-000.npz")
    (data / "manifest.json").write_text(json.dumps({"shards": [
        {"file": "train-000.npz", "bytes": 0, "sha256": "old"}, {"file": "val-000.npz", "bytes": 0, "sha256": "old"}]}))
    before = {p.name: dict(np.load(p)) for p in data.glob("*.npz")}
    assert main(["conditions", str(data)]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["manifest.json", "train-000.npz", "val-000.npz"]
    for name, old in before.items():
        with np.load(data / name) as z:
            new = {k: z[k] for k in z.files}
        assert set(new) == set(old) | {"expression"}
        for k, v in old.items():
            assert new[k].dtype == v.dtype and np.array_equal(new[k], v), k
        e = new["expression"]
        assert e.shape == (len(old["score"]), EXPRESSION_DIM) and e.dtype == np.float32
        assert np.all(np.isfinite(e))
        assert np.any(e != 0, axis=1).sum() >= min(4, len(e))  # the big faces are measured
    # Measured on the stored crop: the same numbers the meter gives for that crop.
    fs = shards.read_shards([data / "train-000.npz"])
    assert fs.has_expression
    big = int(np.argmax([f.width for f in faces]))
    face = Face(tuple(fs.face_box[big]), fs.landmarks[big], float(fs.score[big]))
    assert np.allclose(fs.expression[big], meter.measure(fs.images[big], [face])[0], atol=1e-5)
    # … and close to what it measures on the full photo (same geometry, fewer pixels).
    assert np.abs(fs.expression[big] - meter.measure(photo, [faces[big]])[0]).max() < 0.75
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["expression"]["names"] == list(EXPRESSION_NAMES)
    assert all(s["sha256"] != "old" for s in manifest["shards"])
    # Shards without the field read as NEUTRAL, and say so.
    _small_shard(photo, faces[:1], tmp_path / "old.npz")
    old = shards.read_shards([tmp_path / "old.npz"])
    assert not old.has_expression and old.expression.shape == (1, EXPRESSION_DIM) and not old.expression.any()


def test_dataset_builder_writes_the_same_conditions_as_the_command(photo, faces, tmp_path, detector, meter):
    """The builder measures each crop as stored: `conditions` on its shard gives the same numbers."""
    import shutil

    from anonyface.training import dataset
    from anonyface.training.conditions import add_expression

    src = tmp_path / "photos" / "lfw"
    src.mkdir(parents=True)
    for i, f in enumerate(sorted(faces, key=lambda f: -f.width)[:2]):
        x1, y1, x2, y2 = (int(v) for v in f.box)
        pad = int(0.8 * (x2 - x1))
        portrait = photo[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
        cv2.imwrite(str(src / f"Person_{'AB'[i]}_0001.jpg"), np.ascontiguousarray(portrait[..., ::-1]))
    out = tmp_path / "faces"
    manifest = dataset.build_dataset(tmp_path / "photos", out, val_fraction=0.0, progress=False,
                                     detector=dataset.FaceDetector(threshold=dataset.FACE_FLOOR), det_cache=None)
    assert manifest["totals"]["kept"] == 2 and manifest["expression"]["neutral"] == 0
    built = out / "train-000.npz"
    with np.load(built) as z:
        e = z["expression"]
    assert e.shape == (2, EXPRESSION_DIM) and np.all(e != 0, axis=1).all()
    again = tmp_path / "again.npz"
    shutil.copy(built, again)
    add_expression(again, meter)
    with np.load(again) as z:
        assert np.allclose(z["expression"], e, atol=1e-4)


def test_mirroring_swaps_the_eyes(photo, faces, meter, detector):
    """A mirrored photo gives the mirrored values (what FLIP_PERM says a training flip must
    do): with one eye squeezed, the low value moves to the other eye's slot."""
    face = _big(faces)
    squeezed = squash_eye(photo, face, 0)
    ref = meter.measure(squeezed, [face])[0]
    assert ref[LEFT_EYE] < ref[RIGHT_EYE] - 1.5
    mirrored = np.ascontiguousarray(squeezed[:, ::-1])
    cx = photo.shape[1] - (face.box[0] + face.box[2]) / 2
    found = min(detector.detect(mirrored), key=lambda f: abs(cx - (f.box[0] + f.box[2]) / 2))
    value = meter.measure(mirrored, [found])[0]
    assert np.abs(value - ref[list(expression.FLIP_PERM)]).max() < 0.6, (ref, value)
