"""The evaluation harness on tiny inputs built here, with cases made to fail.

An untouched face ("none", the harness's do-nothing method) must be reported
as uncovered and fully re-identified; blur must cover it, lower the
re-identification and the judges' face retention. Seconds, not minutes: one
small composite, the dlib HOG judge only.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")
pytest.importorskip("matplotlib")

from photos import group_photo  # noqa: E402

from anonyface.evaluation import EvalConfig, evaluate, write_report  # noqa: E402
from anonyface.evaluation import metrics as M  # noqa: E402


def _has_torch_weights() -> bool:
    try:
        from anonyface.training.mobilenet import weights_path

        return weights_path().exists()
    except Exception:
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    photos = root / "photos"
    photos.mkdir()
    img, _ = group_photo(sizes=(130, 80), angles=(0, 0), width=640, seed=3)
    cv2.imwrite(str(photos / "two.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cfg = EvalConfig(
        inputs=[str(photos)], out_dir=root / "report", methods=("none", "blur", "no-such-method"),
        detectors=("hog",), fd=_has_torch_weights(), memory=False, video=False, quiet=True,
    )
    results = evaluate(cfg)
    summary = write_report(results, cfg.out_dir)
    return results, summary, cfg.out_dir


def test_untouched_faces_are_uncovered_and_reidentified(run):
    _, s, _ = run
    none = s["overall"]["none"]
    assert none["faces"] >= 2
    assert none["uncovered"] == none["faces"]
    assert none["reid_faces"] >= 1 and none["reid_pct"] == 100.0
    assert none["retained_pct"] == 100.0


def test_blur_covers_and_lowers_reid_and_retention(run):
    _, s, _ = run
    blur, none = s["overall"]["blur"], s["overall"]["none"]
    assert blur["faces"] == none["faces"]
    assert blur["uncovered"] == 0
    assert blur["reid_mean_distance"] > none["reid_mean_distance"] + 0.2
    assert blur["reid_pct"] < none["reid_pct"]
    assert blur["retained_pct"] < none["retained_pct"]
    if "blur" in s["fd"]:
        assert s["fd"]["blur"]["all"] > s["fd"]["none"]["all"]
    if none["pose_faces"]:
        assert none["pose_found_pct"] >= blur["pose_found_pct"]


def test_unknown_methods_are_reported_not_fatal(run):
    results, _, _ = run
    assert "no-such-method" in results["unavailable"]
    assert results["methods"] == ["none", "blur"]


def test_metadata_left_behind_is_caught(run):
    results, _, _ = run
    md = results["metadata"]
    assert "exif-gps" in md["inputs"][".jpg"] and "png-text" in md["inputs"][".png"]
    assert "exif-gps" in md["outputs"]["none"][".jpg"]
    assert md["outputs"]["blur"] == {".jpg": [], ".png": []}


def test_report_files(run):
    results, summary, out = run
    for f in ("report.md", "report.json", "faces.json", "peers.png", "reid.png", "contact_sheet.jpg"):
        assert (out / f).stat().st_size > 0, f
    doc = json.loads((out / "report.json").read_text())
    assert doc["summary"]["overall"]["blur"]["uncovered"] == 0
    md = (out / "report.md").read_text()
    assert "not comparable to published FID" in md.replace("**", "").replace("Not", "not")
    assert "| **blur** |" in md


def test_report_rewrites_from_raw(run):
    from anonyface.evaluation.cli import main

    _, summary, out = run
    (out / "report.md").unlink()
    assert main(["--from-raw", "-o", str(out)]) == 0
    assert (out / "report.md").exists()


def test_changed_share_rule():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    box = (20, 20, 80, 80)
    assert M.changed_share(a, a, box) == 0.0
    b = a.copy()
    b[35:65, 35:65] = 0  # the whole inner half
    assert M.changed_share(a, b, box) > 0.9
    c = np.clip(a.astype(int) + 5, 0, 255).astype(np.uint8)  # below the grey-level threshold
    assert M.is_unchanged(M.changed_share(a, c, box))


def _jpeg(a: np.ndarray, q: int = 95) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", a[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def test_dark_face_painted_in_the_dark_counts_covered_untouched_does_not():
    """The structure rule: in a dark scene a new face moves few pixels by 8 levels, yet it
    is covered; the same face untouched (JPEG round trip) stays uncovered."""
    from photos import ASTRONAUT_FACE, astronaut

    def dark(a: np.ndarray, gain: float = 0.01) -> np.ndarray:  # camera exposure, linear light
        return np.clip(255 * ((a / 255.0) ** 2.2 * gain) ** (1 / 2.2), 0, 255).astype(np.uint8)

    img = astronaut()
    box = ASTRONAUT_FACE
    orig = dark(img)
    other = img.copy()  # another face: eyes and mouth elsewhere (the face upside down in its box)
    x1, y1, x2, y2 = map(int, box)
    other[y1:y2, x1:x2] = other[y1:y2, x1:x2][::-1]
    painted = dark(other)
    share = M.changed_share(orig, painted, box)
    assert share < M.COVERED_SHARE  # the level rule alone would call it uncovered
    share, kept, unchanged = M.face_unchanged(orig, painted, box)
    assert kept is not None and kept < M.KEPT_NCC and not unchanged
    share, kept, unchanged = M.face_unchanged(orig, _jpeg(orig), box)
    assert kept is not None and kept > 0.9 and unchanged
    flat = np.full_like(img, 3)  # a black patch: nothing to judge but the level rule
    assert M.structure_kept(flat, flat, box) is None and M.face_unchanged(flat, flat, box)[2]


def test_cluster_merges_one_face_keeps_neighbours_apart():
    from anonyface.evaluation.detectors import Detection

    dets = {
        "hog": [Detection((100, 110, 180, 190), 1.0, "hog"), Detection((300, 100, 380, 180), 1.0, "hog")],
        "centerface": [Detection((98, 95, 182, 205), 0.9, "centerface")],
    }
    faces = M.cluster(dets)
    assert len(faces) == 2
    assert sorted(len(f.members) for f in faces) == [1, 2]


def test_val_split_selection_is_the_builders(tmp_path):
    from anonyface.evaluation.inputs import collect
    from anonyface.training.dataset import identity_of, split_of

    d = tmp_path / "utkface"
    d.mkdir()
    names = [f"{20 + i}_{i % 2}_{i % 5}_2017010{i % 10}000000000.jpg.chip.jpg" for i in range(60)]
    for n in names:
        (d / n).write_bytes(b"")
    got = collect([], val_inputs=[str(d)], val_fraction=0.2)
    want = [n for n in names if split_of(identity_of(f"utkface/{n}"), 0.2) == "val"]
    assert sorted(it.path.name for it in got.photos) == sorted(want)
    assert all(it.groups["gender"] in ("male", "female") for it in got.photos)
    again = collect([], val_inputs=[str(d)], val_fraction=0.2, sample=3, seed=1)
    assert [it.key for it in again.photos] == [it.key for it in collect([], val_inputs=[str(d)], val_fraction=0.2, sample=3, seed=1).photos]


def test_video_coverage_and_flicker(tmp_path):
    pytest.importorskip("anonyface.video")
    av = pytest.importorskip("av")
    from anonyface.detection import FaceDetector
    from anonyface.evaluation.detectors import HogDetector
    from anonyface.evaluation.harness import _make_method
    from anonyface.evaluation.identity import FaceEmbedder
    from anonyface.evaluation.video_eval import evaluate_videos

    img, _ = group_photo(sizes=(100,), angles=(0,), width=520, seed=2)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0] - img.shape[0] % 2, "yuv420p"
        for i in range(12):
            frame = np.roll(img, 3 * i, axis=1)[: s.height]
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    det = FaceDetector()
    methods = {m: _make_method(m, det, 0) for m in ("none", "blur")}
    res = evaluate_videos([path], methods, [HogDetector()], FaceEmbedder(), tmp_path, stride=4, log=lambda m: None)
    none, blur = res["clip.mp4"]["none"], res["clip.mp4"]["blur"]
    assert none["frames"] == blur["frames"] == 12
    assert none["faces"] > 0 and none["uncovered"] == none["faces"]
    assert blur["uncovered"] == 0
    assert abs(none["flicker"]["flicker_ratio"] - 1.0) < 0.05
    # seam and lighting of the tracked faces: the untouched clip is the reference
    assert none["seam"]["faces"] > 0 and abs(none["seam"]["median"] - 1.0) < 0.05
    assert none["lighting"]["luminance"]["error"] < 1.0
    assert blur["seam"]["median"] < 0.9  # blur smooths across the border


# -- issue 10: every face counted at the same place, seam, lighting, the face sheet ---------

class _Painter:
    """A stand-in method that paints each detected face in a way built to fail one measure."""

    def __init__(self, how: str) -> None:
        self.how = how

    def cover_faces(self, rgb, faces, identities=None):
        from anonyface.geometry import ERASE_SCALE, clip_box, expand_box

        out = rgb.copy()
        h, w = rgb.shape[:2]
        for f in faces:
            x1, y1, x2, y2 = clip_box(expand_box(f.box, ERASE_SCALE), w, h)
            if self.how == "flat":  # hard-pasted flat box over the erase area: a seam
                out[y1:y2, x1:x2] = (40, 200, 40)
            elif self.how == "bright":  # the face lit far brighter than its scene
                fx1, fy1, fx2, fy2 = clip_box(f.box, w, h)
                out[fy1:fy2, fx1:fx2] = np.clip(rgb[fy1:fy2, fx1:fx2].astype(int) + 70, 0, 255)
            elif self.how == "keep":  # the face left as it was, 3 levels brighter: a miss
                fx1, fy1, fx2, fy2 = clip_box(f.box, w, h)
                out[fy1:fy2, fx1:fx2] = np.clip(rgb[fy1:fy2, fx1:fx2].astype(int) + 3, 0, 255)
            elif self.how == "beside":  # the face erased, and a face painted 0.7 widths to its right
                gx1, gy1, gx2, gy2 = clip_box(expand_box(f.box, 1.6), w, h)
                head = rgb[gy1:gy2, gx1:gx2].copy()
                out[gy1:gy2, gx1:gx2] = rgb[gy1:gy2, gx1:gx2].reshape(-1, 3).mean(axis=0).astype(np.uint8)
                dx = int(round(0.7 * f.width))
                tx2 = min(w, gx2 + dx)
                out[gy1:gy2, gx1 + dx:tx2] = head[:, : tx2 - gx1 - dx]
        return out


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    from anonyface.evaluation import harness

    root = tmp_path_factory.mktemp("scene")
    photos = root / "photos"
    photos.mkdir()
    img, _ = group_photo(sizes=(130, 80), angles=(0, 0), width=900, seed=3)
    cv2.imwrite(str(photos / "two.png"), img[..., ::-1])
    cfg = EvalConfig(
        inputs=[str(photos)], out_dir=root / "report", methods=("none", "flat", "bright", "beside", "keep"),
        detectors=("hog",), fd=False, pose=False, memory=False, metadata=False, video=False, quiet=True,
        sheet_faces=2,
    )
    make = harness._make_method
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "_make_method", lambda name, det, seed: make(name, det, seed) if name == "none" else _Painter(name))
        results = evaluate(cfg)
    summary = write_report(results, cfg.out_dir)
    return results, summary, cfg.out_dir


def test_retention_rule_needs_the_same_place():
    box = (100.0, 100.0, 200.0, 200.0)
    assert M.retained_at(box, [(103.0, 98.0, 205.0, 201.0)])
    beside = (145.0, 100.0, 245.0, 200.0)  # 0.45 widths to the right: IoU 0.38
    assert not M.retained_at(box, [beside])
    assert M.found_at(box, [beside])  # the old centre rule took it for the same face
    assert [M.size_band(x) for x in (8, 16, 23.9, 24, 60, 96, 400)] == ["<16", "16-24", "16-24", "24-48", "48-96", ">=96", ">=96"]


def test_a_face_painted_beside_is_not_retained(scene_run):
    _, s, _ = scene_run
    none, beside = s["overall"]["none"], s["overall"]["beside"]
    assert none["faces"] >= 2 and none["retained_pct"] == 100.0
    assert beside["retained_pct"] == 0.0
    bands = none["retained_by_band"]
    assert sum(b["faces"] for b in bands.values()) == none["faces"]
    assert bands[">=96"]["faces"] >= 1 and bands["48-96"]["faces"] >= 1


def test_a_face_left_as_it_was_is_uncovered_and_shown(scene_run):
    results, s, out = scene_run
    keep, flat = s["overall"]["keep"], s["overall"]["flat"]
    assert keep["faces"] >= 2 and keep["uncovered"] == keep["faces"] and flat["uncovered"] == 0
    faces = [f for f in results["results"]["keep"]["faces"]]
    assert all(f["unchanged"]["hog"] and f["kept"]["hog"] > 0.95 for f in faces)  # the structure survived
    assert (out / "misses.jpg").stat().st_size > 0


def test_seam_score_flags_a_hard_pasted_box(scene_run):
    _, s, _ = scene_run
    none, flat = s["overall"]["none"]["seam"], s["overall"]["flat"]["seam"]
    assert none["faces"] >= 2 and abs(none["median"] - 1.0) < 0.05  # untouched: as smooth as the photo
    assert flat["median"] > 2.0 and flat["over_1_5_pct"] == 100.0  # issue 10's bar: within 1.5× of the photo


def test_lighting_error_flags_a_brightened_face(scene_run):
    _, s, _ = scene_run
    none, bright = s["overall"]["none"]["lighting"], s["overall"]["bright"]["lighting"]
    assert none["faces"] >= 2 and none["luminance"]["error"] < 1.0
    assert bright["luminance"]["error"] > 40.0
    assert bright["luminance"]["offset_out"] > bright["luminance"]["offset_real"] + 40.0
    assert bright["luminance"]["outside_pct"] == 100.0


def test_scene_report_and_face_sheet(scene_run):
    results, _, out = scene_run
    sheet = cv2.imread(str(out / "face_sheet.jpg"))
    assert sheet is not None and len(results["_largest"]) == 2
    widths = [e["width"] for e in results["_largest"]]
    assert widths == sorted(widths, reverse=True)
    big = results["_largest"][0]
    assert set(big["crops"]) == {"original", "none", "flat", "bright", "beside", "keep"}
    assert big["crops"]["original"].shape[0] >= 1.6 * big["width"]  # at 100 %: not shrunk
    md = (out / "report.md").read_text()
    assert "belong in the picture" in md and "| **flat** |" in md and "face_sheet.jpg" in md
    assert "| **beside** |" in (out / "readme_section.md").read_text()


def test_seam_and_lighting_functions():
    from anonyface.evaluation import scene

    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), (0, 0), 3)
    box = (70.0, 70.0, 130.0, 130.0)
    assert scene.seam_score(img, img, box) == pytest.approx(1.0)
    pasted = img.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in scene.erase_rect(box))
    pasted[y1:y2, x1:x2] = 255
    assert scene.seam_score(img, pasted, box) > 10
    assert scene.seam_energy(img, (0.0, 0.0, 190.0, 199.0)) is None  # no edge with room for both bands
    f = scene.SceneFace(img, box)
    lit = img.copy()
    lit[70:130, 70:130] = np.clip(img[70:130, 70:130].astype(int) + 30, 0, 255)
    rec = f.measure(lit)
    assert rec["lighting"]["luminance"]["out"] - rec["lighting"]["luminance"]["real"] == pytest.approx(30, abs=1.5)
    assert abs(rec["lighting"]["contrast"]["out"] - rec["lighting"]["contrast"]["real"]) < 1.5
