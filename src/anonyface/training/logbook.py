"""The Markdown log of training legs (`training/LOG.md` in the repository): one row per leg.

The path is always given explicitly (`anonyface-train train --log PATH`); the
trainer never derives it from where the code lives.
"""

from __future__ import annotations

import math
from pathlib import Path

LOG_HEADER = """# Generator training log

One line per training leg (`anonyface-train train --log training/LOG.md`; GPU legs bring theirs back as `LOG-line.md`).
FD = Fréchet distance of generated vs real validation crops on ImageNet
MobileNetV2 1280-d pooled features (fixed first-N validation crops, fixed z):
comparable only across these legs, **not** to published FID. Pose error = mean
landmark distance (our RetinaFace on the generated crop vs the conditioning
landmarks) / inter-ocular distance; det. = share of generated crops where a
face was detected. "real" columns give the same measures on the real crops.

| date (UTC) | run | config | device | minutes | steps | images seen | img/s | G adv | L1 | perc | D loss | FD | pose err | det. | real pose | real det. |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def append_log(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(LOG_HEADER)

    def f(v, fmt="{:.3f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    cells = [
        row["date"], row["run"], row["config"], row["device"], f(row["minutes"], "{:.1f}"), str(row["step"]),
        str(row["images_seen"]), f(row["img_s"], "{:.1f}"), f(row.get("g_adv")), f(row.get("l1")), f(row.get("perc")),
        f(row.get("d_loss")), f(row.get("fd"), "{:.2f}"), f(row.get("pose_err")), f(row.get("det_rate"), "{:.2f}"),
        f(row.get("real_pose_err")), f(row.get("real_det_rate"), "{:.2f}"),
    ]
    with open(path, "a") as fh:
        fh.write("| " + " | ".join(cells) + " |\n")
