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
import queue
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


from .api import DEFAULT_METHOD, METHODS
from .detection import DEFAULT_THRESHOLD


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
    p.add_argument("--detect-every", type=int, default=2, metavar="N", help="run the detector on every N-th frame, track in between (default: %(default)s)")
    p.add_argument("--detect-size", type=int, metavar="PX", help="long side of the fast detection pass (default: a third of the frame's, at least 320)")
    p.add_argument("--fine-every", type=int, default=3, metavar="K", help="every K-th detection pass at full resolution, for small faces; 0 never (default: %(default)s)")
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


def open_virtual_camera(width: int, height: int, fps: float, device: str | None):
    try:
        import pyvirtualcam
    except ImportError:
        raise LiveError('the virtual camera needs pyvirtualcam: pip install "anonyface[live]"') from None
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


_END = object()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except LiveError as e:
        print(f"anonyface live: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anonyface live: interrupted", file=sys.stderr)
        return 130


def run(args) -> int:
    import av

    from .api import Anonymizer
    from .video import FrameProcessor, VideoWriter, frame_rgb, temp_path_for

    if args.detect_every < 1 or args.max_frames is not None and args.max_frames < 1:
        raise LiveError("--detect-every and --max-frames must be at least 1")
    try:
        anon = Anonymizer(method=args.method, threshold=args.threshold)
    except Exception as e:
        raise LiveError(f"cannot load the face detector: {e}") from None
    container, is_camera = open_source(args.source, args.size, args.fps)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = stream.time_base
    rate = stream.average_rate or stream.guessed_rate or Fraction(args.fps).limit_denominator(1001)

    proc = FrameProcessor(anon, args.detect_every, args.detect_size, args.fine_every, max_missed=5)
    methods = list(METHODS)
    state = {"quit": False}

    def on_key(key: str) -> None:
        if key in ("q", "Escape"):
            state["quit"] = True
        elif key == "m":
            i = (methods.index(anon.method) + 1) % len(methods) if anon.method in methods else 0
            set_method(anon, methods[i])
        elif key == "r":
            proc.reroll()

    preview = None
    if not args.no_preview:
        ok, why = preview_available()
        if ok:
            try:
                preview = Preview("anonyface live", on_key)
            except Exception as e:
                why = f"cannot open a window ({e})"
        if preview is None:
            print(f"anonyface live: {why}: no preview (use --output or --virtual-camera to see the result)", file=sys.stderr)

    # Decode in a thread. A camera keeps only the newest frame (never fall behind
    # real time); a file hands over every frame.
    frames: queue.Queue = queue.Queue(maxsize=1 if is_camera else 8)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for frame in container.decode(stream):
                if stop.is_set():
                    return
                item = (frame_rgb(frame), frame.pts, time.perf_counter())
                if is_camera:
                    try:
                        frames.get_nowait()  # drop the stale frame
                    except queue.Empty:
                        pass
                    frames.put(item)
                else:
                    while not stop.is_set():
                        try:
                            frames.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            pass
        except BaseException as e:
            errors.append(e)
        finally:
            while True:
                try:
                    frames.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    reader = threading.Thread(target=read, name="anonyface-live-decode", daemon=True)
    reader.start()

    cam = writer = None
    tmp = out_path = None
    n = 0
    first_pts = None
    latencies: list[float] = []
    t_start = time.perf_counter()
    ok = False
    try:
        while not state["quit"] and not (preview is not None and preview.closed):
            try:
                item = frames.get(timeout=10)
            except queue.Empty:
                raise LiveError("no frames from the source for 10 s") from None
            if item is _END:
                break
            rgb, pts, t_in = item
            h, w = rgb.shape[:2]
            if pts is not None and first_pts is None:
                first_pts = pts
            t = float((pts - first_pts) * tb) if pts is not None and tb else n / float(rate)
            tracked, _ = proc.track(rgb, t)
            out = proc.cover(rgb, tracked)
            if args.virtual_camera and cam is None:
                cam = open_virtual_camera(w, h, args.fps, args.virtual_device)
                print(f"anonyface live: publishing to virtual camera {cam.device}", file=sys.stderr)
            if cam is not None:
                cam.send(out)
            if args.output:
                if writer is None:
                    out_path = Path(args.output)
                    out_path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = temp_path_for(out_path)
                    writer = VideoWriter(tmp, w, h, rate, tb if not is_camera else Fraction(1, 1000), preset="veryfast")
                if is_camera:
                    writer.write(out, int((time.perf_counter() - t_start) * 1000), Fraction(1, 1000))
                else:
                    writer.write(out, None if pts is None else pts - first_pts, tb)
            latencies.append(time.perf_counter() - t_in)
            n += 1
            if preview is not None:
                preview.show(out, f"{anon.method} — m: method, r: re-roll, q: quit")
            if not args.quiet and n % 30 == 0:
                fps = n / (time.perf_counter() - t_start)
                print(f"\ranonyface live: {n} frames, {fps:.1f} frames/s, latency {1000 * np.mean(latencies[-30:]):.0f} ms ", end="", file=sys.stderr)
            if args.max_frames and n >= args.max_frames:
                break
        if errors and not isinstance(errors[0], (EOFError,)):
            e = errors[0]
            if isinstance(e, av.FFmpegError):
                raise LiveError(f"source failed: {e}")
            raise e
        if n == 0:
            raise LiveError("the source gave no frames")
        ok = True
    finally:
        stop.set()
        if writer is not None:
            if ok or n > 0:
                try:
                    writer.close()  # every recorded frame is anonymized: keep what was recorded
                    os.replace(tmp, out_path)
                except Exception:
                    writer.abort()
            else:
                writer.abort()
        if tmp is not None and tmp.exists():
            tmp.unlink()
        if cam is not None:
            cam.close()
        if preview is not None:
            preview.close()
        reader.join(timeout=2)
        container.close()
    if not args.quiet:
        el = time.perf_counter() - t_start
        lat = np.array(latencies) * 1000
        print(
            f"\ranonyface live: {n} frames in {el:.1f} s ({n / el:.1f} frames/s), latency mean {lat.mean():.0f} ms, "
            f"p95 {np.percentile(lat, 95):.0f} ms" + (f", recorded to {args.output}" if args.output else ""),
            file=sys.stderr,
        )
    return 0


def set_method(anon, method: str) -> None:
    """Switch the method of a running Anonymizer (a key press in the preview)."""
    anon.set_method(method)
