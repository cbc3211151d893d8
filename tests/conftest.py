from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import photos  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def anonymizer():
    from anonyface import Anonymizer

    return Anonymizer()


@pytest.fixture(scope="session")
def detector(anonymizer):
    return anonymizer.detector


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return photos.astronaut()


@pytest.fixture(scope="session")
def group():
    return photos.group_photo()


@pytest.fixture
def shared_eval() -> Path:
    path = SHARED / "data" / "eval"
    if not path.is_dir():
        pytest.skip("../shared/data/eval is not present")
    return path


@pytest.fixture(scope="session")
def web_server(anonymizer, tmp_path_factory):
    """`anonyface serve`'s app on a free localhost port (tests/webserver.py), sharing the
    suite's loaded models; small limits so that the 4xx cases are cheap to make."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import webserver

    server = webserver.start(anonymizer, tmp_path_factory.mktemp("web"), max_upload_bytes=8 << 20, max_pixels=4_000_000)
    yield server
    server.stop()
