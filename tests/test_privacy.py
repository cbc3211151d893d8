"""The privacy guarantee of synth, end to end: with the detections held fixed, changing
any original pixel inside a face's erase area changes no output value, for photos and
for video. Nothing of the original face reaches the generator, the blending boundary
or the output."""

from __future__ import annotations

import numpy as np
import pytest

from anonyface import Anonymizer
from anonyface.detection import Face
from anonyface.geometry import erase_area


class FixedDetector:
    """Holds the detections fixed: the same faces for every image, whatever its pixels."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, image: np.ndarray) -> list[Face]:
        return list(self.faces)


def scramble_faces(image: np.ndarray, faces: list[Face], seed: int = 0) -> np.ndarray:
    """`image` with every pixel inside every face's erase area replaced by noise."""
    out = image.copy()
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    for f in faces:
        x1, y1, x2, y2 = erase_area(f.box, w, h)
        out[y1:y2, x1:x2] = rng.integers(0, 256, (y2 - y1, x2 - x1, 3), dtype=np.uint8)
    return out


def write_frames(path, frames: list[np.ndarray]) -> None:
    """RGB frames as PNG-coded video (.mov): decoded exactly as written (no chroma
    subsampling mixing pixels across the erase areas' borders)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("png", rate=10)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "rgb24"
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))


def paintable(anon: Anonymizer, faces: list[Face]) -> list[Face]:
    """The faces synth paints (the others fall back to a cover that reads their pixels)."""
    return [f for f in faces if anon.strategy._paintable(f) is None]


@pytest.mark.parametrize("model", ["shipped", "tiny"])
def test_photo_output_ignores_every_pixel_inside_the_erase_areas(model, detector, group, tmp_path):
    kw = {}
    if model == "tiny":
        torch = pytest.importorskip("torch")
        from anonyface.training.export import export_generator
        from anonyface.training.model import Generator, get_config

        torch.manual_seed(0)
        export_generator(Generator(get_config("tiny")), tmp_path / "g.onnx")
        kw["generator"] = tmp_path / "g.onnx"
    img, _ = group
    faces = detector.detect(img)
    anon = Anonymizer(method="synth", seed=3, detector=FixedDetector(faces), **kw)
    faces = paintable(anon, faces)
    assert len(faces) >= 4, "the group photo should give several faces to paint"
    anon.detector = FixedDetector(faces)
    ids = list(range(len(faces)))  # the same latent per face in both runs
    a = anon.cover_faces(img, faces, ids)
    other = scramble_faces(img, faces)
    assert (other != img).any()
    b = anon.cover_faces(other, faces, ids)
    assert np.array_equal(a, b), f"{np.count_nonzero(a != b)} output values depend on face pixels"
    # ...and the faces really were repainted.
    h, w = img.shape[:2]
    for f in faces:
        x1, y1, x2, y2 = erase_area(f.box, w, h)
        assert (a[y1:y2, x1:x2] != img[y1:y2, x1:x2]).any(axis=2).mean() > 0.5


def test_video_output_ignores_every_pixel_inside_the_erase_areas(detector, group, tmp_path):
    av = pytest.importorskip("av")
    from anonyface.video import VideoOptions, process_video

    img, _ = group
    img = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])
    faces = detector.detect(img)
    anon = Anonymizer(method="synth", seed=5, detector=FixedDetector(faces))
    faces = paintable(anon, faces)
    anon.detector = FixedDetector(faces)
    outs = []
    for k, frame in enumerate((img, scramble_faces(img, faces))):
        src, dst = tmp_path / f"in{k}.mov", tmp_path / f"out{k}.mp4"
        write_frames(src, [frame] * 6)
        # Every detection pass at full resolution: the fixed faces are in frame pixels.
        process_video(anon, src, dst, VideoOptions(detect_size=max(frame.shape), progress=False))
        with av.open(str(dst)) as c:
            outs.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(outs[0]) == len(outs[1]) == 6
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
