"""`anonyface live`: a webcam (or any video file / stream URL) anonymized as it plays.

    anonyface live                         # /dev/video0, preview window
    anonyface live --virtual-camera        # also publish it: pick "anonyface" in Zoom/Meet
    anonyface live clip.mp4 --no-preview --max-frames 100 -o out.mp4

The preview needs Tkinter and a display (opencv-python-headless has no GUI);
without them it runs without a preview and says so once. In the preview:
m = next covering method, r = new fake identities (re-roll), q / Esc = quit.
The virtual camera needs `pip install "anonyface[live]"` (pyvirtualcam) and a
device: v4l2loopback on Linux, OBS's virtual camera on Windows and macOS.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .api import DEFAULT_METHOD, METHODS
from .cli import Terminated, add_tracking_arguments, terminate_as_interrupt, tracking_options
from .detection import DEFAULT_THRESHOLD
from .media import AtomicPath
from .streams import Producer
from .video import FrameProcessor, VideoWriter, frame_rgb


class LiveError(Exception):
    """A problem the user can fix (no camera, no virtual camera...): one line, exit 1."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonyface live",
        description="Anonymize a webcam (or a video file / stream URL) live: preview, virtual camera, recording.",
        epilog="keys in the preview: m next method, r re-roll identities, q or Esc quit",
    )
    p.add_argument("source", nargs="?", help="camera device (/dev/video0, or a number), video file or stream URL (default: the first camera)")
    p.add_argument("-o", "--output", metavar="FILE", help="also record the anonymized video here")
    p.add_argument("-m", "--method", choices=METHODS, default=DEFAULT_METHOD, help="synth paints a new face, blur/pixelate/solid cover it (default: %(default)s)")
    p.add_argument("-t", "--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T", help="detection score (default: %(default)s)")
    add_tracking_arguments(p, lookback=False)  # real time: no frames held back
    p.add_argument("--expression", action="store_true", help="synth: the new face talks and blinks with you (costs privacy: docs/expression.md)")
    p.add_argument("--size", metavar="WxH", default="640x480", help="camera capture size (default: %(default)s)")
    p.add_argument("--fps", type=float, default=30, help="camera frame rate asked for, and of the virtual camera (default: %(default)s)")
    p.add_argument("--virtual-camera", action="store_true", help="publish to a virtual camera (pyvirtualcam)")
    p.add_argument("--virtual-device", metavar="DEV", help="which virtual camera device (e.g. /dev/video10)")
    p.add_argument("--no-preview", action="store_true", help="no preview window")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line")
    return p


# -- the source ------------------------------------------------------------------


def _is_url(s: str) -> bool:
    return "://" in s


def open_source(source: str | None, size: str = "640x480", fps: float = 30):
    """(container, is_camera) for a device, file or URL; LiveError with a clear message otherwise."""
    import av

    if source is None or source.isdigit():
        n = int(source or 0)
        if sys.platform.startswith("linux"):
            source = f"/dev/video{n}"
        elif sys.platform == "darwin":
            return _open_camera(av, str(n), "avfoundation", size, fps), True
        else:
            raise LiveError("give the camera as SOURCE, e.g. 'video=Integrated Camera' (DirectShow), a video file or a stream URL")
    if source.startswith("/dev/video"):
        if not os.path.exists(source):
            raise LiveError(f"no camera found: {source} does not exist (give another device, a video file or a stream URL)")
        return _open_camera(av, source, "v4l2", size, fps), True
    if source.startswith("video="):
        return _open_camera(av, source, "dshow", size, fps), True
    if not _is_url(source) and not Path(source).exists():
        raise LiveError(f"no such file, camera or URL: {source}")
    try:
        return av.open(source, timeout=10 if _is_url(source) else None), _is_url(source)
    except av.FFmpegError as e:
        raise LiveError(f"cannot open {source}: {e}") from None


def _open_camera(av, device: str, fmt: str, size: str, fps: float):
    try:
        return av.open(device, format=fmt, options={"video_size": size, "framerate": f"{fps:g}"})
    except Exception:
        try:  # the camera may not offer that size or rate: take its defaults
            return av.open(device, format=fmt)
        except Exception as e:
            raise LiveError(f"cannot open camera {device}: {e}") from None


# -- outputs ------------------------------------------------------------------------


class Preview:
    """A Tkinter window showing frames; keys call back into the loop."""

    def __init__(self, title: str, on_key) -> None:
        import tkinter as tk

        self.tk = tk
        self.root = tk.Tk()
        self.root.title(title)
        self.label = tk.Label(self.root)
        self.label.pack()
        self.photo = None
        self.closed = False
        self.root.protocol("WM_DELETE_WINDOW", self._close)
        self.root.bind("<Key>", lambda e: on_key(e.keysym))

    def _close(self) -> None:
        self.closed = True

    def show(self, rgb: np.ndarray, status: str) -> None:
        h, w = rgb.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(rgb).tobytes()
        self.photo = self.tk.PhotoImage(data=ppm, format="PPM")
        self.label.configure(image=self.photo)
        self.root.title(f"anonyface live — {status}")
        self.root.update()

    def close(self) -> None:
        try:
            self.root.destroy()
        except Exception:
            pass


def preview_available() -> tuple[bool, str]:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY is not set)"
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False, "Tkinter is not installed"
    return True, ""


def live_extra_hint() -> str:
    """How to install the [live] extra, from a source checkout (pyproject.toml two folders
    above the package: `pip install -e '<checkout>[live]'`) or from an installed package."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "anonyface").is_dir():
        return f"pip install -e '{root}[live]'"
    return "pip install 'anonyface[live]'"


def open_virtual_camera(width: int, height: int, fps: float, device: str | None):
    try:
        import pyvirtualcam
    except ImportError:
        raise LiveError(f"the virtual camera needs pyvirtualcam: {live_extra_hint()}") from None
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device)
    except Exception as e:
        hint = (
            "load v4l2loopback: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=anonyface"
            if sys.platform.startswith("linux")
            else "install OBS Studio and start its virtual camera once"
        )
        raise LiveError(f"no virtual camera device ({e}); {hint}") from None


# -- the loop --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with terminate_as_interrupt():  # SIGTERM ends it like Ctrl-C: what was recorded is kept
            return run(args)
    except LiveError as e:
        print(f"anonyface live: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"anonyface live: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


def _frames(container, stream) -> Iterator[tuple[np.ndarray, int | None, float]]:
    """(upright RGB, pts, time it was decoded) for every frame of `stream`."""
    for frame in container.decode(stream):
        yield frame_rgb(frame), frame.pts, time.perf_counter()


class _Recorder:
    """`--output`: the anonymized frames, encoded to a temporary file renamed into place
    at the end. Every recorded frame is anonymized, so what was recorded is kept even
    when the source fails later."""

    def __init__(self, path: str, rate: Fraction, time_base: Fraction, is_camera: bool) -> None:
        self.path, self.rate, self.is_camera = Path(path), rate, is_camera
        self.time_base = time_base if not is_camera else Fraction(1, 1000)
        self.out: AtomicPath | None = None
        self.writer = None
        self.t_start = time.perf_counter()

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        if self.writer is None:
            self.out = AtomicPath(self.path)
            h, w = rgb.shape[:2]
            self.writer = VideoWriter(self.out.tmp, w, h, self.rate, self.time_base, preset="veryfast")
        if self.is_camera:
            self.writer.write(rgb, int((time.perf_counter() - self.t_start) * 1000), Fraction(1, 1000))
        else:
            self.writer.write(rgb, pts, self.time_base)

    def close(self, keep: bool) -> None:
        if self.writer is None:
            return
        try:
            if keep:
                self.writer.close()
                self.out.commit()
            else:
                self.writer.abort()
        except Exception:
            self.writer.abort()
        finally:
            self.out.discard()


class _Session:
    """What one `anonyface live` run holds: the anonymizer, the tracks, and where the
    frames go (preview window, virtual camera, recording)."""

    def __init__(self, args, anon, tracking, rate: Fraction, time_base: Fraction, is_camera: bool) -> None:
        self.args, self.anon = args, anon
        self.proc = FrameProcessor(anon, tracking)
        self.quit = False
        self.cam = None
        self.recorder = _Recorder(args.output, rate, time_base, is_camera) if args.output else None
        self.preview = None if args.no_preview else _open_preview(self.on_key)

    def on_key(self, key: str) -> None:
        if key in ("q", "Escape"):
            self.quit = True
        elif key == "m":
            methods = list(METHODS)
            i = (methods.index(self.anon.method) + 1) % len(methods)
            self.anon.set_method(methods[i])
        elif key == "r":
            self.anon.reroll()

    @property
    def done(self) -> bool:
        return self.quit or (self.preview is not None and self.preview.closed)

    def process(self, rgb: np.ndarray, pts: int | None, t: float) -> None:
        tracked, _ = self.proc.track(rgb, t)
        out = self.proc.cover(rgb, tracked)
        if self.args.virtual_camera and self.cam is None:
            h, w = rgb.shape[:2]
            self.cam = open_virtual_camera(w, h, self.args.fps, self.args.virtual_device)
            print(f"anonyface live: publishing to virtual camera {self.cam.device}", file=sys.stderr)
        if self.cam is not None:
            self.cam.send(out)
        if self.recorder is not None:
            self.recorder.write(out, pts)
        if self.preview is not None:
            self.preview.show(out, f"{self.anon.method} — m: method, r: re-roll, q: quit")

    def close(self, keep_recording: bool) -> None:
        if self.recorder is not None:
            self.recorder.close(keep_recording)
        if self.cam is not None:
            self.cam.close()
        if self.preview is not None:
            self.preview.close()


def _open_preview(on_key) -> Preview | None:
    ok, why = preview_available()
    if ok:
        try:
            return Preview("anonyface live", on_key)
        except Exception as e:
            why = f"cannot open a window ({e})"
    print(f"anonyface live: {why}: no preview (use --output or --virtual-camera to see the result)", file=sys.stderr)
    return None


def run(args) -> int:
    import av

    from .anonymizers import CoverSettings
    from .api import Anonymizer

    if args.max_frames is not None and args.max_frames < 1:
        raise LiveError("--max-frames must be at least 1")
    try:
        tracking = tracking_options(args)
    except ValueError as e:
        raise LiveError(str(e).replace("detect_every", "--detect-every").replace("detect_size", "--detect-size")) from None
    try:
        # real time: no audit, and the fast generator (the tiers: docs/generator.md)
        anon = Anonymizer(method=args.method, threshold=args.threshold, audit=False, tier="fast",
                          settings=CoverSettings(synth_expression=args.expression))
    except Exception as e:
        raise LiveError(f"cannot load the face detector: {e}") from None
    container, is_camera = open_source(args.source, args.size, args.fps)
    if not container.streams.video:
        container.close()
        raise LiveError(f"{args.source}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or Fraction(args.fps).limit_denominator(1001)
    session = _Session(args, anon, tracking, rate, tb, is_camera)
    # A camera keeps only the newest frame (never fall behind real time); a file hands over every frame.
    reader = Producer(_frames(container, stream), latest_only=is_camera, name="anonyface-live-decode").start()
    n, first_pts, latencies = 0, None, []
    t_start = time.perf_counter()
    try:
        while not session.done:
            try:
                rgb, pts, t_in = reader.get(timeout=10)
            except StopIteration:
                break
            except TimeoutError:
                raise LiveError("no frames from the source for 10 s") from None
            except EOFError:
                break
            except av.FFmpegError as e:
                raise LiveError(f"source failed: {e}") from None
            if pts is not None and first_pts is None:
                first_pts = pts
            t = float((pts - first_pts) * tb) if pts is not None and tb else n / float(rate)
            session.process(rgb, None if pts is None else pts - first_pts, t)
            latencies.append(time.perf_counter() - t_in)
            n += 1
            if not args.quiet and n % 30 == 0:
                fps = n / (time.perf_counter() - t_start)
                print(f"\ranonyface live: {n} frames, {fps:.1f} frames/s, latency {1000 * np.mean(latencies[-30:]):.0f} ms ", end="", file=sys.stderr)
            if args.max_frames and n >= args.max_frames:
                break
        if n == 0:
            raise LiveError("the source gave no frames")
    finally:
        reader.close(timeout=2)
        session.close(keep_recording=n > 0)
        container.close()
    if not args.quiet:
        _summary(n, time.perf_counter() - t_start, latencies, args.output)
    return 0


def _summary(n: int, seconds: float, latencies: list[float], output: str | None) -> None:
    lat = np.array(latencies) * 1000
    print(
        f"\ranonyface live: {n} frames in {seconds:.1f} s ({n / seconds:.1f} frames/s), latency mean {lat.mean():.0f} ms, "
        f"p95 {np.percentile(lat, 95):.0f} ms" + (f", recorded to {output}" if output else ""),
        file=sys.stderr,
    )
