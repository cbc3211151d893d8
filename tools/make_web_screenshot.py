"""The README's picture of the web page: `anonyface serve` on a free localhost port,
the bundled sample photo uploaded through the page in headless Chromium (Debian's
`chromium`, driven by Playwright), the compare slider part-way, a screenshot.

    python tools/make_web_screenshot.py [--out docs/images/web-page.jpg]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "anonyface" / "samples" / "group.jpg"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "web-page.jpg"))
    ap.add_argument("--method", default="synth")
    ap.add_argument("--slider", type=int, default=35, help="percent of the width showing the original")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import uvicorn
    from playwright.sync_api import sync_playwright

    from anonyface.web.app import create_app

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1080})
            page.goto(f"http://127.0.0.1:{port}/")
            page.check(f'input[name="method"][value="{args.method}"]')
            page.set_input_files("#pick", str(SAMPLE))
            page.locator(".item.done").wait_for(timeout=120_000)
            page.locator(".item.done .slider").fill(str(args.slider))
            page.locator(".item.done .slider").dispatch_event("input")
            page.evaluate("document.activeElement.blur()")
            page.wait_for_timeout(300)
            page.screenshot(path=args.out, type="jpeg", quality=82)
            browser.close()
    finally:
        server.should_exit = True
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
