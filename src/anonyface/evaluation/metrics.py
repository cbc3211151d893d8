"""The measures themselves, each a small pure function of pixels and boxes.

Coverage — when is a face "left unchanged"?
    Take the inner half of the judge's face box (the box shrunk to half its
    width and half its height about its centre: eyes, nose and mouth). Convert
    original and output to grey (ITU-R 601 luma). A pixel *changed* when its grey
    level moved by more than `CHANGE_LEVEL` = 8 of 255. The face is *unchanged*
    (uncovered, a privacy failure) when fewer than `COVERED_SHARE` = 25 % of
    those pixels changed. Re-encoding an untouched face as JPEG (quality 95)
    changes 0–1 % of them by more than 8 levels; on the astronaut composites
    blur changes 85–90 %, pixelate 75–80 %, solid 100 %, and over the real
    evaluation run no covered face (any method, deface included) fell below
    39 % (smooth skin under large mosaic cells stays within 8 levels in
    places, hence 25 % and not 50 %). This tells untouched from covered; how
    well a face is covered is re-identification's job.

    A level threshold cannot judge a face whose own contrast is about that
    level: in a dark scene a new face lit like its surroundings moves most
    pixels by fewer than 8 levels (interview.mp4's audience, docs/evaluation.md).
    So a face whose pixels barely moved still counts as *covered* when its
    structure did not survive: the zero-mean normalised correlation of the
    original and output grey inner halves (`structure_kept`) is below
    `KEPT_NCC` = 0.5. An untouched face keeps ≈ 1 (JPEG q95: > 0.95), and a
    textured face cannot lose its structure while moving under 8 levels, so
    this only ever decides low-contrast faces. Faces flatter than
    `MIN_STRUCTURE_STD` grey levels (a black patch) have no structure to lose:
    for them the level rule alone decides.

Retention (utility / realism) — a reference face is *retained* by an output
    when the same independent detector still finds a face at the same place in
    it: a box whose IoU with that detector's box on the original is at least
    `RETAIN_IOU` = 0.4 (`retained_at`). Every reference face counts, however
    small; the report also gives it by size band (`SIZE_BANDS`, the face's
    width in px). The earlier, looser rule (`same_face`: centres within half a
    width, widths within 2.5×) is kept beside it as `retained_centre`.

Same place — two boxes are the same face when their centres are closer than
    half the smaller box's width and their widths differ by less than 2.5×
    (dlib's square brows-to-lip boxes and CenterFace's brows-to-chin boxes of
    one face always satisfy this; neighbours in a crowd do not).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..geometry import box_iou

CHANGE_LEVEL = 8
COVERED_SHARE = 0.25
KEPT_NCC = 0.5
MIN_STRUCTURE_STD = 2.0
#: Faces below this width (px) are left out of the Fréchet distance and pose measures.
MIN_CROP_PX = 32


def inner_half(box, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    ix1 = int(max(0, min(w - 1, math.floor(x1 + bw / 4))))
    iy1 = int(max(0, min(h - 1, math.floor(y1 + bh / 4))))
    ix2 = int(max(ix1 + 1, min(w, math.ceil(x2 - bw / 4))))
    iy2 = int(max(iy1 + 1, min(h, math.ceil(y2 - bh / 4))))
    return ix1, iy1, ix2, iy2


def _grey(a: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.int16)


def _inner_greys(original: np.ndarray, output: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels of the inner half of `box` in the original and the output."""
    x1, y1, x2, y2 = inner_half(box, original.shape[1], original.shape[0])
    return _grey(original[y1:y2, x1:x2]), _grey(output[y1:y2, x1:x2])


def changed_share(original: np.ndarray, output: np.ndarray, box, level: int = CHANGE_LEVEL) -> float:
    """Share of the inner half of `box` whose grey level moved by more than `level`."""
    a, b = _inner_greys(original, output, box)
    return float((np.abs(a - b) > level).mean()) if a.size else 1.0


def structure_kept(original: np.ndarray, output: np.ndarray, box) -> float | None:
    """Zero-mean normalised correlation of the grey inner halves of `box` in the original
    and the output (1: same structure); None when the original's is flatter than
    `MIN_STRUCTURE_STD` levels (no structure to judge)."""
    a, b = (g.astype(np.float64) for g in _inner_greys(original, output, box))
    if a.size < 4 or a.std() < MIN_STRUCTURE_STD:
        return None
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def is_unchanged(share: float, kept: float | None = None, covered_share: float = COVERED_SHARE) -> bool:
    """Uncovered: few pixels moved by more than `CHANGE_LEVEL`, and (when the face has
    structure to judge) its structure survived (`structure_kept` ≥ `KEPT_NCC`)."""
    return share < covered_share and (kept is None or kept >= KEPT_NCC)


def face_unchanged(original: np.ndarray, output: np.ndarray, box) -> tuple[float, float | None, bool]:
    """(changed share, structure kept, unchanged?) of one judge's box."""
    share = changed_share(original, output, box)
    kept = structure_kept(original, output, box) if share < COVERED_SHARE else None
    return share, kept, is_unchanged(share, kept)


def same_face(a, b) -> bool:
    aw, bw = a[2] - a[0], b[2] - b[0]
    if aw <= 0 or bw <= 0 or max(aw, bw) / min(aw, bw) >= 2.5:
        return False
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    return math.hypot(ca[0] - cb[0], ca[1] - cb[1]) < 0.5 * min(aw, bw)


def found_at(box, boxes) -> bool:
    return any(same_face(box, b) for b in boxes)


#: A face is retained when the judge finds a box with at least this IoU with its original box.
RETAIN_IOU = 0.4
#: Size bands of reference faces (width in px): (label, lower bound, upper bound).
SIZE_BANDS = (("<16", 0, 16), ("16-24", 16, 24), ("24-48", 24, 48), ("48-96", 48, 96), (">=96", 96, math.inf))


def retained_at(box, boxes, min_iou: float = RETAIN_IOU) -> bool:
    """Is there a box among `boxes` at the same place as `box` (IoU ≥ `min_iou`)?"""
    return any(box_iou(box, b) >= min_iou for b in boxes)


def size_band(width: float) -> str:
    return next(label for label, lo, hi in SIZE_BANDS if lo <= width < hi)


@dataclass
class RefFace:
    """One face of the original, as found by one or more independent detectors."""

    members: dict = field(default_factory=dict)  # detector name -> Detection

    @property
    def main(self):
        """The box used for size, crops and re-identification: dlib's when there is one
        (the embedding was trained on its framing), else the first detector's."""
        for name in ("hog", "mmod"):
            if name in self.members:
                return self.members[name]
        return next(iter(self.members.values()))

    @property
    def width(self) -> float:
        return max(d.width for d in self.members.values())

    def matches(self, det) -> bool:
        return any(same_face(m.box, det.box) for m in self.members.values())


def cluster(detections_by_detector: dict[str, list]) -> list[RefFace]:
    """Merge the detectors' boxes into faces (greedy, in detector order, by `same_face`)."""
    faces: list[RefFace] = []
    for name, dets in detections_by_detector.items():
        for d in sorted(dets, key=lambda d: -d.score):
            for f in faces:
                if name not in f.members and f.matches(d):
                    f.members[name] = d
                    break
            else:
                faces.append(RefFace({name: d}))
    faces.sort(key=lambda f: (f.main.box[1], f.main.box[0]))
    return faces


# -- Fréchet distance on MobileNetV2 features (training/metrics.py does the maths) ------

class FeatureExtractor:
    """1280-d pooled ImageNet MobileNetV2 features of 128×128 face crops."""

    def __init__(self) -> None:
        import torch

        from ..training.mobilenet import FeatureNet

        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
        self.net = FeatureNet()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        from ..training.metrics import pooled_features

        return pooled_features(self.net, crops)


def frechet(real: np.ndarray, fake: np.ndarray) -> float | None:
    from ..training.metrics import frechet_distance_features

    if len(real) < 2 or len(fake) < 2:
        return None
    return frechet_distance_features(real, fake)


# -- metadata -----------------------------------------------------------------------------

#: A string no camera writes; found anywhere in an output's bytes it is a leak.
MARKER = "ANONYFACE-EVAL-SECRET-7731"


def _iptc_app13(text: str) -> bytes:
    """A JPEG APP13 (Photoshop 3.0 / IPTC-IIM) segment with a by-line and a caption."""
    def rec(tag: int, value: bytes) -> bytes:
        return b"\x1c\x02" + bytes([tag]) + struct.pack(">H", len(value)) + value

    iim = rec(80, text.encode()) + rec(120, text.encode())
    res = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    if len(iim) % 2:
        res += b"\x00"
    payload = b"Photoshop 3.0\x00" + res
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def tagged_copy(rgb: np.ndarray, fmt: str) -> bytes:
    """Encode `rgb` with every identifying tag a camera or editor may write:
    EXIF (make, model, body and lens serial numbers, owner, artist, date, GPS
    position), XMP, a JPEG comment and IPTC by-line, PNG text chunks."""
    from PIL import ExifTags, Image
    from PIL.PngImagePlugin import PngInfo

    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"                 # Make
    exif[0x0110] = "Model X"                     # Model
    exif[0x013B] = f"Artist {MARKER}"            # Artist
    exif[0x8298] = f"(c) {MARKER}"               # Copyright
    exif[0x0132] = "2024:05:01 12:00:00"         # DateTime
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[0xA431] = f"SN{MARKER}"                  # BodySerialNumber
    sub[0xA435] = "LENS123456"                   # LensSerialNumber
    sub[0xA430] = f"Owner {MARKER}"              # CameraOwnerName
    sub[0x9003] = "2024:05:01 12:00:00"          # DateTimeOriginal
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)     # latitude
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)      # longitude
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="{MARKER}"/>'
        "</rdf:RDF></x:xmpmeta>"
    ).encode()
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=95, exif=exif.tobytes(), xmp=xmp, comment=f"comment {MARKER}".encode())
        data = buf.getvalue()
        return data[:2] + _iptc_app13(MARKER) + data[2:]  # right after SOI
    png = PngInfo()
    png.add_text("Author", MARKER)
    png.add_text("GPS", "48.858,2.294")
    png.add_itxt("Description", f"Taken by {MARKER}")
    img.save(buf, "PNG", exif=exif.tobytes(), xmp=xmp, pnginfo=png)
    return buf.getvalue()


def leaked_tags(data: bytes) -> list[str]:
    """Identifying metadata left in an encoded image (empty list: clean)."""
    from PIL import ExifTags, Image

    left: list[str] = []
    if MARKER.encode() in data:
        left.append("marker-text")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception:
        return left + ["unreadable"]
    exif = im.getexif()
    if exif.get_ifd(ExifTags.IFD.GPSInfo):
        left.append("exif-gps")
    for tag, name in ((0x010F, "exif-make"), (0x0110, "exif-model"), (0x013B, "exif-artist"), (0x8298, "exif-copyright")):
        if exif.get(tag):
            left.append(name)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, name in ((0xA431, "exif-body-serial"), (0xA435, "exif-lens-serial"), (0xA430, "exif-owner"),
                      (0x9003, "exif-datetime-original")):
        if sub.get(tag):
            left.append(name)
    if im.info.get("xmp") or im.info.get("XML:com.adobe.xmp"):
        left.append("xmp")
    if im.info.get("comment"):
        left.append("jpeg-comment")
    if any(m == "APP13" for m, _ in getattr(im, "applist", [])):
        left.append("iptc-app13")
    text = getattr(im, "text", None) or {}
    if text:
        left.append("png-text")
    return left
