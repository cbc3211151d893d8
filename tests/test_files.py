"""Every file accounted for: odd names and formats, links, and what folder runs pass over."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from anonyface.cli import main


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _face_changed(path, original: np.ndarray) -> bool:
    import photos

    out = np.asarray(Image.open(path).convert("RGB")).astype(int)
    x1, y1, x2, y2 = (int(v) for v in photos.ASTRONAUT_FACE)
    return np.abs(out[y1:y2, x1:x2] - original[y1:y2, x1:x2].astype(int)).mean() > 8


def test_folder_run_takes_photos_by_their_bytes_and_lists_what_it_passes_over(tmp_path, astronaut, capsys):
    src = tmp_path / "in"
    (src / ".hidden").mkdir(parents=True)
    (src / "phone.jfif").write_bytes(_jpeg(astronaut))
    (src / "no_extension").write_bytes(_jpeg(astronaut))
    (src / ".hidden" / "kept.jpg").write_bytes(_jpeg(astronaut))
    Image.fromarray(astronaut).save(src / "camera.mpo", "MPO", save_all=True, append_images=[Image.fromarray(astronaut)])
    Image.fromarray(astronaut).save(src / "still.gif")
    Image.fromarray(astronaut).save(src / "new.avif")
    (src / "notes.txt").write_text("no photo here")
    out = tmp_path / "out"
    assert main(["-m", "blur", str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "notes.txt: skipped (not a photo or video)" in err and "1 skipped (not a photo or video)" in err
    for name in ("phone.jfif", "no_extension", ".hidden/kept.jpg", "camera.mpo", "still.gif", "new.avif"):
        assert _face_changed(out / name, astronaut), name
    # The MPO's second picture (the same face) is not carried over.
    assert getattr(Image.open(out / "camera.mpo"), "n_frames", 1) == 1


def test_animated_gif_and_multipage_tiff_are_refused_loudly(tmp_path, astronaut, capsys):
    frames = [Image.fromarray(astronaut), Image.fromarray(astronaut[::-1])]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    assert main(["-m", "blur", str(tmp_path / "anim.gif"), str(tmp_path / "pages.tif"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "anim.gif" in err and "pages.tif" in err and err.count("refused") == 2
    assert not (tmp_path / "o" / "anim.gif").exists()


def test_in_place_writes_through_a_symbolic_link(tmp_path, astronaut, capsys):
    real = tmp_path / "real.jpg"
    real.write_bytes(_jpeg(astronaut))
    link = tmp_path / "link.jpg"
    link.symlink_to(real)
    assert main(["-m", "blur", "--in-place", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert _face_changed(real, astronaut)
    assert "anonymized the file it points to" in capsys.readouterr().err


def test_in_place_refuses_a_hard_linked_photo(tmp_path, astronaut, capsys):
    a = tmp_path / "a.jpg"
    a.write_bytes(_jpeg(astronaut))
    b = tmp_path / "b.jpg"
    os.link(a, b)
    before = a.read_bytes()
    assert main(["-m", "blur", "--in-place", str(a)]) == 1
    assert "hard links" in capsys.readouterr().err
    assert a.read_bytes() == before == b.read_bytes()


def test_heic_photos(tmp_path, astronaut):
    pytest.importorskip("pillow_heif")
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.fromarray(astronaut).save(tmp_path / "phone.heic")
    assert main(["-q", "-m", "blur", str(tmp_path / "phone.heic"), "-o", str(tmp_path / "out.heic")]) == 0
    assert _face_changed(tmp_path / "out.heic", astronaut)
