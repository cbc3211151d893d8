"""The server's work, away from HTTP: the models (loaded once per process), a bounded
pool of workers with a bounded queue, one job per upload in its own temporary folder,
and the finished results waiting to be fetched."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..api import Anonymizer
from ..audit import FaceAudit
from ..detection import Face, FaceDetector
from ..files import FileOptions, FileResult, process_file
from ..generator import FaceGenerator, GeneratorUnavailable, load_tiers
from ..media import read_image, sniff
from ..video import DEFAULT_MAX_FRAME_PIXELS, VIDEO_EXTENSIONS
from .options import JobOptions, OptionError

#: The page's and the API's defaults; `anonyface serve` flags change them.
DEFAULT_MAX_UPLOAD_MB = 500
DEFAULT_WEB_MAX_PIXELS = 50_000_000  # photos: a 50 MP camera passes; the CLI allows 100


@dataclass
class ServerConfig:
    """Limits and access. `queue`: requests that may wait for a worker; one more is
    refused (503) rather than held without bound."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20
    max_pixels: int = DEFAULT_WEB_MAX_PIXELS
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    workers: int = 1
    queue: int = 32
    token: str | None = None
    result_ttl: float = 600.0  # seconds a finished result waits to be fetched
    temp_dir: str | None = None  # where the server's own temporary folder goes (None: the system's)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")  # Host headers accepted ("*": any)

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0:
            raise ValueError("workers must be at least 1 and queue at least 0")
        if self.max_pixels < 1 or self.max_frame_pixels < 1 or self.max_upload_bytes < 1:
            raise ValueError("limits must be positive")


class Busy(Exception):
    """Every worker busy and the queue full."""


class Cancelled(Exception):
    """The client went away or asked to stop."""


class NotMedia(ValueError):
    """An upload that is no photo or video we read."""


class Models:
    """The detector, the audit's detector and the generator, loaded once and shared by
    every request; each request gets its own light `Anonymizer` around them (its own
    options, its own fake identities). onnxruntime sessions may run from several threads."""

    def __init__(self, detector: FaceDetector | None = None, audit: FaceAudit | None = None,
                 generator: FaceGenerator | dict | None | bool = True) -> None:
        self.detector = detector or FaceDetector()
        self.audit = audit or FaceAudit()
        if generator is True:
            try:
                generator = load_tiers("auto")  # quality for photos, fast for video and the webcam
            except GeneratorUnavailable:
                generator = None
        self.generator = generator or None

    @classmethod
    def from_anonymizer(cls, anon: Anonymizer) -> "Models":
        """Share an already loaded Anonymizer's models (tests, embedding)."""
        synth = anon._strategies.get("synth")
        gens = (getattr(synth, "generators", None) or synth.generator) if synth is not None else True
        return cls(anon.detector, anon.audit or FaceAudit(), gens)

    @property
    def methods(self) -> list[str]:
        from ..api import METHODS

        return [m for m in METHODS if m != "synth" or self.generator is not None]

    def detector_for(self, threshold: float) -> FaceDetector:
        det = copy.copy(self.detector)  # the same session, this request's threshold
        det.threshold = threshold
        return det

    def anonymizer(self, opts: JobOptions, max_pixels: int) -> Anonymizer:
        if opts.method == "synth" and self.generator is None:
            raise OptionError("synth needs the generator's weights, which are not installed here; choose blur, pixelate or solid")
        return Anonymizer(
            method=opts.method, threshold=opts.threshold, seed=opts.seed, generator=self.generator,
            detector=self.detector_for(opts.threshold), max_pixels=max_pixels, settings=opts.settings,
            audit=self.audit if opts.audit else False, unsafe=opts.unsafe,
        )


class WorkerPool:
    """`workers` threads; at most `queue` more jobs wait. Counts what runs and waits."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.capacity = workers, workers + queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="anonyface-web")
        self._lock = threading.Lock()
        self.active = 0  # running or waiting
        self.done = 0

    def submit(self, fn: Callable, *args) -> Future:
        with self._lock:
            if self.active >= self.capacity:
                raise Busy(f"the server is busy ({self.active} files in progress or waiting); try again in a moment")
            self.active += 1
        fut = self._executor.submit(fn, *args)
        fut.add_done_callback(self._finished)
        return fut

    def _finished(self, _fut: Future) -> None:
        with self._lock:
            self.active -= 1
            self.done += 1

    @property
    def waiting(self) -> int:
        return max(0, self.active - self.workers)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Upload:
    path: Path  # in the job's folder, with a suffix that says photo or video
    name: str  # the name the client gave, for the download's name
    kind: str  # "image" or "video"


def classify(head: bytes, name: str) -> tuple[str, str]:
    """(kind, suffix for the stored input) from the first bytes; the name's suffix only
    where it agrees. Raises `NotMedia` in plain words."""
    kind = sniff(head)
    if kind is None:
        raise NotMedia(
            "this file is not a photo or a video that anonyface can read "
            "(photos: JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP, GIF; videos: MP4, MOV, MKV, WebM, AVI)"
        )
    suffix = Path(name).suffix.lower()
    if kind == "video" and suffix not in VIDEO_EXTENSIONS:
        if head.startswith(b"\x1aE\xdf\xa3"):
            suffix = ".mkv"
        elif head[:4] == b"RIFF":
            suffix = ".avi"
        else:
            suffix = ".mov" if head[8:10] == b"qt" else ".mp4"
    elif kind == "image":
        suffix = ""  # the decoder reads what it is; the output keeps that format
    return kind, suffix


_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                ".mkv": "video/x-matroska", ".avi": "video/x-msvideo"}
_PHOTO_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif",
                 "AVIF": ".avif", "HEIF": ".heic"}


@dataclass
class Output:
    """A finished file: where it is, what to call it, its type and the report."""

    path: Path
    filename: str
    media_type: str
    report: dict


def describe_output(path: Path, upload: Upload, result: FileResult) -> Output:
    stem = Path(upload.name).stem or "upload"
    if upload.kind == "video":
        suffix = path.suffix
        media = _VIDEO_TYPES.get(suffix, "application/octet-stream")
    else:
        with Image.open(path) as im:
            fmt = im.format or "PNG"
        suffix = _PHOTO_SUFFIX.get(fmt, ".img")
        media = Image.MIME.get(fmt, "application/octet-stream")
    return Output(path, f"{stem}_anonymized{suffix}", media, public_report(result, upload.name))


def public_report(result: FileResult, name: str) -> dict:
    """The CLI's JSON for one file, without the server's own paths."""
    d = result.to_dict()
    d["file"], d["output"] = name, None
    d["faces_found"] = len(result.faces) + len(result.audited)
    return d


def friendly(message: str) -> str:
    """Error text meant for the CLI, said for a web user."""
    return message.replace("raise it with --max-pixels", "the server's owner can raise it (anonyface serve --max-pixels)")


class Job:
    """One upload: its temporary folder, the cancel switch, and progress."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        self.cancel = threading.Event()
        self.future: Future | None = None

    def release(self) -> None:
        """Ask the work to stop and remove the folder once no worker uses it."""
        self.cancel.set()
        if self.future is None or self.future.done():
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            self.future.add_done_callback(lambda _f: shutil.rmtree(self.dir, ignore_errors=True))


def run_anonymize(anon: Anonymizer, upload: Upload, dst_dir: Path, files: FileOptions, cancel: threading.Event,
                  progress: Callable[[int, int | None], None] | None = None) -> Output:
    """The worker's part: the file through `anonyface.files.process_file`, as the CLI does."""
    if cancel.is_set():
        raise Cancelled("cancelled")

    def on_progress(n: int, total: int | None) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(n, total)

    files = dataclasses.replace(files, video=dataclasses.replace(files.video, progress=False, on_progress=on_progress))
    dst = dst_dir / ("result" + (upload.path.suffix if upload.kind == "video" else ""))
    result = process_file(anon, upload.path, dst, files)
    if cancel.is_set():
        dst.unlink(missing_ok=True)
        raise Cancelled("cancelled")
    return describe_output(dst, upload, result)


def run_detect(models: Models, upload: Upload, threshold: float, max_pixels: int) -> dict:
    picture = read_image(upload.path, max_pixels)
    faces: list[Face] = models.detector_for(threshold).detect(picture.rgb)
    w, h = picture.size
    return {"file": upload.name, "width": w, "height": h, "faces": [f.to_dict() for f in faces]}


@dataclass
class _Stored:
    output: Output
    created: float = field(default_factory=time.monotonic)


class ResultStore:
    """Finished files of streamed (server-sent events) requests, fetched once by id;
    a result not fetched within `ttl` seconds is deleted."""

    def __init__(self, root: Path, ttl: float) -> None:
        self.root, self.ttl = root, ttl
        self.root.mkdir(parents=True, exist_ok=True)
        self._items: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    def put(self, output: Output) -> str:
        key = uuid.uuid4().hex
        dst = self.root / key
        os.replace(output.path, dst)
        with self._lock:
            self._items[key] = _Stored(dataclasses.replace(output, path=dst))
        return key

    def take(self, key: str) -> Output | None:
        """The result, removed from the store; the caller opens and unlinks its file."""
        self.expire()
        with self._lock:
            item = self._items.pop(key, None)
        return item.output if item else None

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [k for k, v in self._items.items() if now - v.created > self.ttl]
            gone = [self._items.pop(k) for k in old]
        for item in gone:
            item.output.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._items)


class LiveSession:
    """One browser camera: its frames go through one `FrameProcessor`, as in `anonyface
    live`, so that faces are tracked between frames (kept covered for a few detection
    passes when the detector misses them) and keep one fake identity."""

    def __init__(self, anon: Anonymizer, opts: JobOptions) -> None:
        from ..video import FrameProcessor

        self.proc = FrameProcessor(anon, opts.files.video)
        self.quality = min(opts.files.quality, 90)
        self.started = self.used = time.monotonic()
        self.lock = threading.Lock()  # one frame at a time, in order

    def frame(self, data: bytes, max_pixels: int) -> tuple[bytes, int]:
        import io

        picture = read_image(data, max_pixels)
        with self.lock:
            self.used = time.monotonic()
            tracked, _ = self.proc.track(picture.rgb, self.used - self.started)
            out = self.proc.cover(picture.rgb, tracked)
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=self.quality)  # pixels only: no metadata
        return buf.getvalue(), len(tracked)


class LiveSessions:
    """At most `limit` cameras at once; one idle for `idle` seconds is ended."""

    def __init__(self, limit: int = 4, idle: float = 30.0) -> None:
        self.limit, self.idle = limit, idle
        self._items: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], LiveSession]) -> LiveSession:
        now = time.monotonic()
        with self._lock:
            for k in [k for k, s in self._items.items() if now - s.used > self.idle]:
                del self._items[k]
            session = self._items.get(key)
            if session is None:
                if len(self._items) >= self.limit:
                    raise Busy(f"{self.limit} cameras are already live on this server; stop one first")
                session = self._items[key] = make()
            return session

    def end(self, key: str) -> bool:
        with self._lock:
            return self._items.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._items)
