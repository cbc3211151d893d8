"""Consent (--keep) and given boxes (--boxes): real faces through the real pipeline.

Faces: the astronaut of the bundled sample (src/anonyface/samples/group.jpg, made
from scikit-image's public-domain photo) and Grace Hopper (US Navy photo, public
domain; shipped with matplotlib as sample data). Tests that need face
recognition skip without dlib; those that need LFW skip without ../shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos
from conftest import SHARED

from anonyface import Anonymizer
from anonyface.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "anonyface" / "samples" / "group.jpg"
W, H = 640, 360
ASTRO_AT, HOPPER_AT, FACE_W = (170.0, 185.0), (470.0, 185.0), 110.0
# Grace Hopper's face box in matplotlib's photo (RetinaFace), and a head cut around it.
HOPPER_FACE = (174.0, 112.0, 352.0, 329.0)
HOPPER_CUT = (90, 20, 440, 430)


def needs_dlib():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))


def paste_hopper(canvas: np.ndarray, hopper: np.ndarray, center, face_w: float) -> tuple:
    """Paste Grace Hopper's head so her face box is `face_w` wide at `center`; her face box."""
    x1, y1, x2, y2 = HOPPER_CUT
    s = face_w / (HOPPER_FACE[2] - HOPPER_FACE[0])
    cut = Image.fromarray(hopper[y1:y2, x1:x2]).resize((round((x2 - x1) * s), round((y2 - y1) * s)), Image.LANCZOS)
    fcx, fcy = ((HOPPER_FACE[0] + HOPPER_FACE[2]) / 2 - x1) * s, ((HOPPER_FACE[1] + HOPPER_FACE[3]) / 2 - y1) * s
    ox, oy = round(center[0] - fcx), round(center[1] - fcy)
    arr = np.asarray(cut)
    h, w = arr.shape[:2]
    cx1, cy1, cx2, cy2 = max(0, ox), max(0, oy), min(canvas.shape[1], ox + w), min(canvas.shape[0], oy + h)
    canvas[cy1:cy2, cx1:cx2] = arr[cy1 - oy:cy2 - oy, cx1 - ox:cx2 - ox]
    fw, fh = face_w, (HOPPER_FACE[3] - HOPPER_FACE[1]) * s
    return (center[0] - fw / 2, center[1] - fh / 2, center[0] + fw / 2, center[1] + fh / 2)


def two_people(hopper: np.ndarray, dx: float = 0.0, seed: int = 0, astronaut: bool = True, hopper_at=HOPPER_AT):
    """The astronaut on the left, Grace Hopper on the right: (image, astronaut box, Hopper box)."""
    img = photos.background(W, H, seed)
    a = photos.paste_head(img, (ASTRO_AT[0] + dx, ASTRO_AT[1]), FACE_W).box if astronaut else None
    h = paste_hopper(img, hopper, (hopper_at[0] + dx, hopper_at[1]), FACE_W) if hopper_at is not None else None
    return img, a, h


@pytest.fixture(scope="module")
def refs(tmp_path_factory, hopper) -> dict[str, Path]:
    """Reference photos: a crop of the sample's largest astronaut face, and Hopper's photo."""
    d = tmp_path_factory.mktemp("refs")
    group = np.asarray(Image.open(SAMPLE).convert("RGB"))
    Image.fromarray(group[90:380, 120:350]).save(d / "astronaut.png")
    Image.fromarray(hopper).save(d / "hopper.jpg", quality=95)
    Image.fromarray(photos.background(300, 300, 5)).save(d / "noface.png")
    return {"astronaut": d / "astronaut.png", "hopper": d / "hopper.jpg", "noface": d / "noface.png", "dir": d}


def region(box, grow: float = 1.0):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * grow / 2, (box[3] - box[1]) * grow / 2
    return slice(max(0, int(cy - hh)), int(cy + hh)), slice(max(0, int(cx - hw)), int(cx + hw))


def changed(a: np.ndarray, b: np.ndarray, box) -> float:
    ys, xs = region(box, 0.6)
    return float(np.abs(a[ys, xs].astype(np.float32) - b[ys, xs].astype(np.float32)).mean())


def untouched(a: np.ndarray, b: np.ndarray, box) -> bool:
    ys, xs = region(box, 1.0)
    return bool(np.array_equal(a[ys, xs], b[ys, xs]))


# -- photos --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["blur", "synth"])
def test_consenting_face_kept_pixel_for_pixel_the_other_covered(method, refs, hopper):
    needs_dlib()
    img, astro, hop = two_people(hopper)
    anon = Anonymizer(method=method, seed=0, keep=[refs["astronaut"]])
    c = anon.cover(img)
    assert untouched(img, c.image, astro), "the consenting face changed"
    assert changed(img, c.image, hop) > 10, "the stranger was left"
    assert len(c.kept) == 1 and abs(c.kept[0].face.box[0] - astro[0]) < 30 and c.kept[0].distance < anon.consent.threshold and c.kept[0].reference == str(refs["astronaut"])
    assert len(c.faces) == 1 and c.caught == []  # the audit sees the kept face and leaves it


def test_the_other_reference_keeps_the_other_person(refs, hopper):
    needs_dlib()
    img, astro, hop = two_people(hopper)
    out = Anonymizer(method="pixelate", keep=[refs["hopper"]]).anonymize(img)
    assert untouched(img, out, hop)
    assert changed(img, out, astro) > 10


def test_stranger_reference_keeps_nothing(refs):
    """Grace Hopper as the reference: every astronaut in the sample is covered."""
    needs_dlib()
    group = np.asarray(Image.open(SAMPLE).convert("RGB"))
    anon = Anonymizer(method="blur", keep=[refs["hopper"]])
    c = anon.cover(group)
    assert c.kept == [] and len(c.faces) == 6
    for f in c.faces:
        assert changed(group, c.image, f.box) > 3, f"face at {f.box} left"


def test_one_person_twice_in_a_picture_is_covered(refs):
    """The sample shows the astronaut six times: each copy is as close to the reference as the
    others (no clear match), so none is kept; the three under 60 px are never embedded."""
    needs_dlib()
    group = np.asarray(Image.open(SAMPLE).convert("RGB"))
    anon = Anonymizer(method="blur", keep=[refs["astronaut"]])
    faces = anon.detect(group)
    decisions = anon.consent.decide(group, faces)
    assert not any(d.kept for d in decisions)
    embedded = [d for d in decisions if d.distance is not None]
    assert len(embedded) == 3 and all(d.distance < anon.consent.threshold for d in embedded)
    assert all("nearly as close" in d.why for d in embedded)
    assert all("too small" in d.why for d in decisions if d.distance is None)
    out = anon.anonymize(group)
    for f in faces:
        assert changed(group, out, f.box) > 3


def test_look_alike_just_over_the_threshold_is_covered(refs, hopper):
    """The same face at a distance just over the threshold is covered, just under it kept: the
    boundary is where the threshold says, whoever the face is."""
    needs_dlib()
    img, astro, hop = two_people(hopper)
    probe = Anonymizer(method="blur", keep=[refs["hopper"]])
    d = next(x.distance for x in probe.consent.decide(img, probe.detect(img)) if x.kept)
    over = Anonymizer(method="blur", keep=[refs["hopper"]], keep_threshold=d - 0.002).anonymize(img)
    under = Anonymizer(method="blur", keep=[refs["hopper"]], keep_threshold=d + 0.002).anonymize(img)
    assert changed(img, over, hop) > 10
    assert untouched(img, under, hop)


def test_closest_lfw_stranger_is_covered(tmp_path):
    """Among 40 LFW people, the stranger closest to another's reference (a look-alike near
    the margin) is covered by the whole pipeline."""
    needs_dlib()
    lfw = SHARED / "data" / "train" / "lfw"
    if not lfw.is_dir():
        pytest.skip("../shared/data/train/lfw is not present")
    from anonyface.consent import FaceRecognizer

    anon = Anonymizer(method="blur", audit=False)
    rec = FaceRecognizer()
    people = sorted({p.stem.rsplit("_", 1)[0]: p for p in sorted(lfw.glob("*_0001.jpg"))}.values())[:400:10]
    embs = []
    for p in people:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        face = max(anon.detect(rgb), key=lambda f: f.width)
        embs.append(rec.embed(rgb, face)[0])
    ok = [i for i, e in enumerate(embs) if e is not None]
    best = min(((float(np.linalg.norm(embs[i] - embs[j])), i, j) for i in ok for j in ok if i < j))
    d, i, j = best
    assert d < 0.6, "not a look-alike: dlib's usual 'same person' threshold would cover it too"
    keeper = Anonymizer(method="blur", keep=[people[i]])
    rgb = np.asarray(Image.open(people[j]).convert("RGB"))
    c = keeper.cover(rgb)
    assert c.kept == [], f"{people[j].name} kept as {people[i].name} at {d:.3f}"


def test_reference_errors(refs, hopper, tmp_path):
    needs_dlib()
    from anonyface.consent import ReferenceError

    img, _, _ = two_people(hopper)
    Image.fromarray(img).save(tmp_path / "two.png")
    small = np.asarray(Image.open(refs["hopper"]).resize((60, 70)))
    Image.fromarray(small).save(tmp_path / "small.png")
    for path, text in ((refs["noface"], "no face found"), (tmp_path / "two.png", "2 faces"), (tmp_path / "small.png", "px wide")):
        with pytest.raises(ReferenceError, match=text) as e:
            Anonymizer(method="blur", keep=[path])
        assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="unsafe"):
        Anonymizer(method="blur", keep=[refs["hopper"]], keep_threshold=0.7)


def test_missing_recognizer_fails_before_writing(refs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if anonyface[keep] were not installed
    out = tmp_path / "out.jpg"
    rc = main([str(SAMPLE), "-o", str(out), "--keep", str(refs["astronaut"]), "-q"])
    assert rc == 2 and not out.exists()
    assert 'pip install "anonyface[keep]"' in capsys.readouterr().err


def test_cli_keep_dir_and_json_lists_kept_faces(refs, hopper, tmp_path):
    needs_dlib()
    img, astro, hop = two_people(hopper)
    Image.fromarray(img).save(tmp_path / "in.png")
    kd = tmp_path / "consented"
    kd.mkdir()
    Image.open(refs["astronaut"]).save(kd / "a.png")
    rc = main([str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--keep-dir", str(kd), "-m", "blur", "--json", str(tmp_path / "f.json"), "-q"])
    assert rc == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert untouched(img, out, astro) and changed(img, out, hop) > 10
    doc = json.loads((tmp_path / "f.json").read_text())
    kept = doc["files"][0]["kept"]
    assert len(kept) == 1 and kept[0]["reference"] == str(kd / "a.png") and 0 <= kept[0]["distance"] < doc["keep"]["threshold"]
    assert len(doc["files"][0]["faces"]) == 1


def test_cli_bad_references_write_nothing(refs, tmp_path, capsys):
    needs_dlib()
    out = tmp_path / "out.jpg"
    assert main([str(SAMPLE), "-o", str(out), "--keep", str(refs["noface"]), "-q"]) == 2
    assert "no face found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(SAMPLE), "-o", str(out), "--keep", str(tmp_path / "missing.jpg")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main([str(SAMPLE), "-o", str(out), "--keep-dir", str(empty)])
    with pytest.raises(SystemExit):
        main([str(SAMPLE), "-o", str(out), "--keep", str(refs["hopper"]), "--keep-threshold", "0.8"])
    assert not out.exists()


# -- given boxes ---------------------------------------------------------------------


def test_boxes_add_covers_ours_and_the_files(tmp_path):
    """A box on a spot with no face is covered too; a box on a face we found is not a second face."""
    group = np.asarray(Image.open(SAMPLE).convert("RGB"))
    anon = Anonymizer(method="blur", audit=False)
    ours = anon.detect(group)
    extra = (600.0, 450.0, 700.0, 560.0)
    c = anon.cover(group, boxes=[extra, ours[0].box], boxes_mode="add")
    assert len(c.faces) == len(ours) + 1
    for f in ours:
        assert changed(group, c.image, f.box) > 3
    assert changed(group, c.image, extra) > 3
    alone = anon.anonymize(group)
    ys, xs = region(extra, 1.5)
    assert np.array_equal(alone[ys, xs], group[ys, xs])  # without the box that spot is left


def test_boxes_only_covers_just_the_files_unless_the_audit_sees_more(hopper):
    img, astro, hop = two_people(hopper)
    given = [{"box": list(hop)}]
    out = Anonymizer(method="blur", audit=False).anonymize(img, boxes=given, boxes_mode="only")
    assert untouched(img, out, astro) and changed(img, out, hop) > 10
    c = Anonymizer(method="blur").cover(img, boxes=given, boxes_mode="only")
    assert len(c.caught) == 1 and changed(img, c.image, astro) > 5  # the audit still covers what the file missed


def test_cli_boxes_round_trip_and_modes(tmp_path):
    src = tmp_path / "group.jpg"
    src.write_bytes(SAMPLE.read_bytes())
    assert main([str(src), "-o", str(tmp_path / "a.jpg"), "-m", "solid", "--json", str(tmp_path / "f.json"), "-q"]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    n = len(doc["files"][0]["faces"])
    # only: exactly the file's faces (our own --json fed back), the same covering
    assert main([str(src), "-o", str(tmp_path / "b.jpg"), "-m", "solid", "--boxes", str(tmp_path / "f.json"), "--boxes-mode", "only",
                 "--no-audit", "--json", str(tmp_path / "g.json"), "-q"]) == 0
    assert len(json.loads((tmp_path / "g.json").read_text())["files"][0]["faces"]) == n
    a, b = (np.asarray(Image.open(tmp_path / f"{x}.jpg")).astype(np.int16) for x in "ab")
    assert np.abs(a - b).mean() < 1.0
    # only, with one face dropped from the file: that face is left (no audit)
    doc["files"][0]["faces"] = doc["files"][0]["faces"][1:]
    (tmp_path / "h.json").write_text(json.dumps(doc))
    assert main([str(src), "-o", str(tmp_path / "c.jpg"), "-m", "solid", "--boxes", str(tmp_path / "h.json"), "--boxes-mode", "only", "--no-audit", "-q"]) == 0
    first = json.loads((tmp_path / "f.json").read_text())["files"][0]["faces"][0]["box"]
    orig = np.asarray(Image.open(src)).astype(np.int16)
    c = np.asarray(Image.open(tmp_path / "c.jpg")).astype(np.int16)
    assert changed(orig, c, first) < 3 and changed(orig, a, first) > 20
    # add (the default), with the same file: our detector still finds the face the file omits
    assert main([str(src), "-o", str(tmp_path / "d.jpg"), "-m", "solid", "--boxes", str(tmp_path / "h.json"), "-q"]) == 0
    d = np.asarray(Image.open(tmp_path / "d.jpg")).astype(np.int16)
    assert changed(orig, d, first) > 20


@pytest.mark.parametrize("content,text", [
    ("not json", "not JSON"),
    ('{"faces": []}', "schema --json writes"),
    ('{"files": [{"file": "group.jpg", "faces": [{"box": [10, 10, 5, 50]}]}]}', "empty"),
    ('{"files": [{"file": "group.jpg", "faces": [{"box": [1, 2, "x", 4]}]}]}', "finite number"),
    ('{"files": [{"file": "group.jpg", "faces": [{"box": [1, 2, 30, 40], "landmarks": [[1, 2]]}]}]}', "five"),
    ('{"files": [{"file": "other.jpg", "faces": []}, {"file": "x.jpg", "faces": []}]}', "lists no faces for"),
])
def test_cli_bad_boxes_file_fails_naming_it(content, text, tmp_path, capsys):
    src = tmp_path / "group.jpg"
    src.write_bytes(SAMPLE.read_bytes())
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(SystemExit) as e:
        main([str(src), "-o", str(tmp_path / "out.jpg"), "--boxes", str(bad), "--boxes-mode", "only"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and text in err
    assert not (tmp_path / "out.jpg").exists()


def test_boxes_outside_the_image_fail_the_file(tmp_path, capsys):
    src = tmp_path / "group.jpg"
    src.write_bytes(SAMPLE.read_bytes())
    (tmp_path / "b.json").write_text(json.dumps({"files": [{"file": str(src), "faces": [{"box": [5000, 10, 5100, 90]}]}]}))
    assert main([str(src), "-o", str(tmp_path / "out.jpg"), "--boxes", str(tmp_path / "b.json"), "-q"]) == 1
    assert "outside the 1200×720 image" in capsys.readouterr().err
    assert not (tmp_path / "out.jpg").exists()


# -- video ----------------------------------------------------------------------------


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    from test_privacy import write_frames

    write_frames(path, frames)


def run_video(anon, src: Path, dst: Path):
    from anonyface.video import VideoOptions, process_video

    seen = []
    stats = process_video(anon, src, dst, VideoOptions(progress=False, detect_every=2, lookback=8),
                          on_frame=lambda orig, cov, tracked, t: seen.append((orig, cov)))
    return stats, seen


def test_video_kept_track_shown_from_its_first_frame_stranger_never(refs, hopper, tmp_path):
    needs_dlib()
    pytest.importorskip("av")
    n = 16
    clip = [two_people(hopper, dx=2.0 * i) for i in range(n)]
    write_clip(tmp_path / "in.mov", [c[0] for c in clip])
    anon = Anonymizer(method="solid", keep=[refs["astronaut"]])
    stats, seen = run_video(anon, tmp_path / "in.mov", tmp_path / "out.mp4")
    assert len(seen) == n
    shown = [untouched(orig, cov, clip[i][1]) for i, (orig, cov) in enumerate(seen)]
    for i, (orig, cov) in enumerate(seen):
        assert changed(orig, cov, clip[i][2]) > 30, f"frame {i}: the stranger is visible"
    assert shown[0], "the consenting face is not shown from its first frame"
    assert sum(shown) >= n - 2  # frames after the last detection wait for one: at most the last is covered
    assert len(stats.kept) == 1 and stats.kept[0]["reference"] == str(refs["astronaut"]) and stats.kept[0]["frames_shown"] == sum(shown)


def test_video_swap_in_place_never_shows_the_stranger(refs, hopper, tmp_path):
    """The consenting astronaut for 9 frames, then, at the same place and between two detection
    frames, Grace Hopper: the tracker keeps the track, consent must not."""
    needs_dlib()
    pytest.importorskip("av")
    frames, boxes, who = [], [], []
    for i in range(18):
        if i < 9:
            img, box, _ = two_people(hopper, hopper_at=None)
        else:
            img = photos.background(W, H, 0)
            box = paste_hopper(img, hopper, ASTRO_AT, FACE_W)
        frames.append(img)
        boxes.append(box)
        who.append("astronaut" if i < 9 else "hopper")
    write_clip(tmp_path / "in.mov", frames)
    anon = Anonymizer(method="solid", keep=[refs["astronaut"]])
    _, seen = run_video(anon, tmp_path / "in.mov", tmp_path / "out.mp4")
    for i, (orig, cov) in enumerate(seen):
        if who[i] == "hopper":
            assert changed(orig, cov, boxes[i]) > 30, f"frame {i}: the stranger is visible"
    assert sum(untouched(o, c, boxes[i]) for i, (o, c) in enumerate(seen) if who[i] == "astronaut") >= 6


def test_video_with_boxes_is_refused(tmp_path, capsys):
    pytest.importorskip("av")
    from test_privacy import write_frames

    write_frames(tmp_path / "in.mov", [photos.background(64, 48, i) for i in range(3)])
    (tmp_path / "b.json").write_text('{"files": []}')
    assert main([str(tmp_path / "in.mov"), "-o", str(tmp_path / "out.mp4"), "--boxes", str(tmp_path / "b.json"), "-q"]) == 1
    assert "--boxes works on photos only" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_keep_boxes_chosen_by_hand_kept_and_not_re_covered_by_the_audit(hopper):
    """What a web page's click does: no recognizer, the chosen face is left, the audit agrees."""
    img, astro, hop = two_people(hopper)
    anon = Anonymizer(method="blur")
    c = anon.cover(img, keep_boxes=[hop])
    assert untouched(img, c.image, hop) and changed(img, c.image, astro) > 10
    assert len(c.kept) == 1 and c.kept[0].reference == "chosen by hand" and c.caught == []
    far = anon.cover(img, keep_boxes=[(0.0, 0.0, 40.0, 40.0)])  # pointing at no face keeps nothing
    assert far.kept == [] and changed(img, far.image, hop) > 10
