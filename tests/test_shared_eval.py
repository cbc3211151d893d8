"""The real evaluation photos in ../shared (skipped when absent)."""

import numpy as np
from PIL import Image

from anonyface.media import read_image


def test_faces_found_and_covered_on_every_eval_photo(anonymizer, shared_eval, tmp_path):
    photos = sorted(shared_eval.glob("*.jpg"))
    assert photos
    total = 0
    for p in photos:
        res = anonymizer.process_file(p, tmp_path / p.name)
        assert res.faces, f"no face found in {p.name}"
        total += len(res.faces)
        src = read_image(p).rgb
        out = np.asarray(Image.open(tmp_path / p.name).convert("RGB"))
        for f in res.faces:
            x1, y1, x2, y2 = (int(v) for v in f.box)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            r = max(1, (x2 - x1) // 6)
            patch = np.abs(out[cy - r : cy + r + 1, cx - r : cx + r + 1].astype(int) - src[cy - r : cy + r + 1, cx - r : cx + r + 1])
            assert patch.mean() > 0, f"face at {f.box} in {p.name} unchanged"
    assert total > 100  # the crowd photos hold hundreds of faces


def test_dark_frames_are_also_searched_brightened(detector, shared_eval):
    """interview.mp4's audience sits in the dark: the brightened look finds faces the
    plain one misses, and loses none of them."""
    import av

    from anonyface.detection import FaceDetector
    from anonyface.geometry import box_iou

    with av.open(str(shared_eval / "interview.mp4")) as c:
        frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 80).to_ndarray(format="rgb24")
    plain = FaceDetector(brighten_dark=False).detect(frame)
    both = detector.detect(frame)
    assert len(both) >= len(plain) + 3
    assert all(any(box_iou(p.box, b.box) > 0.5 for b in both) for p in plain)
