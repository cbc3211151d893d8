"""Video: decode with PyAV, track and cover every face, encode; audio copied untouched.

Streaming end to end: a reader thread decodes, the main thread detects,
tracks and covers, a writer thread encodes and muxes; bounded queues between
them keep memory flat however long the video. PyAV releases the GIL while it
decodes and encodes, so the three overlap.

Fail closed: the output is written to a temporary file beside the target and
renamed at the very end; any error (a frame that does not decode, a detector
failure, an encoder error) removes it, and the file fails.

Timing is carried through, not re-invented: every output frame keeps its input
frame's pts (variable frame rates stay variable), audio packets are remuxed
as they are (no re-encode) with their own timestamps, so start offsets
between streams survive. Rotation (display matrix) is applied before
detection and the output is written upright, with no rotation tag.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from .detection import Face, FaceDetector
from .media import AtomicPath
from .streams import Consumer, Producer
from .tracking import CutDetector, FaceTracker, Lookback, TrackedFace

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

#: Refuse video frames above this many pixels unless told otherwise (--max-pixels): 4K
#: (4096×2160) passes; memory grows with the frame size (README, "Memory").
DEFAULT_MAX_FRAME_PIXELS = 4096 * 2160

#: Encoders that keep odd frame sides; the others (H.264, H.265 with 4:2:0 colour) need
#: even ones, and the frame is padded by a copied row or column, with a warning.
ODD_SIZE_CODECS = frozenset({"libvpx-vp9", "mpeg4", "mjpeg", "libsvtav1"})

#: Without a terminal, a progress line on stderr this often (seconds).
PROGRESS_SECONDS = 10.0

#: Memory bounds for large frames. The decoder and encoder queues hold at most this many
#: bytes of RGB frames each (between 2 and 8 frames: 8 up to 720p, 5 at 1080p, 2 at 4K),
#: and x264's look-ahead at most this many pixels of frames (x264 keeps that many frames:
#: medium's 40 stay up to 720p, 1080p gets 20, 4K 10; 1.5 GB less at 4K).
QUEUE_BYTES = 32 << 20
LOOKAHEAD_PIXELS = 20 * 1920 * 1080
#: x264's default preset here. ffmpeg's own default, medium, spent 88 ms of a 720p frame
#: on a loaded 2-core machine, veryfast 36 ms, with a smaller file at crf 20
#: (docs/speed.md); --preset medium gives the old output.
DEFAULT_X264_PRESET = "veryfast"
_X264_LOOKAHEAD = {"ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30, "medium": 40, "slow": 50}

#: Container tags that never identify anyone and that muxers need; everything
#: else (title, location / ISO6709 GPS, creation_time, make, model, encoder,
#: comments...) is dropped unless keep_metadata.
_NEUTRAL_STREAM_TAGS = ("language",)


class VideoError(ValueError):
    """A video that cannot be processed (message says why)."""


@dataclass
class TrackingOptions:
    """How faces are followed through frames (video files and `anonyface live`).

    `detect_every`: run the detector on every N-th frame and track in between.
    `detect_size`: long side of the reduced-size detection pass (None: a third
    of the frame's long side, at least 320: 320 for 640×480, 640 for 1080p).
    `fine_every`: every this many detection passes, run the full multi-scale
    (tiled) detector on the full-resolution frame, for small faces; 1 = every
    pass, 0 = never. Frames no larger than `detect_size` always get the full
    detector (it is a single pass there).
    `max_missed`: detection passes a tracked face stays covered after the
    detector stops finding it (the CLI's --hold).
    `lookback`: frames held back so a face is also covered in the frames just
    before it was first detected (adds that many frames of latency; files only).
    `smooth`: One Euro smoothing of boxes and landmarks.
    """

    detect_every: int = 2
    detect_size: int | None = None  # None: auto_detect_size(frame)
    fine_every: int = 3
    max_missed: int = 5
    lookback: int = 8
    smooth: bool = True

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        if self.detect_size is not None and self.detect_size < 32:
            raise ValueError("detect_size must be at least 32")


@dataclass
class VideoOptions(TrackingOptions):
    """How a video file is cut and encoded, and how its faces are followed."""

    codec: str | None = None  # None: libx264 (libvpx-vp9 for .webm, mpeg4 for .avi)
    crf: int | None = None  # None: the codec's default (see _encoder_options)
    preset: str | None = None  # x264 preset; None: DEFAULT_X264_PRESET (x265: "medium")
    start: float | None = None  # seconds
    end: float | None = None
    keep_audio: bool = True
    keep_metadata: bool = False
    progress: bool = True
    allow_partial: bool = False  # a truncated or damaged input: keep what decodes, with a warning
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # per frame
    #: Called with (frames written, frames expected or None) after every frame (the web
    #: page's progress bar); an exception raised in it stops the job, and nothing is written.
    on_progress: Callable[[int, int | None], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start is not None and self.start < 0:
            raise ValueError("start must not be negative")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")


@dataclass
class VideoStats:
    frames: int = 0
    detections: int = 0  # detector passes
    tracks: int = 0
    seconds: float = 0.0
    latency_ms_mean: float = 0.0
    latency_ms_p95: float = 0.0
    width: int = 0
    height: int = 0
    audio: str = "none"  # none / copied / re-encoded / dropped
    shots: int = 1  # cuts found + 1 (tracks end at every cut)
    first_faces: list[Face] = field(default_factory=list)  # one per covered track (its first covered box)
    kept: list[dict] = field(default_factory=list)  # consent on: one entry per track shown in some frame
    warnings: list[str] = field(default_factory=list)  # done, but not quite as asked (partial, padded)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# -- per-frame processing, shared by files and `anonyface live` ------------------


def auto_detect_size(width: int, height: int) -> int:
    """Long side of the fast detection pass: a third of the frame, at least 320 px
    (faces down to ~20 px at that size are found; smaller ones by the full pass)."""
    return max(320, int(round(max(width, height) / 3 / 32)) * 32)


class FrameProcessor:
    """Detect (every N-th frame, reduced size, full pyramid now and then), track,
    smooth and cover. One per video: it holds the tracks. Each track id is the
    identity its fake face is drawn for (`Anonymizer.reroll` gives new ones)."""

    def __init__(self, anonymizer, options: TrackingOptions | None = None) -> None:
        self.anon = anonymizer
        self.options = opts = options or TrackingOptions()
        # A held face is kept for max_missed detection passes, whatever N is. With
        # consent a second box on a tracked face is its own track (the face may be shown).
        consent = getattr(anonymizer, "consent", None) is not None
        self.tracker = FaceTracker(max_missed=opts.max_missed, smooth=opts.smooth, merge_duplicates=not consent)
        self.cuts = CutDetector()
        self.cut = False  # did the last frame start a new shot?
        self.shots = 1
        self.index = 0
        self.passes = 0
        self.detect_seconds = 0.0

    def _detect(self, rgb: np.ndarray) -> tuple[list[Face], float]:
        """(faces, smallest face size the pass could see, in frame pixels)."""
        h, w = rgb.shape[:2]
        long = max(h, w)
        size = self.options.detect_size or auto_detect_size(w, h)
        every = self.options.fine_every
        fine = long <= size or (every > 0 and self.passes % every == 0)
        self.passes += 1
        if fine:
            det = self.anon.detector
            if isinstance(det, FaceDetector):
                # Start the pyramid at the reduced pass's size instead of 640 when that is
                # fewer pixels, keeps levels at most three apart and the large faces in
                # view: 1280×720 is looked at at 427 + 1280, not 640 + 1280 (docs/speed.md).
                coarsest = max(size, math.ceil(long / FaceDetector.LEVEL_STEP))
                cost = lambda scales: sum(s * s for s in scales)  # noqa: E731
                if coarsest <= det.max_size and cost(det.scales(w, h, coarsest)) < cost(det.scales(w, h)):
                    return det.detect(rgb, coarsest=coarsest), 0.0
            return self.anon.detector.detect(rgb), 0.0
        s = size / long
        small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        faces = self.anon.detector.detect(small)
        sx, sy = w / small.shape[1], h / small.shape[0]
        out = [
            Face((f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy), f.landmarks * np.array([sx, sy], np.float32), f.score)
            for f in faces
        ]
        # Faces under ~20 px at the reduced size are not reliably found there:
        # their tracks wait for the next full pass instead of counting as missed.
        return out, 20.0 / s

    def track(self, rgb: np.ndarray, t: float) -> tuple[list[TrackedFace], list[int]]:
        """Tracked faces for this frame, and ids of tracks born on it. At a cut (a new
        shot) every track ends and the frame is always looked at by the detector."""
        self.cut = self.cuts(rgb)
        if self.cut:
            self.tracker.reset()
            self.shots += 1
        if self.cut or self.index % self.options.detect_every == 0:
            t0 = time.perf_counter()
            faces, min_size = self._detect(rgb)
            self.detect_seconds += time.perf_counter() - t0
            tracked = self.tracker.update(t, faces, min_size)
        else:
            tracked = self.tracker.update(t, None)
        self.index += 1
        return tracked, list(self.tracker.new_ids)

    def cover(self, rgb: np.ndarray, tracked: list[TrackedFace]) -> np.ndarray:
        faces = [tf.face for tf in tracked]
        return self.anon.cover_faces(rgb, faces, identities=[tf.track_id for tf in tracked])


# -- reading -------------------------------------------------------------------


def frame_rgb(frame) -> np.ndarray:
    """A decoded frame as an upright RGB array (display rotation applied)."""
    rgb = frame.to_ndarray(format="rgb24")
    k = _quarter_turns(getattr(frame, "rotation", 0) or 0)
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))
    return rgb


def _quarter_turns(rotation: float) -> int:
    """np.rot90 turns (counterclockwise) that show a frame the way the display
    matrix says (its angle is counterclockwise, as av_display_rotation_get's)."""
    return int(round(rotation / 90.0)) % 4


# -- writing -------------------------------------------------------------------


def default_codec(path: str | os.PathLike) -> str:
    """libx264, but VP9 for WebM, and MPEG-4 Part 2 for AVI (AVI stores no presentation
    times, and readers guess H.264's wrong by a frame)."""
    ext = Path(path).suffix.lower()
    return {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(ext, "libx264")


def _encoder_options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
    if codec in ("libx264", "libx264rgb"):
        return {"crf": str(20 if crf is None else crf), "preset": preset or DEFAULT_X264_PRESET}
    if codec == "libx265":
        return {"crf": str(24 if crf is None else crf), "preset": preset or "medium", "x265-params": "log-level=error"}
    if codec in ("libvpx-vp9", "libvpx"):
        return {"crf": str(32 if crf is None else crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
    if codec == "libsvtav1":
        return {"crf": str(35 if crf is None else crf), "preset": preset or "8"}
    if codec in ("mpeg4", "mjpeg", "mpeg2video", "mpeg1video"):
        q = 3 if crf is None else max(1, min(31, crf))  # --crf as the fixed quantizer (q:v)
        return {"flags": "+qscale", "global_quality": str(q * 118), "qmin": str(q), "qmax": str(q)}
    return {} if crf is None else {"crf": str(crf)}


def queue_depth(width: int, height: int) -> int:
    """Frames a decoder or encoder queue holds for this frame size (`QUEUE_BYTES`)."""
    return max(2, min(8, QUEUE_BYTES // (width * height * 3)))


def _bound_lookahead(enc_opts: dict[str, str], width: int, height: int) -> None:
    """Shorten x264's look-ahead for large frames (`LOOKAHEAD_PIXELS`), never lengthen it."""
    preset_default = _X264_LOOKAHEAD.get(enc_opts.get("preset", DEFAULT_X264_PRESET), 60)
    cap = max(10, LOOKAHEAD_PIXELS // (width * height))
    if cap < preset_default:
        enc_opts["rc-lookahead"] = str(cap)


def _pix_fmt(codec: str) -> str:
    if codec == "mjpeg":
        return "yuvj420p"
    return "yuv420p"


class VideoWriter:
    """Encodes RGB frames (with their own pts) into a container; video only unless
    audio streams are added. Writes to `path` directly: callers make it a temp file."""

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction | None = None,
        codec: str | None = None,
        crf: int | None = None,
        preset: str | None = None,
        metadata: dict[str, str] | None = None,
        format: str | None = None,
    ) -> None:
        import av

        self.av = av
        codec = codec or default_codec(path)
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            raise VideoError(f"video encoder {codec!r} is not available in this PyAV build") from None
        muxer = {"fflags": "+bitexact"}
        if format == "avi" or Path(path).suffix.lower() == ".avi":
            muxer["avoid_negative_ts"] = "disabled"  # AAC's priming would shift every frame but the first by one
        self.container = av.open(str(path), "w", format=format, container_options=muxer)
        if metadata:
            self.container.metadata.update(metadata)
        self.size = (width, height)
        if codec in ODD_SIZE_CODECS:
            self.width, self.height = width, height
        else:  # yuv420p H.264/H.265 need even sides: one copied row or column
            self.width, self.height = width + (width & 1), height + (height & 1)
        self.padded = (self.width, self.height) != self.size
        enc_opts = _encoder_options(codec, crf, preset)
        if codec in ("libx264", "libx264rgb"):
            _bound_lookahead(enc_opts, width, height)
        if self.container.format.name == "avi":
            enc_opts["bf"] = "0"  # AVI stores no presentation times: B-frames would scramble them
            time_base = 1 / Fraction(rate)  # and one tick per frame: each pts is rounded to its frame
        self.stream = self.container.add_stream(codec, rate=rate, options=enc_opts)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = _pix_fmt(codec)
        if time_base is not None:
            if codec in ("mpeg4", "mpeg2video", "mpeg1video") and time_base.denominator > 65535:
                time_base = Fraction(1, max(1, min(65535, round(float(rate) * 1000))))
            self.stream.time_base = time_base
            self.stream.codec_context.time_base = time_base
        self.time_base = time_base
        self.lock = threading.Lock()
        self._last_pts: int | None = None

    def add_audio_copy(self, in_stream, keep_metadata: bool):
        """An output stream that takes `in_stream`'s packets as they are, or None when
        the container cannot hold that codec."""
        name = in_stream.codec_context.name
        if name not in self.container.supported_codecs:
            return None
        out = self.container.add_stream_from_template(in_stream)
        _copy_stream_tags(in_stream, out, keep_metadata)
        return out

    def add_audio_encode(self, in_stream, keep_metadata: bool):
        codec = "libopus" if self.container.format.name == "webm" else "aac"
        rate = in_stream.codec_context.sample_rate or 48000
        if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        out = self.container.add_stream(codec, rate=rate)
        try:
            out.layout = in_stream.codec_context.layout
        except Exception:
            pass
        _copy_stream_tags(in_stream, out, keep_metadata)
        return out

    def write(self, rgb: np.ndarray, pts: int | None, time_base: Fraction | None) -> None:
        av = self.av
        h, w = rgb.shape[:2]
        if (w, h) != self.size:
            raise VideoError(f"the frame size changed from {self.size[0]}×{self.size[1]} to {w}×{h}: a video must keep one size")
        if (w, h) != (self.width, self.height):
            rgb = cv2.copyMakeBorder(rgb, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if pts is not None:
            if time_base is not None and self.time_base is not None and time_base != self.time_base:
                pts = int(round(pts * time_base / self.time_base))
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1  # encoders refuse non-increasing pts
            frame.pts = pts
            frame.time_base = self.time_base
            self._last_pts = pts
        packets = self.stream.encode(frame)
        with self.lock:
            self.container.mux(packets)

    def mux(self, packet) -> None:
        with self.lock:
            self.container.mux(packet)

    def close(self) -> None:
        packets = self.stream.encode(None)
        with self.lock:
            self.container.mux(packets)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


def _copy_stream_tags(src, dst, keep_metadata: bool) -> None:
    for k, v in src.metadata.items():
        if keep_metadata or k in _NEUTRAL_STREAM_TAGS:
            dst.metadata[k] = v




# -- a whole file ------------------------------------------------------------------


def progress_bar(name: str, total: int | None):
    """A tqdm bar on a terminal; otherwise (a log, a pipe) a line every `PROGRESS_SECONDS`."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True, desc=name, leave=False)
    return ProgressLines(name, total)


class ProgressCallback:
    """A progress bar that calls `VideoOptions.on_progress`, and another bar as well."""

    def __init__(self, callback: Callable[[int, int | None], None], total: int | None, bar=None) -> None:
        self.callback, self.total, self.bar, self.n = callback, total, bar, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        self.callback(self.n, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ProgressLines:
    """`anonyface: clip.mp4: 240/720 frames (33 %), 8.1 frames/s` on stderr now and then."""

    def __init__(self, name: str, total: int | None) -> None:
        self.name, self.total, self.n = name, total, 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            of = f"/{self.total} frames ({100 * self.n / self.total:.0f} %)" if self.total else " frames"
            print(f"anonyface: {self.name}: {self.n}{of}, {self.n / max(now - self.start, 1e-6):.1f} frames/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


@dataclass
class _Source:
    """The input container, the streams taken from it and the cut."""

    container: Any
    video: Any
    audio: list
    time_base: Fraction
    rate: Fraction
    t0: float
    t_end: float
    offsets: dict[int, int]  # per stream: pts subtracted for --start
    start_time: float
    total: int | None  # frames expected (for the progress bar), when known
    expected_end: float | None = None  # where the video stream says it ends (seconds), when known
    damage: str | None = None  # why decoding stopped early (--allow-partial)
    decoded: int = 0  # video frames decoded, cut or not


def _open_source(src: Path, opts: VideoOptions) -> _Source:
    import av

    try:
        inp = av.open(str(src))
    except av.FFmpegError as e:
        raise VideoError(f"cannot open video: {e}") from None
    try:
        if not inp.streams.video:
            raise VideoError("no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        if not vin.codec_context.width or not vin.codec_context.height:
            raise VideoError("video stream has no frame size")
        _check_frame_pixels(vin.codec_context.width, vin.codec_context.height, opts.max_pixels)
        ains = list(inp.streams.audio) if opts.keep_audio else []
        tb = vin.time_base
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate or Fraction(25)
        # --start / --end: seek near the start, then cut exactly on frame times.
        t0 = opts.start or 0.0
        t_end = opts.end if opts.end is not None else math.inf
        if opts.start:
            inp.seek(int(opts.start / tb), stream=vin, backward=True, any_frame=False)
        offsets = {s.index: int(round(t0 / s.time_base)) if opts.start else 0 for s in (vin, *ains)}
        total = vin.frames or (int(float(vin.duration * tb) * float(rate)) if vin.duration else None)
        if total and (opts.start or opts.end is not None):
            dur = float(vin.duration * tb) if vin.duration else None
            span = (min(t_end, dur) if dur else t_end) - t0
            total = int(span * float(rate)) if math.isfinite(span) else None
        start_time = inp.start_time / 1e6 if inp.start_time is not None else 0.0
        return _Source(inp, vin, ains, tb, rate, t0, t_end, offsets, start_time, total, _stream_end(inp, vin))
    except BaseException:
        inp.close()
        raise


def _check_frame_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise VideoError(
            f"video frames are {width}×{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f} (memory grows with the frame size); raise it with --max-pixels"
        )


def _stream_end(inp, vin) -> float | None:
    """Where the video stream ends by its header (seconds): its own duration, or the file's
    when the video is its only stream; None when neither says."""
    if vin.duration:
        return float(((vin.start_time or 0) + vin.duration) * vin.time_base)
    if inp.duration and len(inp.streams) == 1:
        return ((inp.start_time or 0) + inp.duration) / 1e6
    return None


def _demux(s: _Source, cut_start: bool, allow_partial: bool = False) -> Iterator[tuple]:
    """`_demux_all`, failing on a packet that does not decode; with `allow_partial`, ending
    there instead (the reason kept in `s.damage`)."""
    import av

    try:
        yield from _demux_all(s, cut_start)
    except av.FFmpegError as e:
        if not allow_partial:
            raise VideoError(f"the video is damaged: {e}") from None
        s.damage = str(e)


def _demux_all(s: _Source, cut_start: bool) -> Iterator[tuple]:
    """("v", upright RGB, output pts, time) for video frames and ("a", packet, stream index)
    for audio packets, in file order, cut to [t0, t_end)."""
    vin, tb = s.video, s.time_base
    video_done = False
    for packet in s.container.demux([vin, *s.audio]):
        st = packet.stream
        if st.index == vin.index:
            for frame in packet.decode():
                s.decoded += 1
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                if cut_start and t < s.t0 - 1e-6:
                    continue
                if t >= s.t_end - 1e-6:
                    video_done = True
                    break
                yield "v", frame_rgb(frame), frame.pts - s.offsets[vin.index], t
            if video_done and not s.audio:
                break
        elif any(st.index == a.index for a in s.audio):
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * st.time_base)
            if (cut_start and t < s.t0 - 1e-6) or t >= s.t_end:
                if t >= s.t_end and video_done:
                    break
                continue
            yield "a", packet, st.index


class _Encoder:
    """The output side: a VideoWriter on the temporary file and the audio streams mapped
    into it. Made on the first frame: its display rotation decides the output size."""

    def __init__(self, s: _Source, path: Path, suffix: str, width: int, height: int, opts: VideoOptions) -> None:
        keep = opts.keep_metadata
        skip = ("encoder", "major_brand", "minor_version", "compatible_brands")
        metadata = {k: v for k, v in s.container.metadata.items() if k not in skip} if keep else None
        self.source = s
        self.writer = w = VideoWriter(path, width, height, s.rate, s.time_base, opts.codec, opts.crf, opts.preset, metadata)
        if keep:
            _copy_stream_tags(s.video, w.stream, True)
            w.stream.metadata.pop("rotate", None)
        self.audio: dict[int, tuple[Any, bool]] = {}  # input stream index -> (output stream, re-encode?)
        modes = []
        for a in s.audio:
            out = w.add_audio_copy(a, keep)
            if out is not None:
                self.audio[a.index] = (out, False)
                modes.append("copied")
            else:
                self.audio[a.index] = (w.add_audio_encode(a, keep), True)
                modes.append(f"re-encoded ({a.codec_context.name} does not fit {suffix})")
        self.audio_mode = ", ".join(modes) if modes else ("dropped" if s.container.streams.audio else "none")

    def handle(self, item: tuple) -> None:
        """Encode a video frame or remux / re-encode an audio packet (in the encoder thread)."""
        if item[0] == "v":
            self.writer.write(item[1], item[2], self.source.time_base)
            return
        _, packet, index = item
        out, encode = self.audio[index]
        t0, off = self.source.t0, self.source.offsets[index]
        if encode:
            for frame in packet.decode():
                if t0 and frame.pts is not None and frame.time_base:
                    frame.pts -= int(round(t0 / frame.time_base))
                self.writer.mux(out.encode(frame))
            return
        if off:
            packet.pts -= off
            if packet.dts is not None:
                packet.dts -= off
        packet.stream = out
        self.writer.mux(packet)

    def finish(self) -> None:
        for out, encode in self.audio.values():
            if encode:
                self.writer.mux(out.encode(None))


class _VideoJob:
    """The caller's thread of one video: track, cover (after the look-back), hand to the encoder."""

    def __init__(self, anonymizer, s: _Source, tmp: Path, suffix: str, opts: VideoOptions, on_frame, bar) -> None:
        self.s, self.tmp, self.suffix, self.opts, self.on_frame, self.bar = s, tmp, suffix, opts, on_frame, bar
        self.proc = FrameProcessor(anonymizer, opts)
        self.look = Lookback(opts.lookback)
        self.consent = None  # per-track decisions when the anonymizer keeps consenting faces
        if getattr(anonymizer, "consent", None) is not None:
            from .consent import TrackConsent

            self.consent = TrackConsent(anonymizer.consent)
        self.stats = VideoStats()
        self.latencies: list[float] = []
        self.first_faces: dict[int, Face] = {}
        self.encoder: _Encoder | None = None
        self.consumer: Consumer | None = None
        self.early_audio: list = []  # audio before the first frame, held until the encoder exists
        self.first_t = self.last_t = 0.0  # the first and last frames' times, in the stream's seconds

    def audio(self, item: tuple) -> None:
        if self.consumer is None:
            self.early_audio.append(item)
        else:
            self.consumer.put(item)

    def frame(self, rgb: np.ndarray, pts: int, t: float) -> None:
        t_in = time.perf_counter()  # latency: from here (the frame is ours) to the encoder queue
        if self.consumer is None:
            self.start_encoder(rgb.shape[1], rgb.shape[0])
        elif (rgb.shape[1], rgb.shape[0]) != (self.stats.width, self.stats.height):
            raise VideoError(
                f"the frame size changes from {self.stats.width}×{self.stats.height} to {rgb.shape[1]}×{rgb.shape[0]} "
                f"at {t - self.s.start_time:.2f} s: not supported (re-encode the video to one size first)"
            )
        if self.proc.index == 0:
            self.first_t = t
        self.last_t = t
        tracked, new_ids = self.proc.track(rgb, t - self.s.start_time)
        index = self.proc.index - 1
        if self.consent is not None and self.proc.tracker.detected:
            self.consent.observe(index, rgb, self.proc.tracker.detected)
        self.emit(self.look.push((rgb, pts, t, time.perf_counter() - t_in, index), tracked, new_ids, cut=self.proc.cut))
        self.consumer.check()

    def start_encoder(self, width: int, height: int) -> None:
        """The encoder, on the first frame (rotation applied: its size is the output's)."""
        _check_frame_pixels(width, height, self.opts.max_pixels)
        self.encoder = _Encoder(self.s, self.tmp, self.suffix, width, height, self.opts)
        self.stats.audio = self.encoder.audio_mode
        self.stats.width, self.stats.height = width, height
        w = self.encoder.writer
        if w.padded:
            self.stats.warnings.append(
                f"written as {w.width}×{w.height}, not {width}×{height}: {w.stream.codec_context.name} needs even sides "
                f"(one row or column copied); --codec mpeg4 or libvpx-vp9 keeps odd sizes"
            )
        self.consumer = Consumer(self.encoder.handle, self.encoder.finish, maxsize=queue_depth(width, height)).start()
        for item in self.early_audio:
            self.consumer.put(item)
        self.early_audio.clear()

    def emit(self, ready) -> None:
        for (rgb, pts, t, spent, index), tracked in ready:
            c0 = time.perf_counter()
            if self.consent is not None:
                tracked, _ = self.consent.select(index, tracked)  # from here on: the faces covered
            covered = self.proc.cover(rgb, tracked)
            for tf in tracked:
                self.first_faces.setdefault(tf.track_id, tf.face)
            if self.on_frame is not None:
                self.on_frame(rgb, covered, tracked, t)
            self.latencies.append(spent + time.perf_counter() - c0)  # detect/track + cover, not the look-back wait
            self.consumer.put(("v", covered, pts))
            self.stats.frames += 1
            if self.bar is not None:
                self.bar.update(1)

    def finish(self) -> VideoStats:
        """Flush the look-back and the encoder; the statistics of the whole job."""
        if self.consumer is None:
            cut = " in the chosen --start/--end range" if self.opts.start or self.opts.end else ""
            raise VideoError("no video frames decoded" + cut)
        self.check_complete()
        self.emit(self.look.flush())
        self.consumer.close()
        self.encoder.writer.close()
        st = self.stats
        st.detections = self.proc.passes
        st.shots = self.proc.shots
        st.tracks = len(self.first_faces)
        st.first_faces = list(self.first_faces.values())
        st.kept = self.consent.report() if self.consent is not None else []
        if self.latencies:
            lat = np.array(self.latencies) * 1000
            st.latency_ms_mean = float(lat.mean())
            st.latency_ms_p95 = float(np.percentile(lat, 95))
        return st

    def check_complete(self) -> None:
        """Fail a video that ended before its header says it does (a truncated download:
        time missing and, where the header counts them and nothing is cut, frames missing,
        so a long last frame is not taken for one), or that did not decode to the end;
        with --allow-partial, warn and say how much."""
        s = self.s
        end = min(s.expected_end, s.t_end) if s.expected_end is not None else None
        frame = 1 / float(s.rate)
        reached = self.last_t + frame
        counted = s.video.frames and not (self.opts.start or self.opts.end is not None)
        short = end is not None and end - reached > 3 * frame + 0.1 and not (counted and s.decoded >= s.video.frames)
        if not short and s.damage is None:
            return
        begin = max(s.t0, self.first_t) if s.t0 else self.first_t
        how = f"only {reached - begin:.2f} s" + (f" of its {end - begin:.2f} s" if short else "")
        why = f"damaged: {s.damage}" if s.damage else "truncated or damaged?"
        if not self.opts.allow_partial:
            raise VideoError(f"the video ends early: {how} could be decoded ({why}); nothing written (--allow-partial keeps what decodes)")
        self.stats.warnings.append(f"partial output: {how} written ({why})")

    def abort(self) -> None:
        if self.consumer is not None:
            self.consumer.abort()
        if self.encoder is not None:
            self.encoder.writer.abort()


def process_video(
    anonymizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: VideoOptions | None = None,
    on_frame: Callable[[np.ndarray, np.ndarray, list[TrackedFace], float], None] | None = None,
) -> VideoStats:
    """Anonymize `source` into `output` (atomically). Raises on any failure; then
    no output exists. `on_frame(original, covered, tracked, t)` is called for
    every output frame in order (benchmarks and tests use it)."""
    opts = options or VideoOptions()
    src, dst = Path(source), Path(output)
    t_start = time.perf_counter()
    s = _open_source(src, opts)
    out = AtomicPath(dst)
    bar = progress_bar(src.name, s.total) if opts.progress else None
    if opts.on_progress is not None:
        bar = ProgressCallback(opts.on_progress, s.total, bar)
    depth = queue_depth(s.video.codec_context.width, s.video.codec_context.height)
    reader = Producer(_demux(s, bool(opts.start), opts.allow_partial), maxsize=depth).start()
    job = _VideoJob(anonymizer, s, out.tmp, dst.suffix, opts, on_frame, bar)
    try:
        for item in reader:
            if item[0] == "a":
                job.audio(item)
            else:
                job.frame(item[1], item[2], item[3])
        stats = job.finish()
        out.commit()
    except BaseException:
        reader.close()
        job.abort()
        raise
    finally:
        reader.close()
        if bar is not None:
            bar.close()
        s.container.close()
        out.discard()
    stats.seconds = time.perf_counter() - t_start
    return stats
