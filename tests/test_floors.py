"""Options that would switch anonymization off are refused, not reported as success."""

from __future__ import annotations

import pytest

from anonyface import Anonymizer
from anonyface.cli import main


@pytest.mark.parametrize("args", [
    ["--threshold", "1"], ["--blocks", "100000"], ["--blur-strength", "0.00001"], ["--mask-scale", "0.05"],
    ["--mask-scale", "nan"], ["--feather", "inf"], ["--feather", "nan"], ["--blur-strength", "inf"],
])
def test_weak_options_are_refused(args, tmp_path, capsys, astronaut):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    with pytest.raises(SystemExit) as e:
        main([str(src), "-o", str(tmp_path / "out.png"), "-m", "blur", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err
    assert not (tmp_path / "out.png").exists()


def test_unsafe_lets_an_expert_through(tmp_path, astronaut):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    assert main(["-q", str(src), "-o", str(tmp_path / "out.png"), "-m", "blur", "--blur-strength", "0.05", "--unsafe"]) == 0


def test_the_api_refuses_too(detector):
    with pytest.raises(ValueError, match="blur_strength"):
        Anonymizer(method="blur", blur_strength=0.01, detector=detector)
    with pytest.raises(ValueError, match="threshold"):
        Anonymizer(method="blur", threshold=0.95)
    Anonymizer(method="blur", blur_strength=0.01, detector=detector, unsafe=True)
