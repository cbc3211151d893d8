"""Make the bundled demo photo `src/anonyface/samples/group.jpg`.

A composite the project makes itself: the public-domain `astronaut` photo
from scikit-image (NASA, public domain) pasted at several sizes and tilts onto
a generated background, so the demo shows small, large and rotated faces.

    python tools/make_sample.py   (needs scikit-image: pip install -e '.[test]')
"""

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import photos  # noqa: E402


def main() -> None:
    img, _ = photos.group_photo(sizes=(150, 96, 64, 40, 28, 20), angles=(0, 10, -12, 0, 8, 0), width=1200, seed=7)
    out = ROOT / "src" / "anonyface" / "samples" / "group.jpg"
    Image.fromarray(img).save(out, quality=88)
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
