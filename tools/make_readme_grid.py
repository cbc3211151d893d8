"""Make docs/images/before_after.jpg: the bundled sample photo, before and after each method.

Only the project's own composite (tools/make_sample.py) is shown, never the
evaluation photos. For a contact sheet on ../shared/data/eval, run
`anonyface-eval` (it writes out/eval-report/contact_sheet.jpg, not committed).

    python tools/make_readme_grid.py
"""

from pathlib import Path

import cv2
import numpy as np

import anonyface
from anonyface.media import read_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    src = read_image(ROOT / "src" / "anonyface" / "samples" / "group.jpg").rgb[:380, :1000]
    rows = [("original", src)]
    for method in ("synth", "blur", "pixelate"):
        rows.append((method, anonyface.Anonymizer(method=method, seed=0)(src)))
    tiles = []
    for label, img in rows:
        img = img.copy()
        cv2.putText(img, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(img)
    grid = np.vstack(tiles)
    grid = cv2.resize(grid, (grid.shape[1] * 3 // 4, grid.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    out = ROOT / "docs" / "images" / "before_after.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
