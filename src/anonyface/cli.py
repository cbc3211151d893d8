"""Command line: `anonyface INPUT... [-o OUT]`."""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__, cluster
from .anonymizers import CoverSettings
from .api import DEFAULT_METHOD, METHODS
from .generator import TIERS
from .detection import DEFAULT_THRESHOLD
from .files import MEDIA_EXTENSIONS, FileOptions, FileResult, is_video, run_job
from .media import DEFAULT_MAX_PIXELS, FORMATS, TEMP_MARK, AtomicPath, remove_stale_temps, sniff, write_atomic
from .video import DEFAULT_MAX_FRAME_PIXELS, TrackingOptions, VideoOptions

SUFFIX = "_anonymized"

EPILOG = f"""\
where outputs go:
  anonyface photo.jpg                 -> photo{SUFFIX}.jpg beside it
  anonyface photo.jpg -o out.png      -> out.png (format from the extension)
  anonyface photos/ -o clean/         -> clean/ mirrors the tree of photos/
  anonyface photos/                   -> photos{SUFFIX}/
  anonyface 'shots/*.jpg' a.png -o d/ -> d/ (globs are expanded for you too)
  anonyface - < in.jpg > out.jpg      -> standard input to standard output
  anonyface clip.mp4 -o - | ...       -> standard output (any single input)
  anonyface archive/ -o clean/ --ray  -> on Ray, resumable (docs/cluster.md)
  Inputs are never overwritten unless you pass --in-place.

privacy:
  Metadata that can identify (EXIF with GPS, camera serials and thumbnails, XMP,
  IPTC, comments, PNG text) is removed unless --keep-metadata; colour profiles
  are kept. Outputs are written atomically: a file that fails leaves nothing.

video: a truncated or damaged video fails (--allow-partial keeps what decodes);
  frames over 4096x2160 need --max-pixels; without a terminal, progress is a
  line every 10 s. SIGTERM is Ctrl-C: the file in progress is not written.

a web page and HTTP API on this machine: anonyface serve (pip install "anonyface[web]").

exit status: 0 all files done, 1 some file failed, 2 bad usage.

examples:
  anonyface group.jpg --method pixelate --blocks 10
  anonyface holiday/ -o shareable/ --json faces.json
  anonyface scan.tif --threshold 0.3 --mask-scale 1.5 --shape box
"""


@dataclass
class Job:
    source: Path | None  # None: standard input
    output: Path | None  # None: standard output
    label: str


_COVER = CoverSettings()
_VIDEO = VideoOptions()
_FILES = FileOptions()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonyface",
        description="Anonymize every face in photos and videos: detect each face (RetinaFace) and paint "
        "a new face of nobody over it (synth, the default), or blur, pixelate or fill it; identifying "
        "metadata is stripped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo or video files, folders (recursive) or glob patterns; - for standard input")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input) or folder; - for standard output")
    g = p.add_argument_group("how faces are covered")
    g.add_argument("-m", "--method", choices=METHODS, default=DEFAULT_METHOD, help=f"synth paints a realistic face of nobody (faces under {_COVER.synth_min_size:g} px are pixelated, uncertain ones blurred); blur, pixelate and solid cover the face (default: %(default)s)")
    g.add_argument("--seed", type=int, metavar="N", help="synth: make the new faces reproducible")
    g.add_argument("--tier", choices=TIERS, default="auto", help="synth: which generator paints: auto = the 128-px quality generator for photos, the 64-px fast one for video (real time); fast or quality for everything (default: %(default)s)")
    add_cover_arguments(g)
    g = p.add_argument_group("detection")
    g.add_argument("-t", "--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T", help="minimum detection score in [0, 1]; lower finds more faces and more false alarms (default: %(default)s)")
    g.add_argument("--unsafe", action="store_true", help="allow settings that leave faces recognisable (a threshold above 0.7, a weak blur, a coarse mosaic, a mask smaller than the face); for experts who mean it")
    g.add_argument("--no-audit", dest="audit", action="store_false", help="photos: skip the second-detector audit (an independent detector checks each output and blurs any face left uncovered)")
    add_consent_arguments(p)
    g = p.add_argument_group("files")
    g.add_argument("--format", choices=sorted({e.lstrip('.') for e in FORMATS}), help="write every output in this format instead of the input's")
    g.add_argument("--quality", type=int, default=_FILES.quality, metavar="Q", help="JPEG/WebP quality (default: %(default)s)")
    g.add_argument("--keep-metadata", action="store_true", help="keep EXIF (orientation reset, GPS included!), XMP, comments and PNG text")
    g.add_argument("--in-place", action="store_true", help="allow outputs to replace their inputs")
    g.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist alone (resume a batch)")
    g.add_argument("--max-pixels", type=int, metavar="N", help=f"refuse larger photos and video frames (default: {DEFAULT_MAX_PIXELS} for photos, {DEFAULT_MAX_FRAME_PIXELS} = 4096×2160 for video frames; README: memory)")
    g.add_argument("--json", metavar="FILE", help="write every detection (file, box, landmarks, score) as JSON; - for standard output")
    _add_video_arguments(p)
    cluster.add_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--version", action="version", version=f"anonyface {__version__}")
    return p


def add_consent_arguments(p: argparse.ArgumentParser) -> None:
    """--keep (faces of people who consented) and --boxes (your own detections); docs/consent.md."""
    g = p.add_argument_group(
        "consent and your own boxes (docs/consent.md)",
        "--keep needs face recognition: pip install 'anonyface[keep]'. A face is left untouched only when it clearly "
        "matches a reference; every other face is covered. Measured on LFW: a stranger is kept in 0.024 % of trials (per reference photo).",
    )
    g.add_argument("--keep", action="extend", nargs="+", default=[], metavar="FACE.jpg", help="reference photo(s) of people who consented, one face each: their faces are left untouched (put it after the inputs, or end its list with --)")
    g.add_argument("--keep-dir", action="append", default=[], metavar="DIR", help="every photo in DIR is a --keep reference")
    g.add_argument("--keep-threshold", type=float, metavar="D", help="largest face-embedding distance kept (default: the measured one; above 0.6 needs --unsafe)")
    g.add_argument("--boxes", metavar="FILE.json", help="faces you already have, in the schema --json writes (photos only)")
    g.add_argument("--boxes-mode", choices=("add", "only"), help="add: cover our detector's faces and the file's (default); only: just the file's (the audit still runs unless --no-audit)")


def add_cover_arguments(g) -> None:
    """The covering options, with `CoverSettings`' defaults."""
    g.add_argument("--mask-scale", type=float, default=_COVER.mask_scale, metavar="S", help="size of the covered area relative to the detected face box; 1.3 covers forehead to chin (default: %(default)s)")
    g.add_argument("--shape", choices=("ellipse", "box"), default=_COVER.shape, help="shape of the covered area (default: %(default)s)")
    g.add_argument("--feather", type=float, default=_COVER.feather, metavar="F", help="soft edge outside the covered area, as a fraction of its size; 0 for a hard edge (default: %(default)s)")
    g.add_argument("--blocks", type=int, default=_COVER.blocks, metavar="N", help="pixelate: mosaic cells across a face (default: %(default)s; fewer is safer)")
    g.add_argument("--blur-strength", type=float, default=_COVER.blur_strength, metavar="K", help="blur: Gaussian sigma as a fraction of the face size (default: %(default)s)")
    g.add_argument("--color", default=",".join(map(str, _COVER.color)), metavar="R,G,B", help="solid: fill colour (default: %(default)s)")
    g.add_argument("--expression", action="store_true", help="synth: the new face follows the person's mouth, eyes, smile and brows (talking, blinking); off by default because face recognition then re-identifies more painted faces (docs/expression.md)")


def add_tracking_arguments(g, lookback: bool = True) -> None:
    """How faces are followed through frames, with `TrackingOptions`' defaults."""
    g.add_argument("--detect-every", type=int, default=_VIDEO.detect_every, metavar="N", help="run the detector on every N-th frame, track in between (default: %(default)s)")
    g.add_argument("--detect-size", type=int, metavar="PX", help="long side of the fast detection pass (default: a third of the frame's, at least 320)")
    g.add_argument("--fine-every", type=int, default=_VIDEO.fine_every, metavar="K", help="every K-th detection pass looks at the full resolution (multi-scale, tiled) for small faces; 1 always, 0 never (default: %(default)s)")
    g.add_argument("--hold", type=int, default=_VIDEO.max_missed, metavar="K", help="keep covering a tracked face for K detection passes after the detector loses it (default: %(default)s)")
    if lookback:
        g.add_argument("--lookback", type=int, default=_VIDEO.lookback, metavar="F", help="also cover a face in the F frames before it was first detected (default: %(default)s)")
    g.add_argument("--no-smooth", dest="smooth", action="store_false", help="no temporal smoothing of the face boxes")


def tracking_options(args) -> TrackingOptions:
    return TrackingOptions(
        detect_every=args.detect_every, detect_size=args.detect_size, fine_every=args.fine_every,
        max_missed=args.hold, lookback=getattr(args, "lookback", _VIDEO.lookback), smooth=args.smooth,
    )


def _add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "video (.mp4 .mov .mkv .webm .avi .m4v; see docs/video.md)",
        "Audio is copied untouched, timestamps (variable frame rate, start offsets) are kept, "
        "rotation is applied and the output written upright. `anonyface live --help` for webcams.",
    )
    g.add_argument("--codec", metavar="NAME", help="video encoder (default: libx264; libvpx-vp9 for .webm, mpeg4 for .avi)")
    g.add_argument("--crf", type=int, metavar="N", help="quality, lower is better (default: 20 for libx264, 32 for VP9, 24 for libx265)")
    g.add_argument("--preset", metavar="NAME", help="x264/x265 speed preset (default: veryfast for x264, medium for x265)")
    g.add_argument("--start", type=float, metavar="SEC", help="process from this time on (seconds)")
    g.add_argument("--end", type=float, metavar="SEC", help="stop at this time (seconds)")
    g.add_argument("--keep-audio", dest="keep_audio", action="store_true", default=_VIDEO.keep_audio, help="copy the audio streams untouched (default)")
    g.add_argument("--no-audio", dest="keep_audio", action="store_false", help="drop the audio")
    g.add_argument("--allow-partial", action="store_true", help="a truncated or damaged video: keep what decodes, with a warning (default: the file fails)")
    add_tracking_arguments(g)


def _file_options(args) -> FileOptions:
    video = VideoOptions(
        **vars(tracking_options(args)), codec=args.codec, crf=args.crf, preset=args.preset, start=args.start,
        end=args.end, keep_audio=args.keep_audio, keep_metadata=args.keep_metadata, progress=not args.quiet,
        allow_partial=args.allow_partial, max_pixels=args.max_pixels or DEFAULT_MAX_FRAME_PIXELS,
    )
    return FileOptions(
        keep_metadata=args.keep_metadata, overwrite_input=args.in_place, quality=args.quality,
        format=args.format, skip_existing=args.skip_existing, video=video,
    )


def _option_names(text: str) -> str:
    for name in ("mask_scale", "blur_strength", "blocks", "feather", "threshold", "unsafe=True / "):
        text = text.replace(name, "" if name.startswith("unsafe") else "--" + name.replace("_", "-"))
    return text


def cover_settings(args, parser: argparse.ArgumentParser) -> CoverSettings:
    """The covering options, checked: refused when they would leave faces recognisable,
    unless --unsafe."""
    try:
        color = _parse_color(args.color)
    except ValueError:
        parser.error(f"--color must be R,G,B with values 0-255, got {args.color!r}")
    try:
        settings = CoverSettings(
            mask_scale=args.mask_scale, shape=args.shape, feather=args.feather, blocks=args.blocks,
            blur_strength=args.blur_strength, color=color, synth_expression=getattr(args, "expression", False),
        )
    except ValueError as e:
        parser.error(_option_names(str(e)))
    problems = [] if getattr(args, "unsafe", False) else settings.unsafe_choices(getattr(args, "threshold", None))
    if problems:
        parser.error(_option_names("; ".join(problems)) + " (add --unsafe if you really mean it)")
    return settings


def _parse_color(text: str) -> tuple[int, int, int]:
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise ValueError
    return parts[0], parts[1], parts[2]


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _output_name(src: Path, fmt_ext: str | None) -> str:
    ext = fmt_ext or src.suffix
    return src.stem + ext


def _empty_folder_reason(folder: Path, out_resolved: Path | None) -> str:
    if out_resolved is not None and (out_resolved == folder.resolve() or out_resolved in folder.resolve().parents):
        return "the output folder is this folder (or holds it): its files would be taken for our own outputs; give another -o, or --in-place"
    return f"no photos or videos in this folder (looked for {' '.join(sorted(MEDIA_EXTENSIONS))})"


def walk_folder(root: Path, exclude: Path | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every file under `root` to anonymize, and (file, reason) for every file passed over.

    A file is taken when its suffix is a photo or video suffix, or when its first bytes
    say it is one (a phone photo saved as `.jfif`, a JPEG without an extension); hidden
    files and folders are taken too (nothing is skipped silently, least of all with
    --in-place). Passed over: files that are not media, our own temporary files, and
    anything inside `exclude` (the output folder).
    """
    take: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        if exclude is not None and exclude in f.resolve().parents:
            continue  # our own outputs: never re-processed
        if TEMP_MARK in f.name:
            skipped.append((str(f), "an unfinished temporary file of anonyface"))
        elif f.suffix.lower() in MEDIA_EXTENSIONS or _looks_like_media(f):
            take.append(f)
        else:
            skipped.append((str(f), "not a photo or video"))
    return take, skipped


def _looks_like_media(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(16)) is not None
    except OSError:
        return True  # unreadable: let the job say why, as a failure


def plan_jobs(inputs: list[str], output: str | None, fmt: str | None, in_place: bool) -> tuple[list[Job], list[tuple[str, str]], list[tuple[str, str]]]:
    """Turn the command line's inputs into (source, output) jobs, errors for inputs that
    name nothing, and (file, reason) for files in folders that were passed over."""
    skipped: list[tuple[str, str]] = []
    fmt_ext = f".{fmt}" if fmt else None
    jobs: list[Job] = []
    errors: list[tuple[str, str]] = []
    out_dir = Path(output) if output and output != "-" else None
    single_file_out = (
        output is not None
        and output != "-"
        and len(inputs) == 1
        and not _is_glob(inputs[0])
        and inputs[0] != "-"
        and not Path(inputs[0]).is_dir()
        and not Path(output).is_dir()
        and not output.endswith(("/", os.sep))
    )
    out_resolved = out_dir.resolve() if out_dir else None

    def add_file(src: Path, rel: Path | None, root_default: Path | None) -> None:
        ext = None if is_video(src) else fmt_ext  # --format is for photos
        if output == "-":
            dst = None  # standard output
        elif in_place:
            dst = src if not ext else src.with_suffix(ext)
        elif single_file_out:
            dst = Path(output)
        elif out_dir is not None:
            dst = out_dir / (rel.parent if rel else Path()) / _output_name(src, ext)
        elif root_default is not None:
            dst = root_default / rel.parent / _output_name(src, ext)
        else:
            dst = src.with_name(src.stem + SUFFIX + (ext or src.suffix))
        jobs.append(Job(src, dst, str(src)))

    for arg in inputs:
        if arg == "-":
            if output not in (None, "-") and not single_file_out and len(inputs) > 1:
                errors.append(("-", "standard input can only be combined with -o FILE or -o -"))
                continue
            dst = None if output in (None, "-") else Path(output)
            jobs.append(Job(None, dst, "<stdin>"))
            continue
        paths = [Path(p) for p in sorted(glob.glob(arg, recursive=True))] if _is_glob(arg) else [Path(arg)]
        if not paths or not paths[0].exists():
            errors.append((arg, "no such file or directory" if not _is_glob(arg) else "pattern matches nothing"))
            continue
        for path in paths:
            if path.is_dir():
                root_default = None if out_dir or in_place else path.with_name(path.name + SUFFIX)
                files, passed = walk_folder(path, out_resolved)
                skipped += passed
                for f in files:
                    add_file(f, f.relative_to(path), root_default)
                if not files:
                    errors.append((str(path), _empty_folder_reason(path, out_resolved)))
            else:
                add_file(path, None, None)
    seen: dict[Path, str] = {}
    unique: list[Job] = []
    for job in jobs:
        if job.output is not None:
            key = job.output.resolve()
            if key in seen:
                errors.append((job.label, f"output {job.output} would also be written from {seen[key]}"))
                continue
            seen[key] = job.label
        unique.append(job)
    return unique, errors, skipped


def report_planned(errors: list[tuple[str, str]], skipped: list[tuple[str, str]], quiet: bool) -> list[FileResult]:
    """The inputs that failed or were skipped while planning, said on stderr and kept as
    results for the end summary (the local run and the Ray run alike)."""
    for src, msg in errors:
        print(f"anonyface: {src}: {msg}", file=sys.stderr)
    if not quiet:
        for src, why in skipped:
            print(f"anonyface: {src}: skipped ({why})", file=sys.stderr)
    return [FileResult(src, None, error=msg) for src, msg in errors] + [FileResult(src, None, skipped=why) for src, why in skipped]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "live":  # `anonyface live [SOURCE] ...`: its own parser
        from .live import main as live_main

        return live_main(argv[1:])
    if argv and argv[0] == "serve":  # `anonyface serve`: the web page and the HTTP API
        from .web.serve import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(cluster.ray_argv(argv))
    settings = cover_settings(args, parser)
    _check_numbers(args, parser)
    try:
        options = _file_options(args)
    except ValueError as e:
        parser.error(str(e))
    if args.ray is not None:  # the same job on a Ray cluster, resumable (cluster.py)
        if args.keep or args.keep_dir or args.boxes:  # never silently drop what the user asked for
            parser.error("--keep, --keep-dir and --boxes are not available with --ray yet: run them locally")
        return cluster.main(args, parser, settings, options)

    jobs, errors, skipped = plan_jobs(args.inputs, args.output, args.format, args.in_place)
    if args.output == "-" and len(jobs) > 1:
        parser.error("-o - (standard output) takes a single input")
    if args.output is not None and args.output != "-" and len(jobs) > 1 and Path(args.output).is_file():
        parser.error(f"-o {args.output} is a file, but there are {len(jobs)} inputs: give a folder")
    _check_json(args, jobs, parser)
    _set_boxes(args, jobs, options, parser)
    keep = _keep_sources(args, parser)
    _remove_stale_temps(jobs, args.json)

    from .api import Anonymizer
    from .consent import ConsentUnavailable, ReferenceError

    try:
        anon = Anonymizer(
            method=args.method, threshold=args.threshold, seed=args.seed, tier=args.tier,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            settings=settings, audit=args.audit, unsafe=args.unsafe, keep=keep, keep_threshold=args.keep_threshold,
        )
    except (ConsentUnavailable, ReferenceError) as e:  # before anything is written
        print(f"anonyface: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the model itself could not load: nothing can be done
        print(f"anonyface: error: cannot load the models: {e}", file=sys.stderr)
        return 1

    if anon.consent is not None:
        c = anon.consent
        args.keep_info = {"threshold": c.threshold, "separation": c.separation, "min_face_px": c.min_face_px,
                          "references": [r.source for r in c.references]}
    results = report_planned(errors, skipped, args.quiet)
    start = time.perf_counter()
    try:
        with terminate_as_interrupt():
            results += _run_batch(anon, jobs, options, quiet=args.quiet)
    except Terminated:
        print("anonyface: terminated (SIGTERM); the file in progress was not written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("anonyface: interrupted; the file in progress was not written", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    status = 1 if any(r.error for r in results) or not results else 0
    if args.json and not _write_json(args, results):
        status = 1
    if not args.quiet:
        print(f"anonyface: {_summary(results, elapsed)}", file=sys.stderr)
    return status


def _keep_sources(args, parser: argparse.ArgumentParser) -> list | None:
    """The --keep and --keep-dir reference photos (None when consent is off); a missing file
    or an empty folder is a usage error, before anything is written."""
    from .consent import MAX_SAFE_THRESHOLD, ReferenceError, reference_files

    t = args.keep_threshold
    if t is not None and not (args.keep or args.keep_dir):
        parser.error("--keep-threshold needs --keep or --keep-dir")
    if t is not None and not 0.0 < t <= 2.0:
        parser.error(f"--keep-threshold must be in (0, 2], got {t}")
    if t is not None and t > MAX_SAFE_THRESHOLD and not args.unsafe:
        parser.error(f"--keep-threshold {t:g} is above {MAX_SAFE_THRESHOLD:g}, where strangers are kept (docs/consent.md) (add --unsafe if you really mean it)")
    if not (args.keep or args.keep_dir):
        return None
    sources: list = []
    for path in args.keep:
        if not Path(path).is_file():
            parser.error(f"--keep {path}: no such file")
        sources.append(path)
    for folder in args.keep_dir:
        try:
            sources += reference_files(folder)
        except ReferenceError as e:
            parser.error(str(e))
    return sources


def _set_boxes(args, jobs: list[Job], options: FileOptions, parser: argparse.ArgumentParser) -> None:
    """--boxes: read and check the file now; in "only" mode every photo must be listed in it."""
    if args.boxes is None:
        if args.boxes_mode is not None:
            parser.error("--boxes-mode needs --boxes FILE.json")
        return
    from .boxes import BoxesError, BoxesFile

    try:
        options.boxes = BoxesFile.load(args.boxes)
    except BoxesError as e:
        parser.error(str(e))
    options.boxes_mode = args.boxes_mode or "add"
    options.boxes_single = len(jobs) == 1
    if options.boxes_mode == "only":
        missing = [job.label for job in jobs if not (job.source is not None and is_video(job.source))
                   and options.boxes.faces_for(job.source, options.boxes_single) is None]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            parser.error(f"--boxes {args.boxes} lists no faces for {', '.join(missing[:3])}{more} (--boxes-mode only needs every input)")


def _check_numbers(args, parser: argparse.ArgumentParser) -> None:
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be 0 or more, got {args.seed}")
    if args.max_pixels is not None and args.max_pixels < 1:
        parser.error("--max-pixels must be at least 1")


def _check_json(args, jobs: list[Job], parser: argparse.ArgumentParser) -> None:
    """--json: not on a standard output the images use; a file we can write, checked
    before the batch rather than lost after it."""
    if args.json == "-":
        if any(job.output is None for job in jobs):
            parser.error("--json - and the output both want standard output: write one of them to a file")
        return
    if args.json is None:
        return
    if Path(args.json).is_dir():
        parser.error(f"--json {args.json} is a folder: give a file name")
    try:
        AtomicPath(args.json).discard()  # what the write will do at the end: a temporary file beside it
    except OSError as e:
        parser.error(f"--json {args.json}: cannot write there ({e.strerror or e})")


def _write_json(args, results: list[FileResult]) -> bool:
    head = {"version": __version__, "threshold": args.threshold}
    if getattr(args, "keep_info", None):
        head["keep"] = args.keep_info
    doc = json.dumps({**head, "files": [r.to_dict() for r in results]}, indent=1)
    if args.json == "-":
        print(doc)
        return True
    try:
        write_atomic(args.json, (doc + "\n").encode())
    except OSError as e:
        print(f"anonyface: error: --json {args.json}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return False
    return True


def _remove_stale_temps(jobs: list[Job], json_path: str | None) -> None:
    """Temporary files that a run killed outright left in the folders this run writes to."""
    folders = {job.output.parent for job in jobs if job.output is not None}
    if json_path and json_path != "-":
        folders.add(Path(json_path).parent)
    for folder in sorted(folders):
        for path in remove_stale_temps(folder):
            print(f"anonyface: removed {path}, a temporary file left by an interrupted run", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the file in progress is cleaned up the same way."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM raises `Terminated` in the main thread (where it can unwind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_batch(anon, jobs: list[Job], options: FileOptions, quiet: bool) -> list[FileResult]:
    """Every job in turn, with a progress bar for more than one; failures are named on
    stderr as they happen and the batch goes on."""
    bar = None
    if not quiet and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)
    results: list[FileResult] = []
    try:
        for job in jobs:
            result = run_job(anon, job.source, job.output, options, job.label)
            results.append(result)
            notes = ([result.note] if result.note else []) + [f"warning: {w}" for w in result.warnings]
            for text in ([result.error] if result.error else []) + notes:
                msg = f"anonyface: {job.label}: {text}"
                bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(faces=sum(len(r.faces) for r in results), refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return results


def _summary(results: list[FileResult], elapsed: float) -> str:
    done = [r for r in results if not r.error and r.output]
    failed = [r for r in results if r.error]
    n_faces = sum(len(r.faces) for r in results)
    caught = sum(len(r.audited) for r in results)
    audit = f", {caught} more caught by the audit" if caught else ""
    parts = [f"{len(done)} anonymized ({n_faces} face{'s' if n_faces != 1 else ''}{audit})"]
    reasons: dict[str, int] = {}
    for r in results:
        if not r.error and not r.output:
            reasons[r.skipped or "output exists"] = reasons.get(r.skipped or "output exists", 0) + 1
    for why, n in reasons.items():
        parts.append(f"{n} skipped ({why})")
    if failed:
        parts.append(f"{len(failed)} failed")
    rate = f", {len(done) / elapsed:.1f} images/s" if elapsed > 0 and len(done) > 1 else ""
    return f"{', '.join(parts)} in {elapsed:.1f} s{rate}"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
