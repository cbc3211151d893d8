"""The data set builder, on a handful of photos the test makes itself."""

from __future__ import annotations

import json

import cv2
import numpy as np
import photos
import pytest

from anonyface.detection import FaceDetector
from anonyface.geometry import GEN_SIZE
from anonyface.training import dataset
from anonyface.training.shards import read_shards


def _save(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])


def _portrait(size, face_width, seed, angle=0.0, center=None):
    w, h = size
    img = photos.background(w, h, seed)
    photos.paste_head(img, center or (w / 2, h / 2 + 4), face_width, angle)
    return img


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    lfw = root / "lfw"
    _save(lfw / "Ann_Example_0001.jpg", _portrait((150, 150), 78, 1))
    _save(lfw / "Ann_Example_0002.jpg", _portrait((150, 150), 84, 2, angle=6))
    _save(lfw / "Bob_Sample_0001.jpg", _portrait((150, 150), 74, 3))
    _save(lfw / "Bob_Sample_0002.jpg", _portrait((150, 150), 80, 4, angle=-6))
    _save(lfw / "Cleo_Test_0001.jpg", _portrait((150, 150), 82, 5))
    # UTKFace-like: the face fills the photo, so the crop runs far past its borders.
    _save(root / "utkface" / "30_1_2_20170116174525125.jpg.chip.jpg", _portrait((200, 200), 170, 6))
    humans = root / "humans"
    _save(humans / "empty.jpg", photos.background(160, 160, 7))
    pair = photos.background(260, 160, 8)
    photos.paste_head(pair, (80, 84), 72)
    photos.paste_head(pair, (180, 84), 70)
    _save(humans / "pair.jpg", pair)
    _save(humans / "tiny.jpg", _portrait((160, 160), 40, 9))
    (humans / "broken.jpg").write_bytes(b"not a jpeg at all")
    (humans / "notes.txt").write_text("not a photo")
    return root


def _seed_splitting(val_fraction=0.5):
    """A seed that puts Ann in validation and Bob in training."""
    for seed in range(200):
        if (dataset.split_of("lfw/Ann_Example", val_fraction, seed) == "val"
                and dataset.split_of("lfw/Bob_Sample", val_fraction, seed) == "train"):
            return seed
    raise AssertionError("no seed found")


@pytest.fixture(scope="module")
def detector():
    # The builder's own choice of model, whatever the inference default.
    return FaceDetector(threshold=dataset.FACE_FLOOR)


@pytest.fixture(scope="module")
def built(src, tmp_path_factory, detector):
    seed = _seed_splitting()
    out = tmp_path_factory.mktemp("faces")
    manifest = dataset.build_dataset(src, out, val_fraction=0.5, seed=seed, progress=False, detector=detector)
    return out, manifest, seed


def test_identity_keys_and_attributes():
    assert dataset.identity_of("lfw/George_W_Bush_0012.jpg") == "lfw/George_W_Bush"
    assert dataset.identity_of("utkface/1_0_0_2017.jpg.chip.jpg") == "utkface/1_0_0_2017.jpg.chip.jpg"
    assert dataset.identity_of("humans/1 (12).jpg") == "humans/1 (12).jpg"
    assert dataset.utk_attributes("utkface/26_1_3_20170119.jpg.chip.jpg") == {"age": 26, "gender": 1, "race": 3}
    assert dataset.utk_attributes("utkface/61_1_20170109142408075.jpg.chip.jpg")["race"] is None
    assert dataset.utk_attributes("lfw/Ann_Example_0001.jpg") is None
    # The split is a pure function of the identity: stable, and about the asked fraction.
    keys = [f"id{i}" for i in range(4000)]
    val = [k for k in keys if dataset.split_of(k, 0.05) == "val"]
    assert 0.035 < len(val) / len(keys) < 0.065
    assert val == [k for k in keys if dataset.split_of(k, 0.05) == "val"]


def test_keeps_one_face_per_photo_and_counts_drops(built):
    _, m, _ = built
    assert m["totals"]["photos"] == 10  # notes.txt is not a photo
    assert m["totals"]["kept"] == 6
    assert m["dropped"] == {"unreadable": 1, "no_face": 1, "small_face": 1, "ambiguous": 1}
    assert m["subsets"]["lfw"]["kept"] == 5
    assert m["subsets"]["utkface"]["kept"] == 1
    assert m["subsets"]["humans"]["dropped"] == m["dropped"]
    assert sum(s["count"] for s in m["shards"]) == 6


def test_split_is_by_identity(built):
    out, m, _ = built
    train = read_shards(sorted(out.glob("train-*.npz")))
    val = read_shards(sorted(out.glob("val-*.npz")))
    assert len(train) == m["totals"]["train"] and len(val) == m["totals"]["val"]
    assert len(train) > 0 and len(val) > 0
    assert not set(train.identity) & set(val.identity)
    assert sorted(s for s in val.source if s.startswith("lfw/Ann")) == [
        "lfw/Ann_Example_0001.jpg", "lfw/Ann_Example_0002.jpg"]
    assert sum(s.startswith("lfw/Bob") for s in train.source) == 2


def test_geometry_of_the_crops(built):
    out, _, _ = built
    fs = read_shards(sorted(out.glob("*.npz")))
    n = GEN_SIZE
    assert fs.images.shape[1:] == (n, n, 3)
    assert np.all(fs.landmarks >= 0) and np.all(fs.landmarks <= n)
    assert np.all(fs.score >= 0.9)
    for i in range(len(fs)):
        fb, e, v = fs.face_box[i], fs.erase[i], fs.valid[i]
        assert 0 <= e[0] < e[2] <= n and 0 <= e[1] < e[3] <= n
        assert e[0] <= fb[0] + 1 and e[1] <= fb[1] + 1 and fb[2] - 1 <= e[2] and fb[3] - 1 <= e[3]
        # Landmarks sit inside the face box, and the face box in the middle of the crop.
        lm = fs.landmarks[i]
        assert np.all(lm >= fb[:2] - 2) and np.all(lm <= fb[2:] + 2)
        assert abs((fb[0] + fb[2]) / 2 - n / 2) < 2 and abs((fb[1] + fb[3]) / 2 - n / 2) < 2
        # Outside the valid rectangle is padding: 0, give or take JPEG ringing and
        # the 1-px band where resampling blends photo and padding.
        pad = np.ones((n, n), bool)
        pad[max(0, v[1] - 2):v[3] + 2, max(0, v[0] - 2):v[2] + 2] = False
        if pad.any():
            assert fs.images[i][pad].mean() < 6
    utk = [i for i, s in enumerate(fs.source) if s.startswith("utkface/")]
    assert len(utk) == 1
    v = fs.valid[utk[0]]
    area = (v[2] - v[0]) * (v[3] - v[1]) / n**2
    assert 0.25 <= area < 0.6  # the face fills the photo: most of the crop is padding
    assert dataset.utk_attributes(fs.source[utk[0]]) == {"age": 30, "gender": 1, "race": 2}


def test_reproducible_and_small_shards(built, src, tmp_path, detector):
    out, m, seed = built
    again = dataset.build_dataset(src, tmp_path / "again", val_fraction=0.5, seed=seed, progress=False,
                                  detector=detector)
    assert again == m
    for f in sorted(out.iterdir()):
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes(), f.name
    assert json.loads((out / "manifest.json").read_text()) == m
    assert "humans/pair.jpg\tambiguous" in (out / "dropped.tsv").read_text()

    # Shards are cut before they pass the size limit; content and order are unchanged.
    small = dataset.build_dataset(src, tmp_path / "small", val_fraction=0.5, seed=seed, shard_mb=0.016,
                                  progress=False, detector=detector)
    assert len(small["shards"]) > len(m["shards"])
    assert all(s["bytes"] <= 16_000 or s["count"] == 1 for s in small["shards"])
    for split in ("train", "val"):
        a = read_shards(sorted(out.glob(f"{split}-*.npz")))
        b = read_shards(sorted((tmp_path / "small").glob(f"{split}-*.npz")))
        assert list(a.source) == list(b.source)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.landmarks, b.landmarks)


def test_main_command(src, tmp_path, capsys):
    rc = dataset.main([str(src), str(tmp_path / "cli"), "--limit", "3", "--val-fraction", "0", "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 photos:" in printed
    m = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert m["totals"]["photos"] == 3 and m["totals"]["val"] == 0
    assert m["config"]["limit"] == 3
    assert dataset.main([str(tmp_path / "missing"), str(tmp_path / "x"), "-q"]) == 2


@pytest.fixture(scope="module")
def context_src(tmp_path_factory, detector):
    """A `webfaces/`-like subset: a two-person photo and a portrait with ground truth
    (written from the detector's own landmarks, 2 px off), plus one listed face
    where the photo has none, and an unlisted photo; and one LFW photo."""
    root = tmp_path_factory.mktemp("context")
    web = root / "webfaces"
    pair = photos.background(420, 260, 11)
    photos.paste_head(pair, (120, 130), 96)
    photos.paste_head(pair, (300, 130), 92)
    _save(web / "pair.jpg", pair)
    _save(web / "solo.jpg", _portrait((300, 260), 100, 12))
    _save(web / "unlisted.jpg", _portrait((300, 260), 100, 13))
    _save(root / "lfw" / "Ann_Example_0001.jpg", _portrait((150, 150), 78, 1))
    lines = ["# file leye_x leye_y reye_x reye_y nose_x nose_y mouth_x mouth_y"]
    for name in ("pair.jpg", "solo.jpg"):
        img = dataset.load_rgb(web / name)
        faces = sorted(dataset.detect_padded(detector, img), key=lambda f: f.box[0])
        for f in faces:
            if f.score < 0.9:
                continue
            lm = f.landmarks + 2.0
            pts = [lm[1], lm[0], lm[2], (lm[3] + lm[4]) / 2]  # eyes listed right-first: the reader sorts them
            lines.append(name + " " + " ".join(f"{v:.1f}" for p in pts for v in p))
    lines.append("solo.jpg 20.0 20.0 40.0 20.0 30.0 30.0 30.0 38.0")  # no face there
    (web / "landmarks.txt").write_text("\n".join(lines) + "\n")
    return root


def test_context_subset_gives_every_listed_face(context_src, tmp_path, detector):
    m = dataset.build_dataset(context_src, tmp_path / "ctx", val_fraction=0.0, context_val_fraction=0.0,
                              progress=False, detector=detector)
    web = m["subsets"]["webfaces"]
    assert web["photos"] == 3 and web["faces_listed"] == 4
    assert web["kept"] == 3 and web["dropped"] == {"not_found": 1}
    fs = read_shards(sorted((tmp_path / "ctx").glob("train-*.npz")))
    srcs = sorted(s for s in fs.source if s.startswith("webfaces/"))
    assert srcs == ["webfaces/pair.jpg#0", "webfaces/pair.jpg#1", "webfaces/solo.jpg#0"]
    # The two crops of one photo are centred on different faces, and share its identity.
    i, j = (list(fs.source).index(s) for s in srcs[:2])
    assert fs.identity[i] == fs.identity[j] == "webfaces/pair.jpg"
    assert not np.array_equal(fs.images[i], fs.images[j])
    assert "webfaces/solo.jpg#1\tnot_found" in (tmp_path / "ctx" / "dropped.tsv").read_text()

    # All of them held out: a separate `webval` series; `val` keeps only the other subsets.
    m = dataset.build_dataset(context_src, tmp_path / "held", val_fraction=1.0, context_val_fraction=1.0,
                              progress=False, detector=detector)
    assert m["totals"]["webval"] == 3 and m["totals"]["val"] == 1 and m["totals"]["train"] == 0
    wv = read_shards(sorted((tmp_path / "held").glob("webval-*.npz")))
    assert all(s.startswith("webfaces/") for s in wv.source)
    val = read_shards(sorted((tmp_path / "held").glob("val-*.npz")))
    assert list(val.source) == ["lfw/Ann_Example_0001.jpg"]


def test_context_photos_leave_the_other_order_alone():
    files = [f"utk/{i}.jpg" for i in range(50)] + [f"webfaces/{i}.jpg" for i in range(7)]
    order = dataset.photo_order(files, 3)
    main = [f for f in order if not f.startswith("webfaces/")]
    assert main == [files[i] for i in np.random.default_rng(3).permutation(50)]
    assert sorted(order) == sorted(files)
    pos = [k for k, f in enumerate(order) if f.startswith("webfaces/")]
    assert max(np.diff(pos)) <= 10 and pos[0] < 10  # spread over the whole order


class _Refuses:
    cache_key = "refuses"

    def detect(self, image):
        raise AssertionError("detector called although the cache holds the photo")


class _Counting:
    cache_key = "refuses"  # the same identity as _Refuses: they share one cache

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def detect(self, image):
        self.calls += 1
        return self.inner.detect(image)


def test_detection_cache_rebuilds_byte_identical(src, tmp_path, detector):
    counting = _Counting(detector)
    a = dataset.build_dataset(src, tmp_path / "a", progress=False, detector=counting)
    assert counting.calls == 9  # every decodable photo once
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / dataset.DET_CACHE_NAME).write_bytes((tmp_path / "a" / dataset.DET_CACHE_NAME).read_bytes())
    b = dataset.build_dataset(src, tmp_path / "b", progress=False, detector=_Refuses())
    assert a == b
    for f in sorted((tmp_path / "a").iterdir()):
        assert (tmp_path / "b" / f.name).read_bytes() == f.read_bytes(), f.name
    # A cache made with another detector is not used.
    with pytest.raises(AssertionError, match="detector called"):
        dataset.build_dataset(src, tmp_path / "a", progress=False, detector=_Refuses.__new__(type(
            "Other", (_Refuses,), {"cache_key": "other"})))
