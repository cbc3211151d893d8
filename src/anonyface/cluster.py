"""The CLI's batch job on a Ray cluster, resumable through a manifest (`anonyface ... --ray`).

The job is the local one: `cli.plan_jobs` turns the inputs into (source, output)
jobs with the same tree mirroring and output names, and each worker runs each job
through `files.run_job` (metadata policy, atomic writes through `media.AtomicPath`).
What is added here is only where the jobs run and what is remembered:

- Ray Core actors (`_Worker`), each loading the models once (`api.Anonymizer`). A
  photo job travels in small batches; a video is one actor task (one task per
  video keeps its tracks, fake identities and look-back whole, and the output
  identical to the local CLI's; docs/cluster.md has the numbers). Ray restarts a
  killed worker and retries its task (`max_restarts`, `max_task_retries`); a batch
  that still fails is split into single photos so that only the bad one fails.
- A manifest, `OUT/anonyface-manifest.jsonl`: one JSON line per input (status
  done / failed / skipped with the reason, faces, method, model hashes, the
  output and its sha256), appended by the driver with one write and an fsync
  as each result arrives. A rerun skips an input whose last record is done with
  the same options and models and whose output still has the recorded hash, and
  retries everything else. A line cut short by a crash is ignored.

Inputs may also be URIs that pyarrow's file systems read (`s3://bucket/prefix`,
`gs://...`, `hdfs://...`, `file:///...`): each worker downloads its input to a
local temporary file. OUT is a local or shared (NFS, mounted bucket) folder: the
manifest needs appends and the outputs atomic renames, which object stores lack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .files import MEDIA_EXTENSIONS, FileOptions, FileResult, is_video, run_job

MANIFEST_NAME = "anonyface-manifest.jsonl"
#: The reason a rerun gives for an input the manifest says is done.
DONE_BEFORE = "done in an earlier run"
#: Object store of a local instance: results are small records (workers read and
#: write the files themselves), so Ray's default (30 % of memory) is not needed.
LOCAL_OBJECT_STORE = 256 * 1024**2


def looks_like_address(text: str) -> bool:
    """A Ray address (host:port, ray://host:port, auto, local), as opposed to an input."""
    return text in ("auto", "local") or "://" in text or (":" in text and not os.path.exists(text))


def ray_argv(argv: list[str]) -> list[str]:
    """`--ray` followed by an input (`anonyface --ray photos/ -o out`) means a local
    instance, not the address `photos/`: spell it `--ray=local` so argparse agrees."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--ray" and not looks_like_address(out[i + 1]):
            out[i] = "--ray=local"
    return out


def add_arguments(parser) -> None:
    g = parser.add_argument_group("large archives (Ray; pip install 'anonyface[ray]', docs/cluster.md)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="run the batch on a Ray cluster: ADDRESS joins one (host:port, ray://host:port, auto); alone, starts a local instance. Needs -o OUT, a folder, where anonyface-manifest.jsonl makes the run resumable (a rerun skips what is done and retries what failed)")
    g.add_argument("--workers", type=int, metavar="N", help="--ray: model-holding workers (default: one per CPU of the cluster)")
    g.add_argument("--batch", type=int, default=4, metavar="N", help="--ray: photos per task (default: %(default)s)")


# -- the manifest ------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> tuple[dict[str, dict], int]:
    """(the last record of each input, how many lines could not be read)."""
    records: dict[str, dict] = {}
    damaged = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return records, damaged
    with f:
        for line in f:
            try:
                rec = json.loads(line)
                records[rec["input"]] = rec
            except (ValueError, KeyError, TypeError):
                damaged += line.strip() != b""
    return records, damaged


class Manifest:
    """JSON Lines, one record per input and attempt; the last record of an input counts."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records, self.damaged = read_manifest(self.path)  # damaged: lines a crash cut short
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.path.stat().st_size and not self._ends_with_newline():
            os.write(self._fd, b"\n")  # close a line cut short, so the next record starts clean

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def append(self, record: dict) -> None:
        """One write of a whole line, then fsync: after a crash the file holds every
        record appended before it, and at most one partial last line."""
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self._fd)
        self.records[record["input"]] = record

    def close(self) -> None:
        os.close(self._fd)

    def is_done(self, label: str, output: str, fingerprint: str) -> bool:
        """Done with these options and models, and the output still what was written."""
        rec = self.records.get(label)
        if not rec or rec.get("status") != "done" or rec.get("fingerprint") != fingerprint or rec.get("output") != output:
            return False
        try:
            return sha256_file(output) == rec.get("sha256")
        except OSError:
            return False


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_versions() -> dict[str, str]:
    """sha256 (first 16 hex digits) of every ONNX model the package ships."""
    from .runtime import model_path

    folder = model_path("")
    return {p.name: sha256_file(p)[:16] for p in sorted(Path(folder).glob("*.onnx"))}


# -- the jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteJob:
    """One input as the workers see it: a local path or a URI, and a local output."""

    source: str
    output: str
    label: str

    @property
    def video(self) -> bool:
        return is_video(self.source)


def is_uri(text: str) -> bool:
    return "://" in text


def plan(inputs: list[str], out_dir: str, fmt: str | None) -> tuple[list[RemoteJob], list[tuple[str, str]], list[tuple[str, str]]]:
    """(jobs, errors, skipped) like `cli.plan_jobs`, always into the folder `out_dir`;
    URIs are listed through pyarrow's file systems and mirrored the same way."""
    from .cli import plan_jobs

    local = [a for a in inputs if not is_uri(a)]
    folder = out_dir if out_dir.endswith(("/", os.sep)) else out_dir + os.sep
    jobs: list[RemoteJob] = []
    errors: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    if local:
        planned, errors, skipped = plan_jobs(local, folder, fmt, in_place=False)
        jobs = [RemoteJob(str(j.source), str(j.output), j.label) for j in planned]
    for uri in (a for a in inputs if is_uri(a)):
        try:
            found = _list_uri(uri, Path(out_dir), fmt)
        except (OSError, ValueError) as e:
            errors.append((uri, f"cannot list it: {e}"))
            continue
        jobs += found
        if not found:
            errors.append((uri, f"no photos or videos there (looked for {' '.join(sorted(MEDIA_EXTENSIONS))})"))
    seen: set[str] = set()
    unique = []
    for job in jobs:
        if job.output in seen:
            errors.append((job.label, f"output {job.output} would also be written from another input"))
            continue
        seen.add(job.output)
        unique.append(job)
    return unique, errors, skipped


def _list_uri(uri: str, out_dir: Path, fmt: str | None) -> list[RemoteJob]:
    """Every media file under `uri` (by suffix), its output mirrored under `out_dir`."""
    from pyarrow import fs as pafs

    from .cli import _output_name

    filesystem, root = pafs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ValueError("no such file or directory")
    if info.type == pafs.FileType.File:
        entries, base = [info], str(Path(root).parent)
    else:
        entries, base = filesystem.get_file_info(pafs.FileSelector(root, recursive=True)), root
    scheme = uri.split("://", 1)[0] + "://"
    query = uri.partition("?")[2]  # endpoint_override=..., region=...: kept for the workers, not in labels
    jobs = []
    for e in sorted((e for e in entries if e.type == pafs.FileType.File), key=lambda e: e.path):
        rel = Path(os.path.relpath(e.path, base))
        if rel.suffix.lower() not in MEDIA_EXTENSIONS:
            continue
        ext = None if is_video(rel) else (f".{fmt}" if fmt else None)
        dst = out_dir / rel.parent / _output_name(rel, ext)
        label = scheme + e.path
        jobs.append(RemoteJob(label + (f"?{query}" if query else ""), str(dst), label))
    return jobs


# -- the workers ---------------------------------------------------------------


@dataclass
class Outcome:
    """What a worker sends back for one job: the local result and the output's hash."""

    job: RemoteJob
    result: FileResult
    sha256: str | None
    seconds: float
    worker: str
    cpu_seconds: float = 0.0  # of the worker process (all its threads): what a file costs a cluster


class _Worker:
    """Holds the models (one `Anonymizer`) and runs jobs through `files.run_job`."""

    def __init__(self, anonymizer_kwargs: dict, options: FileOptions, threads: int | None) -> None:
        from .api import Anonymizer

        self.anon = Anonymizer(**anonymizer_kwargs, threads=threads)
        self.options = options
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        return self.name

    def run(self, jobs: list[RemoteJob]) -> list[Outcome]:
        return [self._one(job) for job in jobs]

    def _one(self, job: RemoteJob) -> Outcome:
        t0, c0 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory(prefix="anonyface-in-") as tmp:
            try:
                source = _fetch(job.source, Path(tmp)) if is_uri(job.source) else Path(job.source)
            except (OSError, ValueError) as e:
                return Outcome(job, FileResult(job.label, None, error=f"cannot download it: {e}"), None, time.perf_counter() - t0, self.name)
            result = run_job(self.anon, source, Path(job.output), self.options, job.label)
        result.source = job.label
        digest = None
        if result.output and not result.error:
            try:
                digest = sha256_file(result.output)
            except OSError as e:
                result = FileResult(job.label, None, error=f"the output cannot be read back: {e}")
        return Outcome(job, result, digest, time.perf_counter() - t0, self.name, time.process_time() - c0)


def _fetch(uri: str, folder: Path) -> Path:
    """Download `uri` to a local file of the same name (its suffix picks the reader)."""
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(uri)
    local = folder / Path(path).name
    with filesystem.open_input_stream(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return local


# -- the driver ----------------------------------------------------------------


class WorkersFailed(RuntimeError):
    """The workers could not start (the models did not load): nothing can be done."""


@dataclass
class RunConfig:
    address: str = "local"
    workers: int | None = None  # None: one per CPU
    cpus_per_worker: float = 1.0
    batch: int = 4
    quiet: bool = False


def fingerprint(anonymizer_kwargs: dict, options: FileOptions, models: dict[str, str]) -> str:
    """What decides an output's content: options and models (not progress or paths)."""
    opts = dataclasses.asdict(options)
    opts["video"].pop("progress", None)
    opts.pop("skip_existing", None)
    doc = {"anonymizer": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in anonymizer_kwargs.items()},
           "files": opts, "models": models}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record(job: RemoteJob, outcome: Outcome | None, result: FileResult, method: str, models: dict, fp: str) -> dict:
    status = "failed" if result.error else ("done" if result.output else "skipped")
    rec = {
        "input": job.label, "output": job.output, "status": status,
        "reason": result.error or (result.skipped or "output exists" if status == "skipped" else None),
        "kind": "video" if job.video else "photo",
        "faces": len(result.faces), "audited": len(result.audited), "method": method,
        "models": models, "fingerprint": fp, "version": __version__,
        "sha256": outcome.sha256 if outcome and status == "done" else None,
        "bytes": os.path.getsize(job.output) if status == "done" and os.path.exists(job.output) else None,
        "seconds": round(outcome.seconds, 3) if outcome else None,
        "cpu_seconds": round(outcome.cpu_seconds, 3) if outcome else None,
        "worker": outcome.worker if outcome else None,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if result.warnings:
        rec["warnings"] = result.warnings
    return rec


def _start(address: str, workers: int | None):
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        kwargs["object_store_memory"] = LOCAL_OBJECT_STORE
        if workers:
            kwargs["num_cpus"] = workers  # as many as asked for, even beyond the cores
    ray.init(address=address, **kwargs)
    return True


def run(
    jobs: list[RemoteJob],
    manifest: Manifest,
    anonymizer_kwargs: dict,
    options: FileOptions,
    config: RunConfig,
    log=None,
) -> list[FileResult]:
    """Run every job not done already on the cluster; append each result to the manifest
    as it arrives; return the results (earlier runs' done jobs as skipped)."""
    import ray

    log = log or (lambda msg: print(msg, file=sys.stderr))
    models = model_versions()
    fp = fingerprint(anonymizer_kwargs, options, models)
    method = anonymizer_kwargs.get("method", "")
    results: list[FileResult] = []
    todo: list[RemoteJob] = []
    for job in jobs:
        if manifest.is_done(job.label, job.output, fp):
            results.append(FileResult(job.label, None, skipped=DONE_BEFORE))
        else:
            todo.append(job)
    if not todo:
        return results
    started = _start(config.address, config.workers)
    try:
        room = max(1, int(ray.cluster_resources().get("CPU", 1) // config.cpus_per_worker))
        if config.workers and config.workers > room:
            log(f"anonyface: the cluster has room for {room} worker(s), not {config.workers}: using {room}")
        n = min(config.workers or room, room, len(todo))
        threads = max(1, int(config.cpus_per_worker))
        worker_cls = ray.remote(num_cpus=config.cpus_per_worker, max_restarts=3, max_task_retries=2)(_Worker)
        spawn = lambda: worker_cls.remote(anonymizer_kwargs, options, threads)  # noqa: E731
        actors = [spawn() for _ in range(n)]
        generation = [0] * n  # which actor of a slot a task went to: a dead one is replaced once
        try:  # a worker that cannot load the models (anonyface missing on a node) stops the run here
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayError as e:
            raise WorkersFailed(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__) from None
        # long poles first: videos, then photos in batches
        units: deque[list[RemoteJob]] = deque([j] for j in todo if j.video)
        photos = [j for j in todo if not j.video]
        units.extend(photos[i : i + config.batch] for i in range(0, len(photos), config.batch))
        bar = _progress(len(todo), config.quiet)
        pending: dict = {}

        def submit(slot: int) -> None:
            if units:
                unit = units.popleft()
                pending[actors[slot].run.remote(unit)] = (slot, unit, generation[slot])

        for slot in range(n):
            for _ in range(2):  # two tasks queued per worker: no idle gap between them
                submit(slot)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                slot, unit, gen = pending.pop(ready[0])
                try:
                    outcomes = ray.get(ready[0])
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as e:
                    if isinstance(e, ray.exceptions.RayActorError) and gen == generation[slot]:
                        actors[slot] = spawn()  # Ray gave up restarting it: a fresh one
                        generation[slot] += 1
                    if len(unit) > 1:  # find the one that kills workers: retry each alone
                        units.extendleft([j] for j in reversed(unit))
                        submit(slot)
                        continue
                    reason = f"worker lost: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    outcomes = [Outcome(unit[0], FileResult(unit[0].label, None, error=reason), None, 0.0, "")]
                submit(slot)
                for o in outcomes:
                    manifest.append(_record(o.job, o, o.result, method, models, fp))
                    results.append(o.result)
                    for text in _messages(o.result):
                        msg = f"anonyface: {o.job.label}: {text}"
                        bar.write(msg, file=sys.stderr) if bar is not None else log(msg)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    finally:
        if started:
            ray.shutdown()
    return results


def _messages(result: FileResult) -> list[str]:
    return ([result.error] if result.error else []) + ([result.note] if result.note else []) + [f"warning: {w}" for w in result.warnings]


def _progress(total: int, quiet: bool):
    if quiet or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)


def main(args, parser, settings, options: FileOptions) -> int:
    """`anonyface INPUT... -o OUT --ray [ADDRESS]`: what `cli.main` does, on Ray."""
    from . import cli

    try:
        import ray  # noqa: F401
    except ImportError:
        parser.error("--ray needs Ray: pip install 'anonyface[ray]'")
    if not args.output or args.output == "-":
        parser.error("--ray needs -o OUT, a folder (the manifest that makes the run resumable is kept there)")
    if is_uri(args.output):
        parser.error("--ray: OUT must be a local or shared folder (object stores have no append or rename); sync it to the bucket afterwards")
    if Path(args.output).is_file():
        parser.error(f"--ray: -o {args.output} is a file: give a folder")
    if args.in_place or "-" in args.inputs:
        parser.error("--ray does not take --in-place or standard input")
    if (args.workers is not None and args.workers < 1) or args.batch < 1:
        parser.error("--workers and --batch must be at least 1")
    cli._check_json(args, [], parser)

    jobs, errors, skipped = plan(args.inputs, args.output, args.format)
    cli._remove_stale_temps([cli.Job(None, Path(j.output), j.label) for j in jobs], args.json)
    anonymizer_kwargs = {
        "method": args.method, "threshold": args.threshold, "seed": args.seed, "tier": args.tier, "settings": settings,
        "max_pixels": args.max_pixels or cli.DEFAULT_MAX_PIXELS, "audit": args.audit, "unsafe": args.unsafe,
    }
    options = dataclasses.replace(options, video=dataclasses.replace(options.video, progress=False))
    manifest = Manifest(Path(args.output) / MANIFEST_NAME)
    if manifest.damaged:
        print(f"anonyface: {manifest.path}: {manifest.damaged} unreadable line(s) ignored (a run killed mid-write)", file=sys.stderr)
    results = cli.report_planned(errors, skipped, args.quiet)
    for src, why in skipped:  # recorded once, not on every rerun
        rec = manifest.records.get(src)
        if not rec or rec.get("status") != "skipped" or rec.get("reason") != why:
            manifest.append({"input": src, "output": None, "status": "skipped", "reason": why,
                             "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    config = RunConfig(address=args.ray, workers=args.workers, batch=args.batch, quiet=args.quiet)
    start = time.perf_counter()
    try:
        with cli.terminate_as_interrupt():
            results += run(jobs, manifest, anonymizer_kwargs, options, config)
    except KeyboardInterrupt as e:
        why = "terminated (SIGTERM)" if isinstance(e, cli.Terminated) else "interrupted"
        print(f"anonyface: {why}; every finished file is in {manifest.path}: run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(e, cli.Terminated) else 130
    except WorkersFailed as e:
        print(f"anonyface: error: the Ray workers cannot start: {e}", file=sys.stderr)
        return 1
    finally:
        manifest.close()
    elapsed = time.perf_counter() - start
    status = 1 if any(r.error for r in results) or not results else 0
    if args.json and not cli._write_json(args, results):
        status = 1
    if not args.quiet:
        print(f"anonyface: {cli._summary(results, elapsed)}", file=sys.stderr)
    return status
