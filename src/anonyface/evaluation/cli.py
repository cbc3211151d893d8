"""anonyface-eval: evaluate every method on a folder of photos and write a report.

Examples:
  anonyface-eval ../shared/data/eval -o out/eval-report
  anonyface-eval ../shared/data/eval --val-from ../shared/data/train/utkface --sample 300 -o out/eval-report
  anonyface-eval data/faces/val-000.npz -o out/val-report --methods blur,synth
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from .harness import DEFAULT_METHODS

    ap = argparse.ArgumentParser(
        prog="anonyface-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("inputs", nargs="*", metavar="INPUT", help="photo / video files, folders, globs, or val-*.npz shards")
    ap.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for the report")
    ap.add_argument("--video-stride", type=int, default=10, metavar="N", help="judge every N-th video frame (default 10)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help="comma-separated; names of anonyface methods, plus 'deface' (its CLI) and 'none' "
                         "(changes nothing; a failing reference); synth:fast / synth:quality pick a generator tier (synth: "
                         "quality for photos, fast for video). Methods the installed anonyface does not "
                         "accept (e.g. synth before it ships) are reported as not evaluated. Default: %(default)s")
    ap.add_argument("--judges", default="hog,centerface",
                    help="independent detectors: hog, mmod, centerface (default: %(default)s)")
    ap.add_argument("--mmod-max-pixels", type=int, default=60_000,
                    help="run mmod only on images up to this many pixels (it takes seconds on larger ones)")
    ap.add_argument("--threshold", type=float, default=None, help="the project's detection threshold (default: its own)")
    ap.add_argument("--seed", type=int, default=0, help="sampling and generator seed (default 0)")
    ap.add_argument("--sample", type=int, default=None, metavar="N", help="at most N photos per INPUT, chosen with --seed")
    ap.add_argument("--val-from", action="append", default=[], metavar="DIR",
                    help="also evaluate the photos of DIR whose identity is in the data set builder's validation "
                         "split (e.g. ../shared/data/train/utkface); repeatable")
    ap.add_argument("--split-root", default=None, help="the folder the data set was built from (default: INPUT's parent)")
    ap.add_argument("--val-fraction", type=float, default=None, help="validation fraction of the split (default: the builder's)")
    ap.add_argument("--split-seed", type=int, default=0, help="the builder's seed (default 0)")
    ap.add_argument("--no-fd", action="store_true", help="skip the Fréchet distance (needs torch)")
    ap.add_argument("--no-pose", action="store_true", help="skip pose fidelity")
    ap.add_argument("--no-video", action="store_true", help="skip the videos among the inputs")
    ap.add_argument("--contact", type=int, default=3, metavar="N", help="photos per set on the contact sheet")
    ap.add_argument("--sheet-faces", type=int, default=24, metavar="N",
                    help="the N largest reference faces at 100 %% in face_sheet.jpg (default 24; 0: none)")
    ap.add_argument("--from-raw", action="store_true",
                    help="rewrite the report in REPORT_DIR from its raw.pkl (no evaluation; for report changes)")
    ap.add_argument("-q", "--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.from_raw:
        import pickle

        from .report import write_report

        raw = Path(args.output) / "raw.pkl"
        with open(raw, "rb") as f:
            results = pickle.load(f)
        write_report(results, Path(args.output))
        print(f"report rewritten: {Path(args.output) / 'report.md'}")
        return 0
    if not args.inputs and not args.val_from:
        ap.error("give at least one INPUT or --val-from DIR")
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError as e:
        print(f"anonyface-eval: {e}; install the extra: pip install 'anonyface[eval]'", file=sys.stderr)
        return 2
    from ..detection import DEFAULT_THRESHOLD
    from .harness import EvalConfig, evaluate
    from .report import write_report

    cfg = EvalConfig(
        inputs=args.inputs, out_dir=Path(args.output),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        detectors=tuple(j.strip() for j in args.judges.split(",") if j.strip()),
        mmod_max_pixels=args.mmod_max_pixels,
        threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
        seed=args.seed, sample=args.sample, val_inputs=tuple(args.val_from), split_root=args.split_root,
        val_fraction=args.val_fraction, split_seed=args.split_seed, fd=not args.no_fd, pose=not args.no_pose,
        contact_per_set=args.contact, sheet_faces=args.sheet_faces, video=not args.no_video, video_stride=args.video_stride, quiet=args.quiet,
        command="anonyface-eval " + " ".join(shlex.quote(a) for a in argv),
    )
    try:
        results = evaluate(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"anonyface-eval: {e}", file=sys.stderr)
        return 2
    summary = write_report(results, cfg.out_dir)
    if not args.quiet:
        for name, a in summary["overall"].items():
            sp = summary["speed"][name]
            print(f"{name:>9}: {a['faces']} faces, uncovered {a['uncovered']}, re-id {a['reid_pct']} %, "
                  f"retained {a['retained_pct']} %, seam {a['seam']['median']}, {sp['photos_per_s']} photos/s")
        print(f"report: {cfg.out_dir / 'report.md'}")
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
