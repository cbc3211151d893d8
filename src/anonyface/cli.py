"""Command line: `anonyface INPUT... [-o OUT]`."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .api import DEFAULT_METHOD, METHODS
from .detection import DEFAULT_THRESHOLD
from .media import DEFAULT_MAX_PIXELS, FORMATS, IMAGE_EXTENSIONS, ImageError, encode_image, read_image, write_atomic
from .video import VIDEO_EXTENSIONS

SUFFIX = "_anonymized"

EPILOG = f"""\
where outputs go:
  anonyface photo.jpg                 -> photo{SUFFIX}.jpg beside it
  anonyface photo.jpg -o out.png      -> out.png (format from the extension)
  anonyface photos/ -o clean/         -> clean/ mirrors the tree of photos/
  anonyface photos/                   -> photos{SUFFIX}/
  anonyface 'shots/*.jpg' a.png -o d/ -> d/ (globs are expanded for you too)
  anonyface - < in.jpg > out.jpg      -> standard input to standard output
  Inputs are never overwritten unless you pass --in-place.

privacy:
  Metadata that can identify (EXIF with GPS, camera serials and thumbnails, XMP,
  IPTC, comments, PNG text) is removed unless --keep-metadata; colour profiles
  are kept. Outputs are written atomically: a file that fails leaves nothing.

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonyface",
        description="Cover every face in photos: detect each face (RetinaFace) and blur, "
        "pixelate or fill it, and strip identifying metadata.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files, folders (recursive) or glob patterns; - for standard input")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (one input) or folder; - for standard output")
    g = p.add_argument_group("how faces are covered")
    g.add_argument("-m", "--method", choices=METHODS, default=DEFAULT_METHOD, help="synth paints a realistic face of nobody (faces under 24 px are pixelated, uncertain ones blurred); blur, pixelate and solid cover the face (default: %(default)s)")
    g.add_argument("--seed", type=int, metavar="N", help="synth: make the new faces reproducible")
    g.add_argument("--mask-scale", type=float, default=1.3, metavar="S", help="size of the covered area relative to the detected face box; 1.3 covers forehead to chin (default: %(default)s)")
    g.add_argument("--shape", choices=("ellipse", "box"), default="ellipse", help="shape of the covered area (default: %(default)s)")
    g.add_argument("--feather", type=float, default=0.1, metavar="F", help="soft edge outside the covered area, as a fraction of its size; 0 for a hard edge (default: %(default)s)")
    g.add_argument("--blocks", type=int, default=8, metavar="N", help="pixelate: mosaic cells across a face (default: %(default)s; fewer is safer)")
    g.add_argument("--blur-strength", type=float, default=0.125, metavar="K", help="blur: Gaussian sigma as a fraction of the face size (default: %(default)s)")
    g.add_argument("--color", default="0,0,0", metavar="R,G,B", help="solid: fill colour (default: %(default)s)")
    g = p.add_argument_group("detection")
    g.add_argument("-t", "--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T", help="minimum detection score in [0, 1]; lower finds more faces and more false alarms (default: %(default)s)")
    g = p.add_argument_group("files")
    g.add_argument("--format", choices=sorted({e.lstrip('.') for e in FORMATS}), help="write every output in this format instead of the input's")
    g.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality (default: %(default)s)")
    g.add_argument("--keep-metadata", action="store_true", help="keep EXIF (orientation reset, GPS included!), XMP, comments and PNG text")
    g.add_argument("--in-place", action="store_true", help="allow outputs to replace their inputs")
    g.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist alone (resume a batch)")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N", help="refuse larger images (default: %(default)s)")
    g.add_argument("--json", metavar="FILE", help="write every detection (file, box, landmarks, score) as JSON; - for standard output")
    _add_video_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--version", action="version", version=f"anonyface {__version__}")
    return p


def _add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "video (.mp4 .mov .mkv .webm .avi .m4v; see docs/video.md)",
        "Audio is copied untouched, timestamps (variable frame rate, start offsets) are kept, "
        "rotation is applied and the output written upright. `anonyface live --help` for webcams.",
    )
    g.add_argument("--codec", metavar="NAME", help="video encoder (default: libx264; libvpx-vp9 for .webm, mpeg4 for .avi)")
    g.add_argument("--crf", type=int, metavar="N", help="quality, lower is better (default: 20 for libx264, 32 for VP9, 24 for libx265)")
    g.add_argument("--preset", metavar="NAME", help="x264/x265 speed preset (default: medium)")
    g.add_argument("--start", type=float, metavar="SEC", help="process from this time on (seconds)")
    g.add_argument("--end", type=float, metavar="SEC", help="stop at this time (seconds)")
    g.add_argument("--keep-audio", dest="keep_audio", action="store_true", default=True, help="copy the audio streams untouched (default)")
    g.add_argument("--no-audio", dest="keep_audio", action="store_false", help="drop the audio")
    g.add_argument("--detect-every", type=int, default=2, metavar="N", help="run the detector on every N-th frame, track in between (default: %(default)s)")
    g.add_argument("--detect-size", type=int, metavar="PX", help="long side of the fast detection pass (default: a third of the frame's, at least 320)")
    g.add_argument("--fine-every", type=int, default=3, metavar="K", help="every K-th detection pass looks at the full resolution (multi-scale, tiled) for small faces; 1 always, 0 never (default: %(default)s)")
    g.add_argument("--hold", type=int, default=5, metavar="K", help="keep covering a tracked face for K detection passes after the detector loses it (default: %(default)s)")
    g.add_argument("--lookback", type=int, default=8, metavar="F", help="also cover a face in the F frames before it was first detected (default: %(default)s)")
    g.add_argument("--no-smooth", dest="smooth", action="store_false", help="no temporal smoothing of the face boxes")


def _video_options(args):
    from .video import VideoOptions

    return VideoOptions(
        codec=args.codec, crf=args.crf, preset=args.preset, start=args.start, end=args.end,
        keep_audio=args.keep_audio, keep_metadata=args.keep_metadata, detect_every=args.detect_every,
        detect_size=args.detect_size, fine_every=args.fine_every, lookback=args.lookback,
        max_missed=args.hold, smooth=args.smooth, progress=not args.quiet,
    )


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


def plan_jobs(inputs: list[str], output: str | None, fmt: str | None, in_place: bool) -> tuple[list[Job], list[tuple[str, str]]]:
    """Turn the command line's inputs into (source, output) jobs, and errors for inputs that
    name nothing."""
    ext = fmt_ext = f".{fmt}" if fmt else None
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
        ext = None if src.suffix.lower() in VIDEO_EXTENSIONS else fmt_ext  # --format is for photos
        if in_place:
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
                for f in sorted(path.rglob("*")):
                    if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                        continue
                    if any(part.startswith(".") for part in f.relative_to(path).parts):
                        continue
                    if out_resolved and out_resolved in f.resolve().parents:
                        continue  # never re-process our own outputs
                    add_file(f, f.relative_to(path), root_default)
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
    return unique, errors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "live":  # `anonyface live [SOURCE] ...`: its own parser
        from .live import main as live_main

        return live_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        color = _parse_color(args.color)
    except ValueError:
        parser.error(f"--color must be R,G,B with values 0-255, got {args.color!r}")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if args.mask_scale <= 0 or args.blocks < 1 or args.blur_strength <= 0:
        parser.error("--mask-scale and --blur-strength must be positive, --blocks at least 1")
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be between 1 and 100")
    try:
        _video_options(args)
    except ValueError as e:
        parser.error(str(e))

    jobs, errors = plan_jobs(args.inputs, args.output, args.format, args.in_place)
    if args.output == "-" and len(jobs) > 1:
        parser.error("-o - (standard output) takes a single input")
    if args.output is not None and args.output != "-" and len(jobs) > 1 and Path(args.output).is_file():
        parser.error(f"-o {args.output} is a file, but there are {len(jobs)} inputs: give a folder")

    from .api import Anonymizer, FileResult

    try:
        anon = Anonymizer(
            method=args.method, threshold=args.threshold, mask_scale=args.mask_scale, shape=args.shape,
            feather=args.feather, blocks=args.blocks, color=color, blur_strength=args.blur_strength,
            max_pixels=args.max_pixels, seed=args.seed,
        )
    except Exception as e:  # the model itself could not load: nothing can be done
        print(f"anonyface: error: cannot load the models: {e}", file=sys.stderr)
        return 1

    results: list[FileResult] = [FileResult(src, None, error=msg) for src, msg in errors]
    for src, msg in errors:
        print(f"anonyface: {src}: {msg}", file=sys.stderr)

    start = time.perf_counter()
    bar = None
    if not args.quiet and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)

    def say(msg: str) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    try:
        for job in jobs:
            result = _run_job(anon, job, args)
            results.append(result)
            if result.error:
                say(f"anonyface: {job.label}: {result.error}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(faces=sum(len(r.faces) for r in results), refresh=False)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print("anonyface: interrupted", file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start

    failed = [r for r in results if r.error]
    done = [r for r in results if not r.error and r.output]
    if args.json:
        doc = json.dumps({"version": __version__, "threshold": args.threshold, "files": [r.to_dict() for r in results]}, indent=1)
        if args.json == "-":
            print(doc)
        else:
            write_atomic(args.json, (doc + "\n").encode())
    if not args.quiet:
        n_faces = sum(len(r.faces) for r in results)
        skipped = sum(1 for r in results if not r.error and not r.output)
        parts = [f"{len(done)} anonymized ({n_faces} face{'s' if n_faces != 1 else ''})"]
        if skipped:
            parts.append(f"{skipped} skipped (output exists)")
        if failed:
            parts.append(f"{len(failed)} failed")
        rate = f", {len(done) / elapsed:.1f} images/s" if elapsed > 0 and len(done) > 1 else ""
        print(f"anonyface: {', '.join(parts)} in {elapsed:.1f} s{rate}", file=sys.stderr)
    return 1 if failed or not results else 0


def _run_job(anon, job: Job, args) -> "FileResult":
    from .api import FileResult

    label = job.label
    try:
        if job.source is None:
            picture = read_image(sys.stdin.buffer.read(), args.max_pixels)
            img, faces = anon.process_picture(picture)
            fmt = FORMATS.get(f".{args.format}") if args.format else None
            if job.output is not None:
                fmt = fmt or FORMATS.get(job.output.suffix.lower()) or picture.format
            data = encode_image(img, fmt or picture.format, picture.info, args.keep_metadata, args.quality)
            if job.output is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                write_atomic(job.output, data)
            return FileResult(label, str(job.output) if job.output else "<stdout>", faces, picture.size)
        if args.skip_existing and job.output is not None and job.output.exists() and job.output != job.source:
            return FileResult(label, None)
        if job.source.suffix.lower() in VIDEO_EXTENSIONS:
            from .video import anonymize_video_file

            return anonymize_video_file(anon, job.source, job.output, _video_options(args), args.in_place)
        return anon.process_file(job.source, job.output, args.keep_metadata, args.in_place, args.quality)
    except ImageError as e:
        return FileResult(label, None, error=str(e))
    except (ValueError, OSError) as e:
        return FileResult(label, None, error=str(e))
    except Exception as e:  # one bad file must not stop the batch
        return FileResult(label, None, error=f"unexpected error: {type(e).__name__}: {e}")


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
