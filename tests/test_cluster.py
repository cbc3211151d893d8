"""The batch job on a real local Ray cluster (`anonyface ... --ray`): the same outputs and
summary as the local CLI, a manifest that resumes, and real kills of a worker and of
the driver. One cluster (2 CPUs, a small object store) serves the whole module."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'anonyface[ray]')")

from anonyface.cli import main  # noqa: E402
from anonyface.cluster import MANIFEST_NAME, read_manifest, sha256_file  # noqa: E402
from anonyface.media import TEMP_MARK  # noqa: E402
from test_video import make_clip  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "anonyface" / "samples" / "group.jpg"
SRC = Path(__file__).resolve().parents[1] / "src"
ARGS = ["--seed", "0"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, astronaut):
    """Photos in a tree, a short clip with audio, a broken photo and a text file."""
    d = tmp_path_factory.mktemp("archive") / "in"
    (d / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(astronaut).save(d / "a.jpg", quality=92)
    Image.fromarray(astronaut[::2, ::2]).save(d / "trip" / "b.png")
    shutil.copy(SAMPLE, d / "trip" / "day1" / "group.jpg")
    Image.fromarray(astronaut[64:448, 64:448]).save(d / "trip" / "c.webp")
    make_clip(d / "trip" / "clip.mp4", frames=10, size=(240, 176), face=60.0)
    (d / "bad.jpg").write_bytes(b"not a photo at all")
    (d / "notes.txt").write_text("ignored")
    return d


@pytest.fixture(scope="module")
def local(archive, tmp_path_factory):
    """The local CLI's outputs and summary: what every Ray run must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    status, summary = _cli([str(archive), "-o", str(out), *ARGS])
    assert status == 1  # bad.jpg
    return out, summary


def _cli(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in this process; (exit status, its summary line without the timing)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if " in " in ln and (" anonymized (" in ln)]
    assert lines, err.getvalue()
    return status, re.sub(r" in [0-9.]+ s.*$", "", lines[-1]).removeprefix("anonyface: ")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines() if line.strip()]


def _wait_for_done(out: Path, n: int = 1, timeout: float = 120) -> list[dict]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        done = [r for r in read_manifest(out / MANIFEST_NAME)[0].values() if r.get("status") == "done"]
        if len(done) >= n:
            return done
        time.sleep(0.05)
    raise AssertionError("no record came")


def test_same_outputs_and_summary_as_local_then_resume(cluster, archive, local, tmp_path):
    local_out, local_summary = local
    out = tmp_path / "out"
    status, summary = _cli([str(archive), "-o", str(out), *ARGS, "--ray", cluster, "--workers", "2", "--batch", "2"])
    assert status == 1 and summary == local_summary
    assert _outputs(out) == _outputs(local_out)  # byte for byte, photos and video
    recs = {r["input"]: r for r in _records(out)}
    bad, notes, clip = str(archive / "bad.jpg"), str(archive / "notes.txt"), str(archive / "trip" / "clip.mp4")
    assert recs[bad]["status"] == "failed" and "not an image" in recs[bad]["reason"]
    assert recs[notes]["status"] == "skipped" and recs[notes]["reason"] == "not a photo or video"
    assert recs[clip]["kind"] == "video" and recs[clip]["faces"] >= 1
    done = [r for r in recs.values() if r["status"] == "done"]
    assert len(done) == 5
    for r in done:
        assert r["sha256"] == sha256_file(r["output"]) and r["method"] == "synth" and r["cpu_seconds"] > 0
        assert set(r["models"]) >= {"retinaface_mobilenet.onnx", "centerface.onnx"}
    assert recs[str(archive / "trip" / "day1" / "group.jpg")]["faces"] >= 5

    # the failure fixed, a done output changed behind our back: exactly those two run again
    bad_src = archive / "bad.jpg"
    try:
        shutil.copy(SAMPLE, bad_src)
        (out / "a.jpg").write_bytes(b"tampered")
        status, summary = _cli([str(archive), "-o", str(out), *ARGS, "--ray", cluster, "--workers", "1"])
    finally:
        bad_src.write_bytes(b"not a photo at all")
    assert status == 0
    assert summary.startswith("2 anonymized (") and "4 skipped (done in an earlier run)" in summary
    assert (out / "a.jpg").read_bytes() == (local_out / "a.jpg").read_bytes()
    latest = read_manifest(out / MANIFEST_NAME)[0]
    assert latest[bad]["status"] == "done" and latest[str(archive / "a.jpg")]["sha256"] == sha256_file(out / "a.jpg")
    assert sum(r["input"] == notes for r in _records(out)) == 1  # a skip is recorded once, not per run


def test_worker_killed_mid_run_loses_nothing(cluster, archive, local, tmp_path):
    """SIGKILL the worker process after its first result: Ray restarts it and retries."""
    local_out, local_summary = local
    out = tmp_path / "out"
    killed = []

    def kill_first_worker():
        rec = _wait_for_done(out)[0]
        pid = int(rec["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=kill_first_worker, daemon=True)
    t.start()
    status, summary = _cli([str(archive), "-o", str(out), *ARGS, "--ray", cluster, "--workers", "1", "--batch", "1"])
    t.join(5)
    assert killed, "the worker was not killed"
    assert status == 1 and summary == local_summary
    recs = _records(out)
    workers = {r["worker"] for r in recs if r.get("worker")}
    assert len(workers) == 2 and any(w.endswith(f":{killed[0]}") for w in workers)  # a new process took over
    done = [r["input"] for r in recs if r["status"] == "done"]
    assert len(done) == len(set(done)) == 5  # nothing lost, nothing twice
    final = {k: v for k, v in _outputs(out).items() if TEMP_MARK not in k}
    assert final == _outputs(local_out)
    # the killed worker's temporary file (if it was writing) is removed by the next run
    _cli([str(archive), "-o", str(out), *ARGS, "--ray", cluster, "--workers", "1"])
    assert not [p for p in out.rglob(f"*{TEMP_MARK}*")]


def test_driver_killed_then_rerun_completes(cluster, archive, local, tmp_path):
    """SIGKILL the driver (a separate process joining the cluster) mid-run, then rerun."""
    local_out, _ = local
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "anonyface", str(archive), "-o", str(out), *ARGS, "-q", "--ray", cluster, "--workers", "1", "--batch", "1"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_done(out, 2)
    finally:
        driver.kill()
        driver.wait()
    before = read_manifest(out / MANIFEST_NAME)[0]
    finished = {k for k, r in before.items() if r.get("status") == "done"}
    assert 2 <= len(finished) < 5, "the driver was not killed mid-run"
    # no partial file at any final path: what is there is whole (the local output)
    reference = _outputs(local_out)
    for name, data in _outputs(out).items():
        if TEMP_MARK not in name:
            assert data == reference[name], name
    with open(out / MANIFEST_NAME, "ab") as f:
        f.write(b'{"input": "half a li')  # as if the kill had come mid-write

    status, summary = _cli([str(archive), "-o", str(out), *ARGS, "--ray", cluster, "--workers", "2"])
    assert status == 1 and f"{len(finished)} skipped (done in an earlier run)" in summary
    assert _outputs(out) == reference
    done = [r["input"] for r in _records_tolerant(out) if r.get("status") == "done"]
    assert len(done) == len(set(done)) == 5


def _records_tolerant(out: Path) -> list[dict]:
    recs = []
    for line in (out / MANIFEST_NAME).read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            assert line.startswith('{"input": "half')
    return recs


def test_uri_inputs_through_pyarrow(cluster, archive, local, tmp_path):
    """A file:// URI goes through pyarrow's file systems (as s3:// would): each worker
    downloads its input; the tree under the URI is mirrored as for a folder."""
    local_out, _ = local
    out = tmp_path / "out"
    status, summary = _cli([f"file://{archive / 'trip'}", "-o", str(out), *ARGS, "--ray", cluster, "--workers", "1"])
    assert status == 0 and summary.startswith("4 anonymized (")
    assert _outputs(out) == {k.removeprefix("trip/"): v for k, v in _outputs(local_out).items() if k.startswith("trip/")}
    labels = set(read_manifest(out / MANIFEST_NAME)[0])
    assert f"file://{archive / 'trip' / 'day1' / 'group.jpg'}" in labels and len(labels) == 4


def test_manifest_keeps_every_record_before_a_cut_line(tmp_path):
    from anonyface.cluster import Manifest

    m = Manifest(tmp_path / MANIFEST_NAME)
    m.append({"input": "a.jpg", "status": "done"})
    m.append({"input": "b.jpg", "status": "failed", "reason": "x"})
    m.close()
    with open(tmp_path / MANIFEST_NAME, "ab") as f:
        f.write(b'{"input": "c.jpg", "sta')  # killed mid-write
    m = Manifest(tmp_path / MANIFEST_NAME)
    assert m.damaged == 1 and set(m.records) == {"a.jpg", "b.jpg"}
    m.append({"input": "b.jpg", "status": "done"})
    m.close()
    records, damaged = read_manifest(tmp_path / MANIFEST_NAME)
    assert damaged == 1 and records["b.jpg"]["status"] == "done" and records["a.jpg"]["status"] == "done"


def test_ray_usage(tmp_path, capsys):
    from anonyface.cluster import ray_argv

    assert ray_argv(["--ray", "photos/", "-o", "out"]) == ["--ray=local", "photos/", "-o", "out"]
    assert ray_argv(["photos/", "--ray", "auto", "-o", "o"]) == ["photos/", "--ray", "auto", "-o", "o"]
    assert ray_argv(["photos/", "--ray", "127.0.0.1:6379"])[1:] == ["--ray", "127.0.0.1:6379"]
    for argv, says in ((["--ray", str(SAMPLE)], "needs -o OUT"), ([str(SAMPLE), "-o", "-", "--ray"], "needs -o OUT"),
                       ([str(SAMPLE), "--in-place", "-o", str(tmp_path), "--ray"], "--in-place"),
                       ([str(SAMPLE), "-o", str(SAMPLE), "--ray"], "is a file"),
                       ([str(SAMPLE), "-o", str(tmp_path / "o"), "--ray", "--keep", str(SAMPLE)], "not available with --ray"),
                       ([str(SAMPLE), "-o", str(tmp_path / "o"), "--ray", "--boxes", "b.json"], "not available with --ray")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and says in capsys.readouterr().err
