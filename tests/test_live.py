"""`anonyface live`, driven with a video file as its source (no camera needed)."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from test_video import assert_covered, make_clip, read_frames  # noqa: E402

from anonyface.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    src = d / "cam.mp4"
    imgs, boxes, times = make_clip(src, frames=16, audio=None)
    return src, imgs, boxes, times


def test_live_from_file_records_covered_frames(clip, tmp_path, capsys, monkeypatch):
    src, imgs, boxes, times = clip
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "rec.mp4"
    rc = main(["live", str(src), "--max-frames", "10", "--output", str(out), "-m", "solid", "--detect-every", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("no preview") == 1  # no display here: said once
    frames, out_times = read_frames(out)
    assert len(frames) == 10
    assert np.allclose(out_times, times[:10], atol=2e-3)
    assert_covered(imgs[:10], frames, boxes[:10], solid=True)


def test_live_no_preview_is_silent_about_display(clip, tmp_path, capsys):
    src, *_ = clip
    rc = main(["live", str(src), "--no-preview", "--max-frames", "3", "-q"])
    assert rc == 0
    assert "preview" not in capsys.readouterr().err


@pytest.mark.parametrize("source", ["/dev/video97", "no-such-file.mp4"])
def test_missing_camera_or_file_is_a_clear_error(source, capsys):
    rc = main(["live", source, "--no-preview"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error:" in err and "Traceback" not in err
    assert source in err


def test_virtual_camera_missing_is_a_clear_error(clip, capsys, monkeypatch):
    src, *_ = clip
    import sys

    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # as if not installed
    rc = main(["live", str(src), "--no-preview", "--virtual-camera", "--max-frames", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "pyvirtualcam" in err and "Traceback" not in err


def test_virtual_camera_without_device(clip, capsys, monkeypatch):
    """pyvirtualcam installed, but no v4l2loopback / OBS device: the hint, not a traceback."""
    import sys
    import types

    fake = types.ModuleType("pyvirtualcam")

    class Camera:
        def __init__(self, *a, **k):
            raise RuntimeError("'v4l2loopback' backend: no loopback device found")

    fake.Camera = Camera
    fake.PixelFormat = types.SimpleNamespace(RGB="RGB")
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    src, *_ = clip
    rc = main(["live", str(src), "--no-preview", "--virtual-camera", "--max-frames", "3"])
    err = capsys.readouterr().err
    assert rc == 1 and "virtual camera" in err and "Traceback" not in err


def test_virtual_camera_gets_frames(clip, capsys, monkeypatch):
    import sys
    import types

    sent = []

    class Camera:
        device = "/dev/video42"

        def __init__(self, w, h, fps, fmt=None, device=None):
            self.size = (w, h)

        def send(self, frame):
            sent.append(frame.shape)

        def close(self):
            pass

    fake = types.ModuleType("pyvirtualcam")
    fake.Camera = Camera
    fake.PixelFormat = types.SimpleNamespace(RGB="RGB")
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    src, imgs, *_ = clip
    assert main(["live", str(src), "--no-preview", "--virtual-camera", "--max-frames", "4", "-q"]) == 0
    assert sent == [imgs[0].shape] * 4


def test_reroll_and_method_switch():
    """One identity salt: a track keeps its latent until reroll, and switching the
    method away and back keeps the painted identities."""
    from anonyface import Anonymizer

    anon = Anonymizer(seed=3)
    synth = anon.strategy
    before = synth.latents(3, [0, 1, 2])
    assert np.array_equal(before, synth.latents(3, [0, 1, 2]))  # stable per track
    assert len({row.tobytes() for row in before}) == 3  # one face per person
    anon.set_method("pixelate")
    assert anon.method == "pixelate"
    anon.set_method("synth")
    assert anon.strategy is synth and np.array_equal(before, synth.latents(3, [0, 1, 2]))
    anon.reroll()
    after = synth.latents(3, [0, 1, 2])
    assert not any(np.array_equal(a, b) for a in before for b in after)
