"""Video files end to end: clips made here with PyAV (moving astronaut heads, a sine
tone), anonymized, and checked frame by frame against the known face positions."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import photos

av = pytest.importorskip("av")

from anonyface.video import VideoError, VideoOptions, process_video  # noqa: E402

W, H = 320, 240


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def face_track(i: int, n: int, w: int = W, h: int = H, face: float = 64.0, phase: float = 0.0):
    """Centre of a face moving across the frame on a gentle curve."""
    u = i / max(1, n - 1)
    cx = w * (0.28 + 0.44 * u) if not phase else w * (0.72 - 0.44 * u)
    cy = h * 0.5 + h * 0.08 * math.sin(2 * math.pi * u + phase)
    return cx, cy


def render(i: int, n: int, w: int = W, h: int = H, faces: int = 1, face: float = 64.0, seed: int = 3):
    """Frame `i` of `n` and the face boxes in it."""
    img = photos.background(w, h, seed)
    boxes = []
    for k in range(faces):
        c = face_track(i, n, w, h, face, phase=math.pi * k)
        boxes.append(photos.paste_head(img, c, face).box)
    return img, boxes


def make_clip(
    path: Path,
    codec: str = "libx264",
    frames: int = 24,
    fps: int = 12,
    size: tuple[int, int] = (W, H),
    audio: str | None = "aac",
    video_delay: float = 0.0,
    vfr: bool = False,
    rotation: int = 0,
    metadata: dict | None = None,
    faces: int = 1,
    face: float = 64.0,
):
    """Write a clip and return (frames as stored upright, boxes per frame, pts in seconds).

    `video_delay`: the video starts this many seconds after the audio.
    `vfr`: frame durations alternate 1 and 2 ticks. `rotation`: display
    rotation (counterclockwise degrees) tagged on the stream; the pixels are
    stored turned the other way, so the picture is upright when shown.
    """
    w, h = size
    c = av.open(str(path), "w")
    for k, v in (metadata or {}).items():
        c.metadata[k] = v
    tb = Fraction(1, fps * 2) if vfr else Fraction(1, fps)
    turns = (rotation // 90) % 4
    sw, sh = (h, w) if turns % 2 else (w, h)
    vs = c.add_stream(codec, rate=fps)
    vs.width, vs.height = sw, sh
    vs.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    vs.time_base = tb
    vs.codec_context.time_base = tb
    if codec == "libx264":
        vs.options = {"crf": "16", "preset": "ultrafast"}
    elif codec == "libx265":
        vs.options = {"crf": "18", "preset": "ultrafast", "x265-params": "log-level=error"}
    elif codec == "libvpx-vp9":
        vs.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    elif codec in ("mpeg4", "mjpeg"):
        vs.options = {"flags": "+qscale", "global_quality": str(2 * 118)}
    if rotation:
        vs.set_display_rotation(rotation)
    a_s = None
    if audio:
        a_s = c.add_stream(audio, rate=48000)
        a_s.layout = "mono"
    imgs, boxes, times = [], [], []
    tick = 0
    for i in range(frames):
        img, b = render(i, frames, w, h, faces=faces, face=face)
        imgs.append(img)
        boxes.append(b)
        stored = np.ascontiguousarray(np.rot90(img, -turns)) if turns else img
        fr = av.VideoFrame.from_ndarray(stored, format="rgb24")
        start = int(round(video_delay / tb))
        fr.pts = start + tick
        times.append(float((start + tick) * tb))
        tick += (1 + (i % 2)) if vfr else 1
        c.mux(vs.encode(fr))
    c.mux(vs.encode(None))
    if a_s is not None:
        rate = 48000
        dur = video_delay + float(tick * tb)
        n = 960 if audio == "libopus" else 1024
        total = int(dur * rate)
        fmt = "s16" if audio == "pcm_s16le" else "fltp"
        for s0 in range(0, total, n):
            t = (np.arange(s0, min(total, s0 + n)) / rate).astype(np.float32)
            x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            if fmt == "s16":
                af = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
            else:
                af = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
            af.sample_rate = rate
            af.pts = s0
            af.time_base = Fraction(1, rate)
            c.mux(a_s.encode(af))
        c.mux(a_s.encode(None))
    c.close()
    return imgs, boxes, times


def read_frames(path: Path):
    """Decoded frames (upright RGB) and their times."""
    from anonyface.video import frame_rgb

    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(frame_rgb(f))
            times.append(float(f.pts * f.time_base))
    return frames, times


def audio_packets(path: Path):
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        return [bytes(p) for p in c.demux(s) if p.size]


def inner(box, frac=0.3):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return int(x1 + frac * w), int(y1 + frac * h), int(x2 - frac * w), int(y2 - frac * h)


def assert_covered(src_frames, out_frames, boxes, solid: bool):
    assert len(out_frames) == len(src_frames)
    for i, (a, b) in enumerate(zip(src_frames, out_frames)):
        for box in boxes[i]:
            x1, y1, x2, y2 = inner(box)
            patch = b[y1:y2, x1:x2].astype(np.float32)
            if solid:
                assert patch.mean() < 25, f"frame {i}: face at {box} not filled (mean {patch.mean():.1f})"
            else:
                diff = np.abs(patch - a[y1:y2, x1:x2].astype(np.float32)).mean()
                assert diff > 6, f"frame {i}: face at {box} unchanged (diff {diff:.1f})"


@pytest.fixture(scope="module")
def solid():
    from anonyface import Anonymizer

    return Anonymizer(method="solid")


def run(anon, src, dst, **kw):
    kw.setdefault("progress", False)
    return process_video(anon, src, dst, VideoOptions(**kw))


def test_mp4_faces_covered_audio_copied_timing_kept(tmp_path, solid):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    imgs, boxes, times = make_clip(src, metadata={"title": "secret", "location": "+48.8577+002.2950/", "creation_time": "2020-01-01T00:00:00Z"})
    stats = run(solid, src, dst)
    out, out_times = read_frames(dst)
    assert stats.frames == len(imgs) == len(out)
    assert_covered(imgs, out, boxes, solid=True)
    assert np.allclose(out_times, times, atol=1e-3)
    # Audio: remuxed, byte for byte.
    assert audio_packets(dst) == audio_packets(src)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert abs(a.duration - b.duration) / 1e6 <= 1 / 12 + 1e-3
        assert b.streams.video[0].average_rate == a.streams.video[0].average_rate
        for key in ("title", "location", "creation_time", "encoder"):
            assert key not in b.metadata, key
    assert not list(tmp_path.glob(".*tmp*")), "temp file left behind"


def test_keep_metadata(tmp_path, solid):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=6, audio=None, metadata={"title": "kept"})
    run(solid, src, dst, keep_metadata=True)
    with av.open(str(dst)) as b:
        assert b.metadata.get("title") == "kept"


def test_blur_changes_every_face(tmp_path, anonymizer):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    imgs, boxes, _ = make_clip(src, audio=None, faces=2, face=56)
    stats = run(anonymizer, src, dst)
    out, _ = read_frames(dst)
    assert_covered(imgs, out, boxes, solid=False)
    assert stats.tracks == 2
    # Away from the faces the picture is the input's (up to coding noise).
    assert np.abs(out[0][:20, :].astype(int) - imgs[0][:20, :]).mean() < 8


@pytest.mark.parametrize(
    "codec,ext,audio",
    [
        ("mjpeg", ".avi", "pcm_s16le"),
        ("mpeg4", ".avi", None),
        ("libvpx-vp9", ".webm", "libopus"),
        ("libx265", ".mkv", "aac"),
    ],
)
def test_codecs_and_containers(tmp_path, solid, codec, ext, audio):
    if not has_encoder(codec) or (audio and not has_encoder(audio)):
        pytest.skip(f"{codec}/{audio} encoder not in this PyAV build")
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    imgs, boxes, times = make_clip(src, codec=codec, audio=audio, frames=12)
    run(solid, src, dst)
    out, out_times = read_frames(dst)
    assert_covered(imgs, out, boxes, solid=True)
    assert np.allclose(out_times, times, atol=2e-3)
    if audio:
        assert audio_packets(dst) == audio_packets(src)


def test_video_starting_after_audio_keeps_offset(tmp_path, solid):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    imgs, boxes, times = make_clip(src, video_delay=0.5, frames=12)
    run(solid, src, dst)
    out, out_times = read_frames(dst)
    assert out_times[0] == pytest.approx(times[0], abs=2e-3) and times[0] == pytest.approx(0.5)
    assert np.allclose(out_times, times, atol=2e-3)
    assert audio_packets(dst) == audio_packets(src)
    with av.open(str(dst)) as b:
        a = b.streams.audio[0]
        first = next(p for p in b.demux(a) if p.pts is not None)
        assert float(first.pts * a.time_base) == pytest.approx(0.0, abs=0.03)


def test_variable_frame_rate_keeps_timestamps(tmp_path, solid):
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    imgs, boxes, times = make_clip(src, vfr=True, audio=None, frames=16)
    assert len(set(np.round(np.diff(times), 4))) == 2  # really variable
    run(solid, src, dst)
    out, out_times = read_frames(dst)
    assert np.allclose(out_times, times, atol=2e-3)
    assert_covered(imgs, out, boxes, solid=True)


def test_rotation_applied_and_written_upright(tmp_path, solid):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    imgs, boxes, _ = make_clip(src, rotation=90, audio=None, frames=8)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.width == H  # stored on its side
    run(solid, src, dst)
    with av.open(str(dst)) as c:
        f = next(c.decode(video=0))
        assert (f.width, f.height) == (W, H)
        assert not (f.rotation or 0)
    out, _ = read_frames(dst)
    assert_covered(imgs, out, boxes, solid=True)


def test_start_end_cut(tmp_path, solid):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    imgs, boxes, times = make_clip(src, frames=24)  # 2 s at 12 fps
    run(solid, src, dst, start=0.5, end=1.5)
    out, out_times = read_frames(dst)
    keep = [i for i, t in enumerate(times) if 0.5 - 1e-6 <= t < 1.5 - 1e-6]
    assert len(out) == len(keep) == 12
    assert out_times[0] == pytest.approx(0.0, abs=2e-3)
    assert_covered([imgs[i] for i in keep], out, [boxes[i] for i in keep], solid=True)
    assert audio_packets(dst)  # audio cut along


def test_detector_failure_leaves_no_output(tmp_path):
    from anonyface import Anonymizer

    class Broken:
        calls = 0

        def detect(self, rgb):
            Broken.calls += 1
            if Broken.calls > 3:
                raise RuntimeError("detector exploded")
            return []

    anon = Anonymizer(method="solid", detector=Broken())
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, frames=12)
    with pytest.raises(RuntimeError, match="exploded"):
        run(anon, src, dst)
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == [src]


def test_not_a_video_fails_cleanly(tmp_path, solid):
    src = tmp_path / "bad.mp4"
    src.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError):
        run(solid, src, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_cli_folder_mixing_photos_and_videos(tmp_path, astronaut):
    from PIL import Image

    from anonyface.cli import main

    d = tmp_path / "media"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(d / "a.jpg")
    make_clip(d / "sub" / "clip.mp4", frames=6)
    out = tmp_path / "clean"
    assert main(["-q", str(d), "-o", str(out), "--crf", "23", "--detect-every", "1"]) == 0
    assert (out / "a.jpg").exists() and (out / "sub" / "clip.mp4").exists()
    assert audio_packets(out / "sub" / "clip.mp4") == audio_packets(d / "sub" / "clip.mp4")
    # Default naming beside the input, as for photos.
    assert main(["-q", str(d / "sub" / "clip.mp4"), "--no-audio"]) == 0
    assert audio_packets(d / "sub" / "clip_anonymized.mp4") is None


def test_no_face_is_held_over_a_cut(tmp_path, solid, group):
    """Held and look-back faces end at a shot change: the next shot, with nobody in it,
    comes out untouched, and the shot before it gets no boxes from the next."""
    import photos
    from test_privacy import write_frames

    img, _ = group
    img = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])
    empty = photos.background(img.shape[1], img.shape[0], seed=11) // 3  # another scene: a dim blue room
    empty[..., 2] = np.clip(empty[..., 2].astype(int) + 90, 0, 255)
    frames = [img] * 6 + [empty] * 6
    src, dst = tmp_path / "cut.mov", tmp_path / "cut.mp4"
    write_frames(src, frames)
    stats = run(solid, src, dst, crf=10)
    out, _ = read_frames(dst)
    assert stats.shots == 2
    for i in range(6, 12):
        diff = np.abs(out[i].astype(int) - empty.astype(int)).mean()
        assert diff < 3, f"frame {i} (after the cut) was changed: {diff:.1f}"
    assert all(np.abs(out[i].astype(int) - img.astype(int)).max(axis=2).mean() > 1 for i in range(6))
