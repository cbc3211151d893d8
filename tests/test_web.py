"""The HTTP API of `anonyface serve`, through a real uvicorn server on localhost and a
real HTTP client (httpx): photos and a video made here, the limits and the 4xx
answers, temporary files gone after every response (errors and disconnects too),
the token, the queue, the OpenAPI description."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "anonyface" / "samples" / "group.jpg"
ROOT = Path(__file__).resolve().parents[1]


def sample_with_gps() -> bytes:
    """The bundled group photo with EXIF that identifies (GPS, camera serial)."""
    im = Image.open(SAMPLE)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0xA431] = "SERIAL-12345"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPSLatitude
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        name = data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name:
            out.append((name, data))
    return out


@pytest.fixture
def client(web_server):
    with httpx.Client(base_url=web_server.url, timeout=120) as c:
        yield c
    web_server.wait_idle()
    assert web_server.leftovers() == []  # every upload and result deleted once answered


def test_health(client):
    h = client.get("/v1/health").json()
    assert h["status"] == "ok"
    assert {"blur", "pixelate", "solid", "synth"} <= set(h["methods"])
    assert h["limits"]["max_upload_bytes"] == 8 << 20 and h["token_required"] is False


def test_anonymize_photo_covers_faces_and_strips_metadata(client, group):
    original = sample_with_gps()
    r = client.post("/v1/anonymize", files={"file": ("group.jpg", original, "image/jpeg")}, data={"method": "pixelate"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert 'filename="group_anonymized.jpg"' in r.headers["content-disposition"]
    assert int(r.headers["x-anonyface-faces"]) >= 5
    out = Image.open(io.BytesIO(r.content))
    assert out.size == Image.open(SAMPLE).size
    assert not out.getexif() and "exif" not in out.info
    before = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"), np.float32)
    after = np.asarray(out.convert("RGB"), np.float32)
    face = client.post("/v1/detect", files={"file": ("g.jpg", original)}).json()["faces"][0]["box"]
    x1, y1, x2, y2 = (int(v) for v in face)
    assert np.abs(before[y1:y2, x1:x2] - after[y1:y2, x1:x2]).mean() > 10  # the face is gone
    assert np.abs(before[-40:, :200] - after[-40:, :200]).mean() < 3  # the rest kept (JPEG noise)


def test_raw_body_and_query_options(client):
    r = client.post("/v1/anonymize?method=solid&color=255,0,0&format=png&filename=g.jpg",
                    content=SAMPLE.read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and "g_anonymized.png" in r.headers["content-disposition"]


def test_detect_returns_faces(client):
    r = client.post("/v1/detect", files={"file": ("group.jpg", SAMPLE.read_bytes())}, data={"threshold": "0.5"})
    assert r.status_code == 200
    body = r.json()
    assert (body["width"], body["height"]) == Image.open(SAMPLE).size
    assert len(body["faces"]) >= 5
    assert all(len(f["box"]) == 4 and 0.5 <= f["score"] <= 1 for f in body["faces"])


def test_video_with_progress_events(client, tmp_path):
    import av
    from test_video import make_clip

    make_clip(tmp_path / "clip.mp4", frames=24)
    with client.stream("POST", "/v1/anonymize", files={"file": ("clip.mp4", (tmp_path / "clip.mp4").read_bytes())},
                       data={"method": "blur"}, headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        evs = events(r.read().decode())
    names = [n for n, _ in evs]
    assert names[0] == "queued" and names[-1] == "done" and "progress" in names, names
    last = [d for n, d in evs if n == "progress"][-1]
    assert last["frames"] == last["total"] == 24
    done = evs[-1][1]
    assert done["filename"] == "clip_anonymized.mp4" and done["media_type"] == "video/mp4"
    assert done["report"]["video"]["frames"] == 24 and done["report"]["faces_found"] >= 1
    video = client.get(done["result"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(video.content)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 24
    again = client.get(done["result"])
    assert again.status_code == 404 and "fetched once" in again.json()["error"]


def test_video_plain_response(client, tmp_path):
    from test_video import make_clip

    make_clip(tmp_path / "clip.webm", codec="libvpx-vp9", frames=6, audio=None)
    r = client.post("/v1/anonymize", files={"file": ("clip.webm", (tmp_path / "clip.webm").read_bytes())},
                    data={"method": "pixelate", "no_audit": "true", "detect_every": "1"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/webm" and r.content[:4] == b"\x1aE\xdf\xa3"


@pytest.mark.parametrize("body,fields,status,words", [
    (b"just some text, no picture", {}, 415, "not a photo or a video"),
    (SAMPLE.read_bytes()[:5000], {}, 422, "corrupt or truncated"),
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200, {}, 422, "video"),
    (SAMPLE.read_bytes(), {"mask_scale": "0.5"}, 400, "--mask-scale"),
    (SAMPLE.read_bytes(), {"method": "paint"}, 400, "invalid choice"),
    (SAMPLE.read_bytes(), {"colour": "red"}, 400, "unknown option 'colour'"),
    (SAMPLE.read_bytes(), {"max_pixels": "999999999"}, 400, "unknown option 'max_pixels'"),
    (SAMPLE.read_bytes(), {"quality": "500"}, 400, "quality"),
    (SAMPLE.read_bytes(), {"keep_metadata": "maybe"}, 400, "true or false"),
    (b"", {}, 400, "empty"),
])
def test_bad_input_gets_4xx_in_plain_words(client, body, fields, status, words):
    r = client.post("/v1/anonymize", files={"file": ("upload.jpg", body)}, data=fields)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_size_and_pixel_limits(client):
    big = client.post("/v1/anonymize", files={"file": ("big.jpg", b"\xff\xd8\xff" + bytes(9 << 20))})
    assert big.status_code == 413 and "up to 8 MB" in big.json()["error"]
    chunked = client.post("/v1/anonymize", content=iter([b"\xff\xd8\xff"] + [bytes(1 << 20)] * 10),
                          headers={"content-type": "image/jpeg"})
    assert chunked.status_code == 413
    buf = io.BytesIO()
    Image.new("RGB", (3000, 1500), (90, 120, 60)).save(buf, "PNG")  # 4.5 MP, a few kB
    wide = client.post("/v1/anonymize", files={"file": ("wide.png", buf.getvalue())})
    assert wide.status_code == 413 and "megapixels" in wide.json()["error"] and "serve --max-pixels" in wide.json()["error"]
    missing = client.post("/v1/anonymize", data={"method": "blur"}, files={"other": ("x.jpg", b"x")})
    assert missing.status_code == 400
    assert client.post("/v1/detect", files={"file": ("wide.png", buf.getvalue())}).status_code == 413


def test_detect_refuses_video(client, tmp_path):
    from test_video import make_clip

    make_clip(tmp_path / "c.mp4", frames=2, audio=None)
    r = client.post("/v1/detect", files={"file": ("c.mp4", (tmp_path / "c.mp4").read_bytes())})
    assert r.status_code == 415 and "/v1/anonymize" in r.json()["error"]


def test_client_disconnect_cancels_and_cleans_up(web_server, tmp_path):
    """Closing the event stream mid-video stops the worker; its folder is removed."""
    from test_video import make_clip

    make_clip(tmp_path / "long.mp4", frames=240, audio=None, size=(320, 240))
    with httpx.Client(base_url=web_server.url, timeout=60) as c:
        with c.stream("POST", "/v1/anonymize", files={"file": ("long.mp4", (tmp_path / "long.mp4").read_bytes())},
                      data={"method": "blur"}, headers={"accept": "text/event-stream"}) as r:
            for line in r.iter_lines():
                if line.startswith("event: progress"):
                    break  # working: now hang up
    web_server.wait_idle()
    assert web_server.leftovers() == []
    assert len(web_server.state.results) == 0  # cancelled, so nothing was kept for fetching


def test_origin_host_and_token(anonymizer, tmp_path, web_server):
    import webserver

    with httpx.Client(base_url=web_server.url) as c:
        foreign = c.post("/v1/detect", files={"file": ("g.jpg", SAMPLE.read_bytes())}, headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403 and "another site" in foreign.json()["error"]
        rebound = c.get("/v1/results/x", headers={"host": "evil.example:8000"})
        assert rebound.status_code == 403
    locked = webserver.start(anonymizer, tmp_path, token="s3cret")
    try:
        with httpx.Client(base_url=locked.url) as c:
            assert c.get("/v1/health").json()["token_required"] is True
            no = c.post("/v1/detect", files={"file": ("g.jpg", SAMPLE.read_bytes())})
            assert no.status_code == 401 and "token" in no.json()["error"]
            bad = c.post("/v1/detect", files={"file": ("g.jpg", SAMPLE.read_bytes())}, headers={"authorization": "Bearer nope"})
            assert bad.status_code == 401
            ok = c.post("/v1/detect", files={"file": ("g.jpg", SAMPLE.read_bytes())}, headers={"authorization": "Bearer s3cret"})
            assert ok.status_code == 200
        assert locked.leftovers() == []
    finally:
        locked.stop()
    assert not locked.root.exists()  # the server's temporary folder goes with it


def test_worker_pool_is_bounded():
    from anonyface.web.jobs import Busy, WorkerPool

    pool = WorkerPool(workers=1, queue=1)
    gate = threading.Event()
    running = [pool.submit(gate.wait), pool.submit(gate.wait)]
    with pytest.raises(Busy, match="busy"):
        pool.submit(gate.wait)
    assert (pool.active, pool.waiting) == (2, 1)
    gate.set()
    assert all(f.result(timeout=5) for f in running)
    pool.shutdown()
    assert pool.active == 0 and pool.done == 2


def test_concurrent_uploads_all_answered(client):
    """More uploads at once than workers: they queue, none is lost."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return client.post("/v1/anonymize", files={"file": (f"g{i}.jpg", SAMPLE.read_bytes())},
                           data={"method": "blur", "no_audit": "true"})

    with ThreadPoolExecutor(4) as ex:
        answers = list(ex.map(one, range(4)))
    assert [r.status_code for r in answers] == [200] * 4
    assert all(int(r.headers["x-anonyface-faces"]) >= 5 for r in answers)


def test_openapi_matches_routes_and_cli_options(client):
    from anonyface.web.options import form_actions, field_name, parse_options

    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and set(spec["paths"]) == {"/v1/anonymize", "/v1/detect", "/v1/results/{key}", "/v1/live", "/v1/health"}
    fields = spec["paths"]["/v1/anonymize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "method", "threshold", "mask_scale", "blocks", "no_audit", "keep_metadata", "crf"} <= set(fields)
    assert fields["method"]["enum"] == ["synth", "blur", "pixelate", "solid"] and fields["mask_scale"]["default"] == 1.3
    assert not {"max_pixels", "output", "in_place", "json"} & set(fields)
    assert set(fields) - {"file", "keep_boxes"} == {field_name(a) for a in form_actions()}
    parse_options({"threshold": "0.4", "no_smooth": "true", "crf": "30"})  # the documented names parse
    docs = client.get("/docs")
    assert docs.status_code == 200 and "mask_scale" in docs.text and "<script" not in docs.text


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    static = ROOT / "src" / "anonyface" / "web" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text, f"{f.name} names an outside address"
        assert client.get(f"/static/{f.name}").status_code == 200


def test_serve_command_warns_off_localhost():
    proc = subprocess.run([sys.executable, "-m", "anonyface", "serve", "--host", "0.0.0.0", "--workers", "0"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert "WARNING" in proc.stderr and "--token" in proc.stderr
    assert proc.returncode == 2  # then refused: --workers 0
    helped = subprocess.run([sys.executable, "-m", "anonyface", "serve", "--help"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0 and "--token" in helped.stdout and "127.0.0.1" in helped.stdout


def test_live_frames_are_tracked_and_covered(client, web_server, astronaut):
    """The webcam tab's endpoint: frames of one session share a tracker; the face is covered."""
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "JPEG", quality=90)
    frame = buf.getvalue()
    query = {"session": "test-camera-1", "method": "pixelate", "seed": "3"}
    answers = [client.post("/v1/live", params=query, content=frame, headers={"content-type": "image/jpeg"}) for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 3, answers[0].text
    assert all(r.headers["content-type"] == "image/jpeg" and r.headers["x-anonyface-faces"] == "1" for r in answers)
    out = np.asarray(Image.open(io.BytesIO(answers[-1].content)).convert("RGB"), np.float32)
    x1, y1, x2, y2 = 177, 60, 270, 181  # the astronaut's face
    assert np.abs(out[y1:y2, x1:x2] - astronaut[y1:y2, x1:x2].astype(np.float32)).mean() > 10
    assert client.get("/v1/health").json()["live_sessions"] == 1
    assert client.post("/v1/live", params={"session": "x"}, content=frame).status_code == 400
    assert client.post("/v1/live", params={"session": "test-camera-2"}, content=b"nope").status_code == 415
    assert client.delete("/v1/live", params={"session": "test-camera-1"}).json() == {"ended": True}
    assert client.get("/v1/health").json()["live_sessions"] == 0


def _anonymize_events(client, body: bytes, name: str, data: dict) -> tuple[dict, bytes]:
    """(report, result bytes) of an upload through the page's way: server-sent events, then the result."""
    with client.stream("POST", "/v1/anonymize", files={"file": (name, body)}, data=data,
                       headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200, r.read()
        evs = events(r.read().decode())
    assert evs[-1][0] == "done", evs
    done = evs[-1][1]
    return done["report"], client.get(done["result"]).content


def test_keep_boxes_leaves_the_chosen_face_and_covers_every_other(client):
    """The page's click: one face's box in `keep_boxes`; its pixels come back as they were
    (PNG out, so no re-encoding noise), every other face is covered, the report says which."""
    faces = client.post("/v1/detect", files={"file": ("g.jpg", SAMPLE.read_bytes())}).json()["faces"]
    assert len(faces) >= 5
    keep = faces[1]["box"]
    report, data = _anonymize_events(client, SAMPLE.read_bytes(), "group.jpg",
                                     {"method": "pixelate", "format": "png", "keep_boxes": json.dumps([keep])})
    assert [k["box"] for k in report["kept"]] == [keep] and report["kept"][0]["reference"] == "chosen by hand"
    assert len(report["faces"]) == len(faces) - 1 and keep not in [f["box"] for f in report["faces"]]
    before = np.asarray(Image.open(SAMPLE).convert("RGB"), np.float32)
    after = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)

    def inner(img, box):  # the face's middle: a neighbour's covered ellipse may reach its box's edge
        x1, y1, x2, y2 = box
        dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
        return img[int(y1 + dy):int(y2 - dy), int(x1 + dx):int(x2 - dx)]

    assert np.abs(inner(before, keep) - inner(after, keep)).max() == 0  # the kept face, untouched
    for f in faces:
        if f["box"] != keep:
            assert np.abs(inner(before, f["box"]) - inner(after, f["box"])).mean() > 10, f["box"]  # every other covered
    none_kept, _ = _anonymize_events(client, SAMPLE.read_bytes(), "group.jpg", {"method": "blur", "keep_boxes": "[]"})
    assert none_kept.get("kept") is None and len(none_kept["faces"]) == len(faces)


@pytest.mark.parametrize("value,status,words", [
    ("[[1, 2, 3]]", 400, "[x1, y1, x2, y2]"),
    ("not json", 400, "must be JSON"),
    ('{"box": [1, 2, 3, 4]}', 400, "must be a list"),
    ('[[50, 50, 10, 10]]', 400, "empty"),
    ('[[0, 0, "a", 10]]', 400, "finite number"),
    ("[[0, 0, NaN, 10]]", 400, "finite number"),
    (json.dumps([[0, 0, 10, 10]] * 201), 400, "at most 200"),
    ("[[5000, 5000, 5100, 5100]]", 422, "outside"),
])
def test_bad_keep_boxes_get_4xx(client, value, status, words):
    r = client.post("/v1/anonymize", files={"file": ("g.jpg", SAMPLE.read_bytes())}, data={"method": "blur", "keep_boxes": value})
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and "keep_boxes" in r.json()["error"]


def test_keep_boxes_refused_for_video(client, tmp_path):
    from test_video import make_clip

    make_clip(tmp_path / "c.mp4", frames=2, audio=None)
    r = client.post("/v1/anonymize", files={"file": ("c.mp4", (tmp_path / "c.mp4").read_bytes())},
                    data={"method": "blur", "keep_boxes": "[[0, 0, 10, 10]]"})
    assert r.status_code == 400 and "photos only" in r.json()["error"] and "--keep" in r.json()["error"]
    from anonyface.files import FileOptions, process_file  # and below the web layer: nothing is written

    with pytest.raises(ValueError, match="photos only"):
        process_file(None, tmp_path / "c.mp4", tmp_path / "out.mp4", FileOptions(keep_boxes=[[0, 0, 10, 10]]))
    assert not (tmp_path / "out.mp4").exists()
