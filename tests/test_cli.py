"""The command line, driven as a user would: real files, real exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anonyface.cli import main, plan_jobs


@pytest.fixture
def photo_dir(tmp_path, astronaut):
    d = tmp_path / "photos"
    (d / "trip" / "day1").mkdir(parents=True)
    Image.fromarray(astronaut).save(d / "a.jpg")
    Image.fromarray(astronaut).save(d / "trip" / "b.png")
    Image.fromarray(astronaut).save(d / "trip" / "day1" / "c.webp")
    (d / "notes.txt").write_text("not a photo, ignored in folders")
    return d


def test_single_file_default_name_beside_input(photo_dir):
    assert main(["-q", str(photo_dir / "a.jpg")]) == 0
    out = photo_dir / "a_anonymized.jpg"
    assert out.exists() and Image.open(out).format == "JPEG"


def test_single_file_to_named_output(photo_dir, tmp_path):
    dst = tmp_path / "x" / "clean.png"
    assert main(["-q", str(photo_dir / "a.jpg"), "-o", str(dst)]) == 0
    assert Image.open(dst).format == "PNG"


def test_folder_is_mirrored_recursively(photo_dir, tmp_path):
    out = tmp_path / "clean"
    assert main(["-q", str(photo_dir), "-o", str(out), "--json", str(tmp_path / "faces.json")]) == 0
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["a.jpg", "trip/b.png", "trip/day1/c.webp"]
    doc = json.loads((tmp_path / "faces.json").read_text())
    skipped = [f for f in doc["files"] if f["skipped"]]
    assert [(f["file"].endswith("notes.txt"), f["skipped"]) for f in skipped] == [(True, "not a photo or video")]
    done = [f for f in doc["files"] if not f["skipped"]]
    assert len(done) == 3
    for f in done:
        assert f["error"] is None and len(f["faces"]) == 1
        face = f["faces"][0]
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0 < face["score"] <= 1


def test_folder_without_output_goes_to_sibling(photo_dir):
    assert main(["-q", str(photo_dir)]) == 0
    assert (photo_dir.parent / "photos_anonymized" / "trip" / "b.png").exists()


def test_glob_and_format(photo_dir, tmp_path):
    out = tmp_path / "g"
    assert main(["-q", str(photo_dir / "**" / "*.png"), str(photo_dir / "a.jpg"), "-o", str(out), "--format", "webp"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.webp", "b.webp"]


def test_batch_goes_on_after_bad_files_and_exits_nonzero(photo_dir, tmp_path, capsys):
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (photo_dir / "empty.png").write_bytes(b"")
    out = tmp_path / "clean"
    rc = main([str(photo_dir), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.jpg" in err and "empty.png: empty file" in err
    assert "3 anonymized" in err and "2 failed" in err
    assert (out / "trip" / "day1" / "c.webp").exists()
    # Nothing at all is left for the failed files: no partial, no temporary file.
    assert not (out / "broken.jpg").exists() and not (out / "empty.png").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_missing_input_fails(tmp_path, capsys):
    assert main([str(tmp_path / "nope.jpg")]) == 1
    assert "nope.jpg: no such file" in capsys.readouterr().err


def test_input_never_overwritten_unless_in_place(photo_dir):
    src = photo_dir / "a.jpg"
    before = src.read_bytes()
    assert main(["-q", str(src), "-o", str(src)]) == 1
    assert src.read_bytes() == before
    assert main(["-q", str(src), "--in-place"]) == 0
    assert src.read_bytes() != before


def test_skip_existing(photo_dir, tmp_path, capsys):
    out = tmp_path / "o"
    main(["-q", str(photo_dir), "-o", str(out)])
    stamp = (out / "a.jpg").stat().st_mtime_ns
    assert main([str(photo_dir), "-o", str(out), "--skip-existing"]) == 0
    assert (out / "a.jpg").stat().st_mtime_ns == stamp
    assert "3 skipped" in capsys.readouterr().err


def test_outputs_inside_input_folder_are_not_reprocessed(photo_dir):
    out = photo_dir / "out"
    assert main(["-q", str(photo_dir), "-o", str(out)]) == 0
    assert main(["-q", str(photo_dir), "-o", str(out)]) == 0
    assert not (out / "out").exists()


def test_bad_options_exit_2(photo_dir):
    for argv in (["--threshold", "2"], ["--color", "300,0,0"], ["--method", "paint"], ["--blocks", "0"]):
        with pytest.raises(SystemExit) as e:
            main([str(photo_dir / "a.jpg"), *argv])
        assert e.value.code == 2


def test_plan_collisions_reported(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.jpg").write_bytes(b"")
    jobs, errors, _ = plan_jobs([str(tmp_path / "x"), str(tmp_path / "y")], str(tmp_path / "o"), None, False)
    assert len(jobs) == 1 and "would also be written" in errors[0][1]


def test_entry_point_help_and_stdin_stdout(tmp_path, astronaut):
    exe = [sys.executable, "-m", "anonyface"]
    helptext = subprocess.run([*exe, "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("--method", "--threshold", "--mask-scale", "--json", "--keep-metadata", "exit status", "examples"):
        assert word in helptext
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    proc = subprocess.run([*exe, "-", "-q"], stdin=src.open("rb"), capture_output=True, check=True)
    out = Image.open(__import__("io").BytesIO(proc.stdout))
    assert out.format == "PNG" and out.size == (512, 512)
    assert not np.array_equal(np.asarray(out), astronaut)
