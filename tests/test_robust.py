"""Hostile input (issue 15): every case ends in correct output or one clear line naming
the file, never an un-anonymized or partial output reported as success, never a
traceback; interrupts leave nothing behind. Inputs are made here."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anonyface.cli import main
from anonyface.media import TEMP_MARK, AtomicPath, ImageError, read_image

av = pytest.importorskip("av")

from test_video import make_clip, read_frames  # noqa: E402

from anonyface.video import VideoError, VideoOptions, process_video  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """The command line as a user runs it, in its own process."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-m", "anonyface", *args], capture_output=True, env=env, **kw)


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TEMP_MARK in p.name]


@pytest.fixture(scope="module")
def solid():
    from anonyface import Anonymizer

    return Anonymizer(method="solid")


@pytest.fixture
def png(tmp_path, astronaut) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    return path


# -- wrong results reported as success --------------------------------------------


def faststart_truncated(tmp_path: Path) -> Path:
    """A 3 s MP4 with its index (moov) at the front, cut after a third of its bytes:
    the header still says 3 s, the frames stop early (an interrupted download)."""
    clip, fast = tmp_path / "clip.mp4", tmp_path / "fast.mp4"
    make_clip(clip, frames=36, fps=12)
    with av.open(str(clip)) as i, av.open(str(fast), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)
    cut = tmp_path / "cut.mp4"
    data = fast.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    return cut


def test_truncated_video_fails_unless_allow_partial(tmp_path, solid):
    cut = faststart_truncated(tmp_path)
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError, match="ends early: only .* of its 3.00 s"):
        process_video(solid, cut, out, VideoOptions(progress=False))
    assert not out.exists() and not temps(tmp_path)
    stats = process_video(solid, cut, out, VideoOptions(progress=False, allow_partial=True))
    assert out.exists() and "partial output" in stats.warnings[0]
    frames, _ = read_frames(out)
    assert 0 < len(frames) == stats.frames < 36
    # The command line: exit 1 and one line naming the file; with --allow-partial, a warning.
    proc = cli("-q", "-m", "solid", str(cut), "-o", str(tmp_path / "cli.mp4"))
    assert proc.returncode == 1 and f"{cut}: the video ends early" in proc.stderr.decode()
    assert not (tmp_path / "cli.mp4").exists()
    proc = cli("-q", "-m", "solid", "--allow-partial", str(cut), "-o", str(tmp_path / "cli.mp4"))
    assert proc.returncode == 0 and "warning: partial output" in proc.stderr.decode()


def test_long_last_frame_is_not_taken_for_truncation(tmp_path, solid):
    """A still ending (a screen recording): 30 frames in 3 s, the last shown for 10 s more;
    every frame the header counts decodes, so the file is whole."""
    src = tmp_path / "still.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        packets = []
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 8, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 100, Fraction(1, 1000)
            packets += s.encode(frame)
        packets += s.encode(None)
        packets[-1].duration = 10000
        for packet in packets:
            c.mux(packet)
    with av.open(str(src)) as c:
        assert float(c.streams.video[0].duration * c.streams.video[0].time_base) > 12
    stats = process_video(solid, src, tmp_path / "out.mp4", VideoOptions(progress=False))
    assert stats.frames == 30 and stats.warnings == []


def resizing_clip(path: Path) -> None:
    """An MKV whose H.264 frames go from 320×240 to 256×192 after 12 frames (two raw
    streams joined, as a camera switching modes or a careless concatenation makes)."""
    raw = b""
    for w, h in ((320, 240), (256, 192)):
        buf = io.BytesIO()
        with av.open(buf, "w", format="h264") as c:
            s = c.add_stream("libx264", rate=12)
            s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"preset": "ultrafast"}
            for i in range(12):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 90 + i, np.uint8), format="rgb24")
                frame.pts = i
                c.mux(s.encode(frame))
            c.mux(s.encode(None))
        raw += buf.getvalue()
    (path.parent / "raw.h264").write_bytes(raw)
    with av.open(str(path.parent / "raw.h264")) as i, av.open(str(path), "w") as o:
        vin = i.streams.video[0]
        vo = o.add_stream_from_template(vin)
        for n, packet in enumerate(p for p in i.demux(vin) if p.size):
            packet.time_base = Fraction(1, 12)
            packet.pts = packet.dts = n
            packet.stream = vo
            o.mux(packet)


def test_resolution_change_mid_stream_refused(tmp_path, solid):
    src = tmp_path / "resize.mkv"
    resizing_clip(src)
    with av.open(str(src)) as c:
        assert {(f.width, f.height) for f in c.decode(video=0)} == {(320, 240), (256, 192)}
    out = tmp_path / "out.mkv"
    with pytest.raises(VideoError, match="frame size changes from 320×240 to 256×192 at 1.00 s"):
        process_video(solid, src, out, VideoOptions(progress=False))
    assert not out.exists() and not temps(tmp_path)


def test_dash_o_means_stdout_for_a_file(tmp_path, png):
    proc = cli("-q", "-m", "solid", str(png), "-o", "-")
    assert proc.returncode == 0, proc.stderr
    out = Image.open(io.BytesIO(proc.stdout))
    assert out.format == "PNG" and out.size == (512, 512)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # nothing beside the input
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=6)
    proc = cli("-q", "-m", "solid", str(clip), "-o", "-")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "got.mp4").write_bytes(proc.stdout)
    assert len(read_frames(tmp_path / "got.mp4")[0]) == 6


def test_json_and_image_both_on_stdout_refused(png, capsys):
    for argv in (["-", "--json", "-"], [str(png), "-o", "-", "--json", "-"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "both want standard output" in capsys.readouterr().err


def test_output_extension_must_say_the_format(tmp_path, png, capsys):
    assert main(["-q", "-m", "solid", str(png), "-o", str(tmp_path / "x.psd")]) == 1
    assert "cannot write a photo as x.psd" in capsys.readouterr().err
    assert main(["-q", "-m", "solid", str(png), "-o", str(tmp_path / "x.png"), "--format", "jpeg"]) == 1
    assert "--format jpeg does not match the output name x.png" in capsys.readouterr().err
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=2, audio=None)
    assert main(["-q", "-m", "solid", str(clip), "-o", str(tmp_path / "clip.jpg")]) == 1
    assert "cannot write a video as clip.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "clip.mp4"]
    for name, fmt in (("y.webp", "WEBP"), ("y.gif", "GIF")):  # what the extension says is what is written
        assert main(["-q", "-m", "solid", str(png), "-o", str(tmp_path / name)]) == 0
        assert Image.open(tmp_path / name).format == fmt
    jfif = tmp_path / "b.jfif"  # a JPEG under a name of its own: the output keeps name and format
    Image.open(png).convert("RGB").save(jfif, "JPEG")
    assert main(["-q", "-m", "solid", str(jfif)]) == 0
    assert Image.open(tmp_path / "b_anonymized.jfif").format == "JPEG"


def test_odd_size_kept_where_the_codec_allows_else_said(tmp_path, solid, capsys):
    src = tmp_path / "odd.mkv"
    make_clip(src, codec="mpeg4", size=(161, 121), frames=4, audio=None)
    stats = process_video(solid, src, tmp_path / "same.mkv", VideoOptions(progress=False, codec="mpeg4"))
    assert stats.warnings == [] and read_frames(tmp_path / "same.mkv")[0][0].shape[:2] == (121, 161)
    assert main(["-m", "solid", str(src), "-o", str(tmp_path / "even.mp4")]) == 0  # libx264: even sides
    assert read_frames(tmp_path / "even.mp4")[0][0].shape[:2] == (122, 162)
    assert "warning: written as 162×122, not 161×121: libx264 needs even sides" in capsys.readouterr().err


def test_avi_keeps_a_constant_frame_rate(tmp_path, solid):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=12, fps=12)  # with AAC audio, whose priming used to shift frames
    process_video(solid, src, tmp_path / "out.avi", VideoOptions(progress=False))
    with av.open(str(tmp_path / "out.avi")) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == 12
        assert [p.pts for p in c.demux(stream) if p.size] == list(range(12))


# -- crashes ------------------------------------------------------------------------


def test_json_destination_checked_before_the_batch(tmp_path, png, capsys):
    for where, says in ((tmp_path, "is a folder"), (png / "faces.json", "cannot write there")):
        with pytest.raises(SystemExit) as e:
            main(["-q", "-m", "solid", str(png), "--json", str(where)])
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "a_anonymized.png").exists()  # refused before any work
    assert main(["-q", "-m", "solid", str(png), "--json", str(tmp_path / "j" / "faces.json")]) == 0
    assert json.loads((tmp_path / "j" / "faces.json").read_text())["files"][0]["faces"]
    assert not temps(tmp_path / "j")


def test_live_on_a_file_without_video(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        for s0 in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, s0, Fraction(1, 48000)
            c.mux(a.encode(frame))
        c.mux(a.encode(None))
    proc = cli("live", str(path), "--no-preview", "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.decode()
    assert "no video stream" in proc.stderr.decode()


# -- resources ---------------------------------------------------------------------


def test_video_frames_have_a_pixel_limit(tmp_path, solid, capsys):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=2, audio=None)
    with pytest.raises(VideoError, match="320×240 = 0.1 megapixels, over the limit"):
        process_video(solid, src, tmp_path / "out.mp4", VideoOptions(progress=False, max_pixels=320 * 240 - 1))
    assert main(["-q", "-m", "solid", "--max-pixels", "70000", str(src)]) == 1
    assert "raise it with --max-pixels" in capsys.readouterr().err
    assert VideoOptions().max_pixels == 4096 * 2160  # 4K passes by default, 8K does not


def test_endless_input_is_refused_bounded(tmp_path):
    from anonyface.media import read_input

    t = time.perf_counter()
    with pytest.raises(ImageError, match="not an image"):
        read_image("/dev/zero")
    proc = cli("-q", "-", stdin=open("/dev/zero", "rb"), timeout=60)
    assert proc.returncode == 1 and "not an image" in proc.stderr.decode()
    assert time.perf_counter() - t < 30

    class EndlessPNG(io.RawIOBase):  # a real PNG signature, then bytes for ever
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = b"\x89PNG\r\n\x1a\n" + bytes(len(b) - 8) if not getattr(self, "started", False) else bytes(len(b))
            self.started = True
            return len(b)

    with pytest.raises(ImageError, match="longer than any photo within --max-pixels"):
        read_input(io.BufferedReader(EndlessPNG()), max_pixels=1000)


def test_oversized_photo_refused_before_decoding(tmp_path):
    big = tmp_path / "bomb.png"
    Image.new("L", (9900, 9900)).save(big, optimize=True)  # a few KB on disk, 98 megapixels
    assert big.stat().st_size < 200_000
    t = time.perf_counter()
    with pytest.raises(ImageError, match="98 megapixels, over the limit of 50"):
        read_image(big, max_pixels=50_000_000)
    assert time.perf_counter() - t < 2


# -- interrupts and leftovers ----------------------------------------------------------


def start_slow_video(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A CLI run on a clip long enough to be stopped halfway; returns once its
    temporary output exists (it is writing)."""
    src = tmp_path / "long.mp4"
    make_clip(src, frames=240, audio=None)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cmd = [sys.executable, "-m", "anonyface", "-q", "--detect-every", "1", str(src), "-o", str(out / "long.mp4")]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and temps(out)):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before writing"
        time.sleep(0.05)
    time.sleep(0.5)
    return proc, out


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    proc, out = start_slow_video(tmp_path)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_sigterm_ends_live_like_ctrl_c_keeping_the_recording(tmp_path):
    src = tmp_path / "long.mp4"
    make_clip(src, frames=240, audio=None)
    out = tmp_path / "rec"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cmd = [sys.executable, "-m", "anonyface", "live", str(src), "--no-preview", "-q", "--detect-every", "1", "-o", str(out / "rec.mp4")]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not temps(out):
        assert proc.poll() is None and time.monotonic() < deadline, "live ended before recording"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["rec.mp4"]  # every recorded frame is anonymized: kept
    assert 0 < len(read_frames(out / "rec.mp4")[0]) < 240


def test_stale_temp_files_removed_on_the_next_run(tmp_path, png, capsys):
    proc, out = start_slow_video(tmp_path)
    proc.kill()
    proc.wait()
    (stale,) = temps(out)
    live = AtomicPath(out / "busy.mp4")  # a temporary file of a running process: kept
    try:
        assert main(["-q", "-m", "solid", str(png), "-o", str(out / "a.png")]) == 0
        assert f"removed {stale}, a temporary file left by an interrupted run" in capsys.readouterr().err
        assert temps(out) == [live.tmp]
    finally:
        live.discard()


def test_empty_folder_and_output_inside_input_say_why(tmp_path, png, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["-q", str(tmp_path / "empty")]) == 1
    assert "empty: no photos or videos in this folder" in capsys.readouterr().err
    assert main(["-q", str(tmp_path), "-o", str(tmp_path) + "/"]) == 1
    assert "the output folder is this folder" in capsys.readouterr().err


def test_negative_seed_is_a_usage_error(png, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--seed", "-1", str(png)])
    assert e.value.code == 2 and "--seed must be 0 or more" in capsys.readouterr().err


# -- newcomer friction -------------------------------------------------------------------


def test_progress_lines_without_a_terminal(tmp_path, monkeypatch, capsys):
    import anonyface.video as video

    monkeypatch.setattr(video, "PROGRESS_SECONDS", 0.0)
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=6, audio=None)
    assert main(["-m", "solid", str(src)]) == 0  # capsys: stderr is not a terminal
    lines = [line for line in capsys.readouterr().err.splitlines() if "frames/s" in line]
    assert lines[-1].startswith("anonyface: clip.mp4: 6/6 frames (100 %)")


def test_help_says_synth_is_the_default_and_videos_work(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    description = capsys.readouterr().out.split("positional arguments")[0]
    assert "synth, the default" in description and "videos" in description


def test_live_extra_hint_works_from_a_checkout(monkeypatch):
    from anonyface.live import LiveError, open_virtual_camera

    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # not installed
    with pytest.raises(LiveError) as e:
        open_virtual_camera(64, 48, 30, None)
    root = Path(__file__).resolve().parents[1]
    assert f"pip install -e '{root}[live]'" in str(e.value)  # tests run from a checkout


def test_license_is_an_spdx_expression_without_warnings(tmp_path):
    """setuptools ≥ 77 warns three times per install about a `project.license` table."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "src" / "anonyface" / "models").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    for md in (root / "src" / "anonyface" / "models").glob("*.md"):
        (tmp_path / "src" / "anonyface" / "models" / md.name).write_bytes(md.read_bytes())
    (tmp_path / "src" / "anonyface" / "__init__.py").write_text("")
    code = "import setuptools.build_meta as b; b.prepare_metadata_for_build_wheel('meta')"
    (tmp_path / "meta").mkdir()
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "deprecat" not in (proc.stdout + proc.stderr).lower()
    (meta,) = (tmp_path / "meta").glob("*.dist-info/METADATA")
    assert "License-Expression: MIT" in meta.read_text()


def test_large_frames_get_shorter_queues_and_look_ahead():
    from anonyface.video import _bound_lookahead, queue_depth

    assert [queue_depth(w, h) for w, h in ((640, 480), (1280, 720), (1920, 1080), (3840, 2160), (7680, 4320))] == [8, 8, 5, 2, 2]
    looks = []
    for w, h, preset in ((1280, 720, "medium"), (1920, 1080, "medium"), (3840, 2160, "medium"), (3840, 2160, "veryfast")):
        opts = {"preset": preset}
        _bound_lookahead(opts, w, h)
        looks.append(opts.get("rc-lookahead"))
    assert looks == [None, "20", "10", None]  # x264's own default kept where it is small enough
