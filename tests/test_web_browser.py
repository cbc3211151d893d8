"""The page of `anonyface serve` in a real headless Chromium (Debian's `chromium`, driven
by Playwright through its executable path; `make test` installs it where apt can):
upload, faces counted, before/after, download without metadata, zip, errors in plain
words, keyboard use, a phone-sized screen, a video's progress and cancel, and no
request to anywhere but the server."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_web import SAMPLE, sample_with_gps

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")


def find_chromium() -> str | None:
    for name in (os.environ.get("ANONYFACE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium; make test does it where it can)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a test-pattern camera


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # a fresh temporary profile each time
        yield b
        b.close()


@pytest.fixture
def page(browser, web_server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((web_server.url, "blob:", "data:")) else outside.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(web_server.url + "/")
    yield page
    context.close()
    assert outside == [], f"the page reached outside the server: {outside}"
    assert errors == [], f"script errors: {errors}"
    web_server.wait_idle()
    assert web_server.leftovers() == []


def test_photo_upload_result_download_and_zip(page, tmp_path, detector):
    src = tmp_path / "party.jpg"
    src.write_bytes(sample_with_gps())
    page.check('input[name="method"][value="pixelate"]')
    page.set_input_files("#pick", str(src))
    item = page.locator(".item.done")
    item.wait_for(timeout=60_000)
    status = item.locator(".status").inner_text()
    faces = int(status.split()[0])
    assert faces >= 5 and status.endswith("faces covered")
    assert "1 file done" in page.locator("#summary").inner_text()
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

    with page.expect_download() as dl:
        item.locator("a.download").click()
    assert dl.value.suggested_filename == "party_anonymized.jpg"
    out = tmp_path / "out.jpg"
    dl.value.save_as(out)
    result = Image.open(out)
    assert not result.getexif() and "exif" not in result.info  # the GPS is gone
    before = np.asarray(Image.open(src).convert("RGB"), np.float32)
    after = np.asarray(result.convert("RGB"), np.float32)
    assert before.shape == after.shape
    for face in detector.detect(before.astype(np.uint8)):
        x1, y1, x2, y2 = (int(v) for v in face.box)
        assert np.abs(before[y1:y2, x1:x2] - after[y1:y2, x1:x2]).mean() > 5, face.box  # every face changed

    with page.expect_download() as dz:
        page.click("#zip")
    zpath = tmp_path / "all.zip"
    dz.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as z:
        assert z.testzip() is None and z.namelist() == ["party_anonymized.jpg"]
        assert z.read("party_anonymized.jpg") == out.read_bytes()


def test_bad_files_say_why_in_the_page(page, tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    (tmp_path / "cut.jpg").write_bytes(SAMPLE.read_bytes()[:4000])
    page.set_input_files("#pick", [str(tmp_path / "notes.jpg"), str(tmp_path / "cut.jpg")])
    page.locator(".item.failed").nth(1).wait_for(timeout=30_000)
    texts = page.locator(".item.failed .error").all_inner_texts()
    assert any("not a photo or a video that anonyface can read" in t for t in texts), texts
    assert any("corrupt or truncated image" in t for t in texts), texts
    assert all(t.startswith("Could not anonymize this file:") for t in texts)


def test_keyboard_only(page, tmp_path):
    """Tab to the file button, Enter opens the picker; the compare toggle works by keyboard."""
    choosers: list = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))  # first: Playwright intercepts the picker from then on
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "pick-label"
    page.keyboard.press("Enter")
    for _ in range(100):
        if choosers:
            break
        page.wait_for_timeout(100)
    assert choosers, "Enter on the file button opened no file picker"
    choosers[0].set_files(str(SAMPLE))
    item = page.locator(".item.done")
    item.wait_for(timeout=60_000)
    toggle = item.locator(".toggle")
    toggle.focus()
    page.keyboard.press("Space")
    assert toggle.get_attribute("aria-pressed") == "true"
    assert item.locator(".slider").input_value() == "100"
    item.locator(".slider").focus()
    page.keyboard.press("Home")
    assert item.locator(".slider").input_value() == "0"
    page.keyboard.press("ArrowRight")
    assert "inset(0px 99% 0px 0px)" in item.locator("img.before").evaluate("e => getComputedStyle(e).clipPath")


def test_phone_screen(browser, web_server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(web_server.url + "/")
    page.set_input_files("#pick", str(SAMPLE))
    page.locator(".item.done").wait_for(timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    box = page.locator("#pick-label").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 32  # a thumb-sized button
    img = page.locator(".item.done img.after").bounding_box()
    assert img["width"] <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    context.close()
    web_server.wait_idle()


def test_video_progress_and_cancel(page, tmp_path, web_server):
    from test_video import make_clip

    make_clip(tmp_path / "long.mp4", frames=300, audio=None, size=(320, 240))
    page.check('input[name="method"][value="blur"]')
    page.set_input_files("#pick", str(tmp_path / "long.mp4"))
    item = page.locator(".item").first
    page.wait_for_function("() => /of 300 frames/.test(document.querySelector('.item .status').textContent)", timeout=60_000)
    assert float(item.locator("progress").get_attribute("value") or 0) > 0
    item.locator(".cancel").click()
    page.wait_for_function("() => document.querySelector('.item .status').textContent === 'Cancelled'", timeout=10_000)
    web_server.wait_idle()  # the worker stopped at its next frame, its folder removed
    assert web_server.leftovers() == []


def test_webcam_tab_shows_only_anonymized_frames(browser, web_server):
    """Chromium's fake camera through the Webcam tab: frames go to /v1/live and come back drawn."""
    context = browser.new_context(permissions=["camera"], viewport={"width": 1000, "height": 800})
    page = context.new_page()
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/live" in r.url and r.method == "POST" else None)
    page.goto(web_server.url + "/")
    page.keyboard.press("Tab")
    page.click("#tab-files")
    page.keyboard.press("ArrowRight")  # the tabs move with the arrow keys
    assert page.locator("#panel-camera").is_visible() and not page.locator("#panel-files").is_visible()
    page.click("#cam-start")
    try:
        page.wait_for_function("() => Number(document.querySelector('#cam-out').dataset.frames || 0) >= 3", timeout=30_000)
    except sync_api.TimeoutError:
        raise AssertionError(f"no frames drawn; the page says: {page.locator('#cam-status').inner_text()!r}") from None
    assert page.locator("#cam-status").inner_text().startswith("Live:")
    assert not page.locator("#cam-in").is_visible()  # the camera's own picture is never shown
    page.click("#cam-stop")
    assert len(sent) >= 3 and all("session=" in u for u in sent)
    page.wait_for_function("() => document.querySelector('#cam-status').textContent === 'Stopped'")
    context.close()
    web_server.wait_idle()


def test_drag_and_drop(page, astronaut):
    """A photo dropped on the drop zone (a real drop event carrying a File)."""
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "PNG")
    page.evaluate("""([bytes]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], "dropped.png", { type: "image/png" }));
        const zone = document.querySelector("#drop");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", [list(buf.getvalue())])
    item = page.locator(".item.done")
    item.wait_for(timeout=60_000)
    assert item.locator(".name").inner_text() == "dropped.png"
    assert item.locator(".status").inner_text() == "1 face covered"
    assert item.locator("a.download").get_attribute("download") == "dropped_anonymized.png"


def _inner(img: np.ndarray, box) -> np.ndarray:
    """A face's middle: a neighbour's covered ellipse may reach the edge of its box."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) / 4, (y2 - y1) / 4
    return img[int(y1 + dy):int(y2 - dy), int(x1 + dx):int(x2 - dx)]


def _download_keeps_exactly(page, item, tmp_path, boxes: list, kept: set[int]) -> None:
    with page.expect_download() as dl:
        item.locator("a.download").click()
    out = tmp_path / f"kept-{'-'.join(map(str, sorted(kept)))}.png"
    dl.value.save_as(out)
    before = np.asarray(Image.open(SAMPLE).convert("RGB"), np.int16)
    after = np.asarray(Image.open(out).convert("RGB"), np.int16)
    for i, box in enumerate(boxes):
        diff = np.abs(_inner(before, box) - _inner(after, box))
        if i in kept:
            assert diff.max() == 0, f"kept face {i + 1} changed"
        else:
            assert diff.mean() > 10, f"face {i + 1} not covered"


def test_click_faces_to_keep_them_visible(page, tmp_path):
    """Photo → outlines of its faces; a click (and Space on a face reached with Tab) keeps one;
    the photo is made again with it and the download leaves exactly the kept faces as they were."""
    page.check('input[name="method"][value="pixelate"]')
    page.click("summary")
    page.select_option("#format", "png")  # lossless: a kept face is byte for byte the original's pixels
    page.set_input_files("#pick", str(SAMPLE))
    item = page.locator(".item.done")
    item.wait_for(timeout=60_000)
    faces = item.locator("button.face")
    n = faces.count()
    assert n >= 5 and n == int(item.get_attribute("data-faces"))
    assert [faces.nth(i).get_attribute("aria-pressed") for i in range(n)] == ["false"] * n
    assert [faces.nth(i).get_attribute("aria-label") for i in range(n)] == [f"Keep face {i + 1}" for i in range(n)]
    assert item.locator(".kept-list").inner_text().startswith("Every face is covered")
    boxes = [json.loads(faces.nth(i).get_attribute("data-box")) for i in range(n)]
    assert boxes == sorted(boxes)  # numbered left to right

    def ready(kept: int) -> None:
        page.wait_for_function(f"""() => {{ const li = document.querySelector('.item.done');
            return !li.classList.contains('stale') && / {kept} kept visible$/.test(li.querySelector('.status').textContent); }}""",
                               timeout=60_000)

    faces.nth(1).click()
    assert faces.nth(1).get_attribute("aria-pressed") == "true"
    assert item.locator("a.download").get_attribute("aria-disabled") == "true"  # no stale download meanwhile
    ready(1)
    assert "face 2 (green outline)" in item.locator(".kept-list").inner_text()
    page.screenshot(path="/tmp/webkeep-kept.png", full_page=True)
    assert item.locator(".slider").input_value() == "0"  # the preview shows what the download holds
    _download_keeps_exactly(page, item, tmp_path, boxes, {1})

    faces.nth(1).focus()
    page.keyboard.press("Tab")  # to the next face
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Keep face 3"
    page.keyboard.press("Space")
    assert faces.nth(2).get_attribute("aria-pressed") == "true"
    ready(2)
    assert "faces 2, 3" in item.locator(".kept-list").inner_text()
    _download_keeps_exactly(page, item, tmp_path, boxes, {1, 2})

    faces.nth(1).focus()
    page.keyboard.press("Enter")  # Enter toggles too: face 2 covered again
    assert faces.nth(1).get_attribute("aria-pressed") == "false"
    ready(1)
    _download_keeps_exactly(page, item, tmp_path, boxes, {2})


def test_video_says_keeping_faces_is_for_the_command_line(page, tmp_path):
    from test_video import make_clip

    make_clip(tmp_path / "short.mp4", frames=4, audio=None, size=(160, 120))
    page.check('input[name="method"][value="blur"]')
    page.set_input_files("#pick", str(tmp_path / "short.mp4"))
    item = page.locator(".item.done")
    item.wait_for(timeout=60_000)
    assert "--keep" in item.locator(".video-keep-note").inner_text()
    assert item.locator("button.face").count() == 0
