"""One file in, one file out: the job the command line, the API and the evaluation share.

A job reads a photo or a video (chosen by the file's suffix), or a photo from
standard input, anonymizes it and writes the output atomically (a failure
leaves nothing behind), never over its own input unless asked. `process_file`
raises on failure; `run_job` turns every per-file failure into a `FileResult`
with an error, so that a batch goes on.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .boxes import BoxesFile
from .detection import Face
from .media import FORMATS, IMAGE_EXTENSIONS, ImageError, encode_image, format_for, read_image, read_input, to_pil, write_atomic
from .video import VIDEO_EXTENSIONS, VideoError, VideoOptions, VideoStats

#: Every file suffix a folder or glob run picks up.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass
class FileResult:
    """What happened to one file: where it went, which faces were covered (one per
    track for a video) and, for a video, its statistics."""

    source: str
    output: str | None
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] | None = None
    error: str | None = None
    video: VideoStats | None = None
    audited: list[Face] = field(default_factory=list)  # faces the audit found uncovered, and blurred
    skipped: str | None = None  # why the file was passed over (no output, no error)
    note: str | None = None  # something the user should know (e.g. written through a link)
    warnings: list[str] = field(default_factory=list)  # done, but the user should know (partial, resized)
    kept: list | None = None  # consent on: the kept faces (photos: consent.Decision; video: one dict per kept track)

    def to_dict(self) -> dict:
        d = {
            "file": self.source,
            "output": self.output,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "faces": [f.to_dict() for f in self.faces],
            "error": self.error,
            "skipped": self.skipped,
            "audit": [f.to_dict() for f in self.audited],
        }
        if self.video is not None:
            v = self.video
            d["video"] = {"frames": v.frames, "shots": v.shots, "tracks": v.tracks, "detections": v.detections, "audio": v.audio, "seconds": round(v.seconds, 3)}
        if self.warnings:
            d["warnings"] = self.warnings
        if self.kept is not None:
            d["kept"] = [k if isinstance(k, dict) else k.to_dict() for k in self.kept]
        return d


@dataclass
class FileOptions:
    """How files are written. `format`: write photos in this format (an extension
    without the dot, e.g. "png") instead of the input's or the output name's."""

    keep_metadata: bool = False
    overwrite_input: bool = False
    quality: int = 95
    format: str | None = None
    skip_existing: bool = False
    video: VideoOptions = field(default_factory=VideoOptions)
    boxes: BoxesFile | None = None  # --boxes: faces given per file (photos only)
    boxes_mode: str = "add"  # "add": with our detector's; "only": instead of it
    boxes_single: bool = False  # one input: a boxes file with a single entry applies to it whatever its name
    keep_boxes: list | None = None  # faces chosen by hand to keep, [x1, y1, x2, y2] each (photos only; the web page's clicks)

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be between 1 and 100")
        if self.format is not None and f".{self.format.lower()}" not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}")


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def process_file(anonymizer, source: str | os.PathLike, output: str | os.PathLike | None, options: FileOptions | None = None) -> FileResult:
    """Anonymize one photo or video file into `output` (None: standard output), atomically.
    Raises on failure; then nothing is written."""
    opts = options or FileOptions()
    src = Path(source)
    if output is None:
        return _process_to_stdout(anonymizer, src, opts)
    dst = Path(output)
    check_output_name(src, dst, opts)
    if opts.boxes is not None and is_video(src):
        raise ValueError("--boxes works on photos only (--json lists one box per video track, not per frame); "
                         "anonymize the video without --boxes")
    if opts.keep_boxes and is_video(src):
        raise ValueError("faces chosen by hand (keep_boxes) are kept in photos only; for a video, keep people with "
                         "reference photos (--keep)")
    note = None
    if dst.exists() and same_file(src, dst):
        if not opts.overwrite_input:
            raise ValueError("output would overwrite the input (use --in-place to allow it)")
        dst, note = _in_place_target(dst)
    result = _process_video_file(anonymizer, src, dst, opts) if is_video(src) else _process_photo(anonymizer, src, dst, opts)
    result.note = note
    return result


def _in_place_target(path: Path) -> tuple[Path, str | None]:
    """Where an in-place output really goes: through a symbolic link to the file behind
    it (replacing the link would leave the face in that file). A file with other hard
    links is refused: a new file under this name would leave the face under the others."""
    note = None
    if path.is_symlink():
        real = path.resolve()
        path, note = real, f"a link: anonymized the file it points to, {real}"
    links = path.stat().st_nlink
    if links > 1:
        raise ValueError(f"has {links} hard links: anonymizing it in place would leave the face under the other names; "
                         "anonymize a copy (-o) instead")
    return path, note


def _process_photo(anonymizer, src: Path, dst: Path, opts: FileOptions) -> FileResult:
    boxes = given_boxes(src, opts)
    picture = read_image(src, anonymizer.max_pixels)
    c = _cover(anonymizer, picture, boxes, opts, str(src))
    write_atomic(dst, encode_output(to_pil(picture, c.image), picture, dst, opts))
    return FileResult(str(src), str(dst), c.faces, picture.size, audited=c.caught, kept=c.kept)


def given_boxes(src: Path | None, opts: FileOptions) -> list | None:
    """The faces `--boxes` lists for this photo (None without --boxes, or in "add" mode when
    the file does not list it); in "only" mode a photo it does not list fails: covering
    nothing would leak every face in it."""
    if opts.boxes is None:
        return None
    faces = opts.boxes.faces_for(src, opts.boxes_single)
    if faces is None and opts.boxes_mode == "only":
        raise ValueError(f"--boxes {opts.boxes.path} lists no faces for this file (--boxes-mode only needs an entry for every input)")
    return faces


def _cover(anonymizer, picture, boxes: list | None, opts: FileOptions, label: str):
    from .boxes import BoxesError, to_faces

    h, w = picture.rgb.shape[:2]
    keep = None
    try:
        if boxes is not None:
            boxes = to_faces(boxes, w, h, f"--boxes {opts.boxes.path} ({label})")
        if opts.keep_boxes:
            keep = to_faces(opts.keep_boxes, w, h, "keep_boxes")  # a box off this picture points at no face in it
    except BoxesError as e:
        raise ValueError(str(e)) from None
    return anonymizer.cover(picture.rgb, boxes, opts.boxes_mode, keep_boxes=keep)


def check_output_name(src: Path, dst: Path, opts: FileOptions) -> None:
    """Refuse an output whose extension says another format than what would be written
    (a JPEG inside a .gif): a video needs a video extension, a photo one of ours agreeing
    with --format, or none or the input's own (then it is written in the input's format)."""
    suffix = dst.suffix.lower()
    if is_video(src):
        if suffix not in VIDEO_EXTENSIONS:
            raise ValueError(f"cannot write a video as {dst.name}: give it one of {' '.join(sorted(VIDEO_EXTENSIONS))}")
        return
    if suffix and suffix not in FORMATS and (opts.format or suffix != src.suffix.lower()):
        raise ValueError(f"cannot write a photo as {dst.name}: {suffix} is not a format anonyface writes ({' '.join(sorted(FORMATS))})")
    if suffix and opts.format and FORMATS[suffix] != _format(opts):
        raise ValueError(f"--format {opts.format} does not match the output name {dst.name}")


def _process_to_stdout(anonymizer, src: Path, opts: FileOptions) -> FileResult:
    """A file to standard output (`-o -`): a photo in its own format (or --format); a
    video is finished in a temporary folder first, so only a whole video is written."""
    if is_video(src):
        with tempfile.TemporaryDirectory(prefix="anonyface-") as tmp:
            result = _process_video_file(anonymizer, src, Path(tmp) / f"out{src.suffix.lower()}", opts)
            with open(result.output, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        result.output = "<stdout>"
        return result
    return process_stream(anonymizer, src, None, opts)


def encode_output(img, picture, output: str | os.PathLike | None, options: FileOptions) -> bytes:
    """The bytes of an anonymized photo: in `--format`, else the output name's format,
    else the input's; metadata dropped unless kept."""
    fmt = _format(options) or (format_for(output) if output is not None else None) or picture.format
    return encode_image(img, fmt, picture.info, options.keep_metadata, options.quality)


def _process_video_file(anonymizer, src: Path, dst: Path, opts: FileOptions) -> FileResult:
    import av

    from .video import process_video

    video_opts = dataclasses.replace(opts.video, keep_metadata=opts.keep_metadata)
    try:
        stats = process_video(anonymizer, src, dst, video_opts)
    except av.FFmpegError as e:
        raise VideoError(f"video error: {e}") from None
    return FileResult(str(src), str(dst), stats.first_faces, (stats.width, stats.height), video=stats, warnings=list(stats.warnings),
                      kept=stats.kept if getattr(anonymizer, "consent", None) is not None else None)


def process_stream(anonymizer, data: bytes | Path, output: str | os.PathLike | None, options: FileOptions | None = None) -> FileResult:
    """A photo given as bytes (standard input) or a path into `output`, or to standard
    output when None."""
    opts = options or FileOptions()
    if output is not None:
        check_output_name(Path("-"), Path(output), opts)
    label = str(data) if isinstance(data, Path) else "<stdin>"
    boxes = given_boxes(data if isinstance(data, Path) else None, opts)
    picture = read_image(data, anonymizer.max_pixels)
    c = _cover(anonymizer, picture, boxes, opts, label)
    encoded = encode_output(to_pil(picture, c.image), picture, output, opts)
    if output is None:
        sys.stdout.buffer.write(encoded)
        sys.stdout.buffer.flush()
    else:
        write_atomic(output, encoded)
    return FileResult(label, str(output) if output is not None else "<stdout>", c.faces, picture.size, audited=c.caught, kept=c.kept)


def run_job(anonymizer, source: Path | None, output: Path | None, options: FileOptions, label: str | None = None) -> FileResult:
    """One job of a batch (`source` None: standard input; `output` None: standard output).
    Never raises for a bad file: the error is in the result, and the batch goes on."""
    label = label or (str(source) if source is not None else "<stdin>")
    try:
        if source is None:
            result = process_stream(anonymizer, read_input(sys.stdin.buffer, anonymizer.max_pixels), output, options)
            result.source = label
            return result
        if options.skip_existing and output is not None and output.exists() and output != source:
            return FileResult(label, None)
        return process_file(anonymizer, source, output, options)
    except (ImageError, ValueError, OSError) as e:
        return FileResult(label, None, error=str(e))
    except Exception as e:  # one bad file must not stop the batch
        return FileResult(label, None, error=f"unexpected error: {type(e).__name__}: {e}")


def _format(opts: FileOptions) -> str | None:
    return FORMATS[f".{opts.format.lower()}"] if opts.format else None
