"""Tracking on synthetic detections: ids, smoothing, holding missed faces."""

from __future__ import annotations

import numpy as np
import pytest

from anonyface.detection import Face
from anonyface.geometry import box_iou
from anonyface.tracking import FaceTracker, Lookback, OneEuroFilter, TrackedFace

FPS = 25.0


def face(cx, cy, size=80.0, score=0.9):
    h = size * 1.25
    box = (cx - size / 2, cy - h / 2, cx + size / 2, cy + h / 2)
    lm = np.array([[cx - size * 0.2, cy - h * 0.1], [cx + size * 0.2, cy - h * 0.1], [cx, cy + h * 0.05],
                   [cx - size * 0.15, cy + h * 0.25], [cx + size * 0.15, cy + h * 0.25]], np.float32)
    return Face(box, lm, score)


def contains(outer, inner_box, slack=0.0):
    return (outer[0] <= inner_box[0] + slack and outer[1] <= inner_box[1] + slack
            and outer[2] >= inner_box[2] - slack and outer[3] >= inner_box[3] - slack)


def test_dropped_frames_stay_covered():
    tr = FaceTracker(max_missed=3)
    truth = [face(100 + 4 * i, 120) for i in range(30)]
    ids = set()
    for i, f in enumerate(truth):
        dets = [] if i in (10, 11, 12, 20) else [f]  # detector misses these frames
        out = tr.update(i / FPS, dets)
        assert len(out) == 1, f"frame {i}: face not covered"
        ids.add(out[0].track_id)
        # The held box (moved on with the face's velocity, grown) still holds the face.
        assert box_iou(out[0].face.box, f.box) > 0.6 or contains(out[0].face.box, f.box, slack=4)
        assert out[0].detected == (i not in (10, 11, 12, 20))
    assert ids == {0}


def test_track_dropped_after_max_missed():
    tr = FaceTracker(max_missed=2)
    tr.update(0.0, [face(100, 100)])
    assert len(tr.update(0.04, [])) == 1
    assert len(tr.update(0.08, [])) == 1
    assert tr.update(0.12, []) == []


def test_between_detection_frames_predicted():
    tr = FaceTracker()
    for i in range(0, 20, 2):  # detector on every second frame
        f = face(100 + 6 * i, 120)
        tr.update(i / FPS, [f])
        out = tr.update((i + 1) / FPS, None)
        want = face(100 + 6 * (i + 1), 120).box
        assert len(out) == 1 and (box_iou(out[0].face.box, want) > 0.75 or contains(out[0].face.box, want, 2))


def test_jitter_is_smoothed():
    rng = np.random.default_rng(0)
    tr = FaceTracker()
    raw, smooth = [], []
    for i in range(100):
        f = face(200 + rng.normal(0, 3), 150 + rng.normal(0, 3), 80 + rng.normal(0, 3))
        out = tr.update(i / FPS, [f])
        raw.append(f.box)
        smooth.append(out[0].face.box)
    raw, smooth = np.array(raw[10:]), np.array(smooth[10:])
    # Frame-to-frame motion of the box edges: what the viewer sees as jitter.
    assert np.diff(smooth, axis=0).std() < 0.5 * np.diff(raw, axis=0).std()
    # And the smoothed box never leaves the face (lag tolerance).
    for r, s in zip(raw, smooth):
        assert contains(s, r, slack=0.08 * 80 + 1)


def test_moving_face_does_not_lag_out_of_the_cover():
    tr = FaceTracker()
    for i in range(40):
        f = face(50 + 15 * i, 120)  # 375 px/s
        out = tr.update(i / FPS, [f])
        s = out[0].face.box
        assert contains(s, f.box, slack=0.08 * 100 + 1)


def test_crossing_faces_keep_their_ids():
    tr = FaceTracker()
    first = None
    for i in range(40):
        a = face(50 + 10 * i, 120, 60)  # left to right
        b = face(450 - 10 * i, 130, 60)  # right to left, crossing at i = 20
        out = tr.update(i / FPS, [a, b][:: (1 if i % 3 else -1)])  # detector order varies
        by_id = {o.track_id: o.face.box for o in out}
        if first is None:
            ida = min(by_id, key=lambda k: by_id[k][0])
            idb = max(by_id, key=lambda k: by_id[k][0])
            first = (ida, idb)
        ida, idb = first
        if abs(i - 20) > 2:  # when they overlap, either box covers both
            assert box_iou(by_id[ida], a.box) > 0.5, f"frame {i}: id of face A changed"
            assert box_iou(by_id[idb], b.box) > 0.5, f"frame {i}: id of face B changed"
    assert tr.next_id == 2


def test_small_tracks_not_missed_by_coarse_pass():
    tr = FaceTracker(max_missed=1)
    tr.update(0.0, [face(100, 100, 20)])
    for k in range(1, 6):
        out = tr.update(k / FPS, [], min_size=40)  # that pass could not see 20 px faces
        assert len(out) == 1


def test_lookback_covers_frames_before_first_detection():
    tr = FaceTracker()
    look = Lookback(depth=3)
    done = []
    for i in range(8):
        out = tr.update(i / FPS, [face(100, 100)] if i >= 5 else [])
        done += look.push(i, out, tr.new_ids)
    done += look.flush()
    covered = {item: len(faces) for item, faces in done}
    assert [item for item, _ in done] == list(range(8))
    assert covered == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}


def test_one_euro_converges_on_steps():
    f = OneEuroFilter(min_cutoff=1.0, beta=1.5)
    x = None
    for i in range(60):
        x = f(np.array([100.0]), i / FPS, scale=80)
    assert x[0] == pytest.approx(100.0)
    for i in range(60, 120):
        x = f(np.array([200.0]), i / FPS, scale=80)
    assert x[0] == pytest.approx(200.0, abs=0.5)


def test_duplicate_box_on_a_tracked_face_makes_no_new_track():
    tr = FaceTracker()
    tr.update(0.0, [face(100, 100, 80)])
    out = tr.update(0.04, [face(100, 100, 80), face(108, 106, 70, score=0.4)])
    assert [o.track_id for o in out] == [0] and tr.next_id == 1


def test_faces_covered_without_a_detection_are_marked_unconfirmed():
    """Held and look-back faces carry a score below every painting threshold: synth
    blurs them instead of painting a face that could land beside the real one."""
    from anonyface.tracking import UNCONFIRMED

    tr = FaceTracker(max_missed=3)
    assert tr.update(0.0, [face(100, 100)])[0].face.score == pytest.approx(0.9)
    held = tr.update(0.04, [])
    assert len(held) == 1 and held[0].face.score == UNCONFIRMED
    look = Lookback(depth=2)
    look.push("a", [])
    out = look.push("b", [TrackedFace(7, face(50, 50), True)], new_ids=[7])
    out += look.flush()
    first = dict(out)["a"]
    assert len(first) == 1 and first[0].face.score == UNCONFIRMED


def test_cut_detector_finds_cuts_not_motion():
    from anonyface.tracking import CutDetector

    import photos

    a = photos.background(320, 180, seed=1)
    b = photos.background(320, 180, seed=9)
    cuts = CutDetector()
    seen = [cuts(np.roll(a, 3 * i, axis=1)) for i in range(5)]  # a camera pan: one shot
    seen.append(cuts(b))  # a different scene
    seen.append(cuts(np.roll(b, 2, axis=0)))
    assert seen == [False] * 5 + [True, False]


def test_lookback_stops_at_a_cut():
    """A face first detected just after a cut is not carried back into the shot before."""
    look = Lookback(depth=4)
    out = []
    for name in "abc":
        out += look.push(name, [])
    out += look.push("d", [], cut=True)  # first frame of the new shot
    out += look.push("e", [TrackedFace(1, face(50, 50), True)], new_ids=[1])
    out += look.flush()
    faces = {k: [tf.track_id for tf in v] for k, v in out}
    assert faces == {"a": [], "b": [], "c": [], "d": [1], "e": [1]}
