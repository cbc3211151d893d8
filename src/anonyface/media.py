"""Reading and writing photos: formats, modes, orientation, metadata, atomic writes.

Privacy rules live here: EXIF orientation is applied before detection (a face
lying on its side is hard to find), identifying metadata is dropped unless the
caller asks to keep it, colour profiles are kept, and an output appears only
whole (temporary file, then rename).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats we read and write, by Pillow's name, and the extensions that choose them.
#: MPO (phone JPEGs with a second picture inside) is read as its first picture and
#: written as JPEG; HEIF needs pillow-heif (`pip install "anonyface[heif]"`).
FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".mpo": "JPEG", ".png": "PNG",
    ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF", ".avif": "AVIF",
    ".heic": "HEIF", ".heif": "HEIF",
}
IMAGE_EXTENSIONS = frozenset(FORMATS)
#: What Pillow calls a format we read → the format we write it back in.
_WRITE_AS = {"MPO": "JPEG"}


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_AVAILABLE = _register_heif()


def sniff(head: bytes) -> str | None:
    """What a file's first bytes say it is: "image", "video" or None (not media we know).
    Used to tell a photo without a known extension from a file to skip."""
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
            return "image"
        return "video"
    if head.startswith(b"\x1aE\xdf\xa3") or (head[:4] == b"RIFF" and head[8:11] == b"AVI"):
        return "video"
    return None

#: Refuse images above this many pixels unless told otherwise (decompression bombs).
DEFAULT_MAX_PIXELS = 100_000_000

#: Enough bytes for any photo within the pixel limit, even uncompressed (4 bytes a pixel:
#: RGBA, CMYK), plus room for metadata; a longer input (a device, a pipe) is refused.
def max_input_bytes(max_pixels: int) -> int:
    return 4 * max_pixels + (64 << 20)

_ORIENTATION = 0x0112


class ImageError(Exception):
    """A photo that cannot be read or written; the message says why, for people."""


@dataclass
class Picture:
    """A decoded photo, upright, as RGB for the detector plus what is needed to write it back.

    `rgb` is what gets anonymized. `original` is the upright image in its own
    mode, used to rebuild that mode around the changed pixels (grey, CMYK and
    16-bit images keep every pixel outside the faces exactly).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    original: Image.Image
    format: str
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.original.size


def format_for(path: str | os.PathLike) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def _png_bit_depth(data: bytes) -> int:
    return data[24] if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 else 8


def read_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode a photo from a path or bytes. Raises `ImageError` with a readable reason."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as f:
                data = read_input(f, max_pixels)
        except IsADirectoryError:
            raise ImageError("is a directory") from None
        except OSError as e:
            raise ImageError(f"cannot read file: {e.strerror or e}") from None
    if not data:
        raise ImageError("empty file")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if limit is not None and max_pixels * 2 > limit:
                Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard, raised to ours
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"image is {w}×{h} = {w * h / 1e6:.0f} megapixels, over the limit of "
                    f"{max_pixels / 1e6:.0f} (a decompression bomb?); raise it with --max-pixels"
                )
            if w == 0 or h == 0:
                raise ImageError("image has no pixels")
            fmt = _WRITE_AS.get(im.format, im.format or "PNG")
            if fmt not in set(FORMATS.values()):
                raise ImageError(f"unsupported image format {fmt}; supported: JPEG, PNG, WebP, BMP, TIFF, GIF, AVIF, HEIF")
            if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
                raise ImageError(
                    f"{fmt} with {im.n_frames} frames/pages: refused, only single-frame images are anonymized "
                    "(a frame left as it is could show a face)"
                )
            im.load()  # an MPO's first picture: the second one is dropped, never written
    except ImageError:
        raise
    except UnidentifiedImageError:
        if sniff(data[:16]) == "image" and data[4:8] == b"ftyp" and not HEIF_AVAILABLE:
            raise ImageError('HEIC/HEIF photos need pillow-heif: pip install "anonyface[heif]"') from None
        raise ImageError("not an image, or a format that cannot be read") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"corrupt or truncated image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit

    if fmt in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA"):
        deep = _png_bit_depth(data) == 16 if fmt == "PNG" else _tiff_bits(im) > 8
        if deep:
            raise ImageError(
                "16-bit colour images are not supported (Pillow would silently reduce them to 8 bits); "
                "convert to 8-bit colour first"
            )
    info = _collect_info(im)
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception as e:  # a broken EXIF block should not stop anonymization
        warnings.warn(f"ignoring unreadable EXIF orientation: {e}")
        upright = im
    rgb, alpha = to_rgb(upright)
    return Picture(rgb, alpha, upright, fmt, info)


def read_input(f, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """All of a photo's bytes from an open binary file, a pipe or a device, bounded:
    an input no image plugin recognises is refused after its first 64 KiB, and one
    longer than `max_input_bytes` (no photo within the pixel limit is) is refused
    when it gets there (/dev/zero, an endless pipe)."""
    limit = max_input_bytes(max_pixels)
    try:
        size = os.fstat(f.fileno()).st_size if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None
    except (OSError, AttributeError, io.UnsupportedOperation):
        size = None
    if size is not None and size > limit:
        raise ImageError(f"file is {size / 1e6:.0f} MB, more than any photo within --max-pixels takes ({limit / 1e6:.0f} MB)")
    head = f.read(1 << 16)
    if head and not _recognised(head):
        raise ImageError("not an image, or a format that cannot be read")
    chunks, total = [head], len(head)
    while head:
        head = f.read(min(1 << 20, limit + 1 - total))
        chunks.append(head)
        total += len(head)
        if total > limit:
            raise ImageError(f"input is longer than any photo within --max-pixels ({limit / 1e6:.0f} MB): not read further")
    return b"".join(chunks)


def _recognised(head: bytes) -> bool:
    """Whether some registered Pillow plugin recognises these first bytes as its format
    (plugins that recognise nothing by itself, like TGA, are not among ours)."""
    Image.init()
    for accept in (Image.OPEN[i][1] for i in Image.ID if i in Image.OPEN):
        try:
            if accept is not None and accept(head):
                return True
        except Exception:
            continue
    return False


def _tiff_bits(im: Image.Image) -> int:
    bits = getattr(im, "tag_v2", {}).get(258, (8,))
    return max(bits) if isinstance(bits, tuple) else int(bits)


def _collect_info(im: Image.Image) -> dict:
    """Everything we might write back: the colour profile always, the rest only on request."""
    info: dict = {}
    for key in ("icc_profile", "dpi", "compression", "xmp", "comment", "exif"):
        if im.info.get(key):
            info[key] = im.info[key]
    if im.format == "PNG":
        text = {k: v for k, v in getattr(im, "text", {}).items() if isinstance(v, str)}
        if text:
            info["text"] = text
    if "xmp" not in info and im.info.get("XML:com.adobe.xmp"):
        info["xmp"] = im.info["XML:com.adobe.xmp"]
    return info


def to_rgb(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 pixels for the detector, and the alpha channel if there is one."""
    mode = im.mode
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        return np.ascontiguousarray(np.asarray(rgba)[..., :3]), alpha
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    if mode == "F":
        raise ImageError("floating-point images are not supported")
    try:
        return np.array(im.convert("RGB")), None
    except (ValueError, OSError) as e:
        raise ImageError(f"cannot convert image mode {mode} to RGB: {e}") from None


def to_pil(picture: Picture, rgb: np.ndarray) -> Image.Image:
    """Rebuild an image in the photo's own mode from anonymized RGB pixels.

    Pixels the anonymizer did not touch keep their original values exactly,
    also in modes that do not survive a round trip through RGB.
    """
    orig = picture.original
    mode = orig.mode
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB")
    if picture.alpha is not None:
        out = Image.fromarray(np.dstack([rgb, picture.alpha]), "RGBA")
        return out.convert("LA") if mode == "LA" else out
    changed = np.any(rgb != picture.rgb, axis=2)
    if mode == "L":
        return Image.fromarray(rgb, "RGB").convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.array(orig)
        grey = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr[changed] = np.rint(grey[changed] / 255.0 * top).astype(arr.dtype)
        return Image.fromarray(arr)
    if mode in ("CMYK", "1"):
        arr = np.array(orig)
        new = np.asarray(Image.fromarray(rgb, "RGB").convert(mode))
        arr[changed] = new[changed]
        return Image.fromarray(arr) if mode == "1" else Image.frombytes(mode, orig.size, arr.tobytes())
    return Image.fromarray(rgb, "RGB")  # palette, YCbCr, LAB, HSV: written as RGB


def encode_image(
    img: Image.Image, fmt: str, info: dict, keep_metadata: bool = False, quality: int = 95
) -> bytes:
    """Encode with only the metadata we mean to keep (never the source's EXIF by accident)."""
    params: dict = {}
    if info.get("icc_profile"):
        params["icc_profile"] = info["icc_profile"]
    if info.get("dpi") and fmt in ("JPEG", "PNG", "TIFF"):
        params["dpi"] = info["dpi"]
    if keep_metadata:
        if info.get("exif") and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            exif = Image.Exif()
            exif.load(info["exif"])
            exif[_ORIENTATION] = 1  # the pixels are upright now
            params["exif"] = exif.tobytes()
        if info.get("xmp") and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            params["xmp"] = info["xmp"]
        if info.get("comment") and fmt == "JPEG":
            params["comment"] = info["comment"]
        if info.get("text") and fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            png = PngInfo()
            for k, v in info["text"].items():
                png.add_text(k, v)
            params["pnginfo"] = png
    if fmt == "JPEG":
        if img.mode in ("RGBA", "LA", "P", "PA", "I;16", "I"):
            img = img.convert("RGB" if img.mode in ("RGBA", "P", "PA") else "L")
        params.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        params.update(quality=quality, method=4)
    elif fmt == "BMP":
        if img.mode not in ("RGB", "L", "1", "P"):
            img = img.convert("RGB")
    elif fmt == "TIFF":
        comp = info.get("compression")
        if comp in ("tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits", "raw", "jpeg"):
            params["compression"] = "tiff_deflate" if comp == "tiff_adobe_deflate" else comp
    elif fmt == "PNG" and img.mode == "CMYK":
        img = img.convert("RGB")
    elif fmt in ("AVIF", "HEIF"):
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        params["quality"] = quality
    elif fmt == "GIF" and img.mode not in ("P", "L", "1"):
        img = img.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **params)
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"cannot encode as {fmt}: {e}") from None
    return buf.getvalue()


#: Temporary outputs are named `.{stem}.{pid}-{random}.anonyface-tmp{suffix}` beside the
#: target: the writing process's id tells a stale one (its process is gone) from a live one.
TEMP_MARK = ".anonyface-tmp"
_TEMP_NAME = re.compile(r"^\..*\.(\d+)-[a-z0-9_]+" + re.escape(TEMP_MARK) + r"(\.[^.]*)?$")


class AtomicPath:
    """A temporary file beside `path` for a writer that needs a file name (a video
    encoder picks the container by its suffix, which is kept): `commit()` renames it
    over `path` at once, `discard()` removes it. The output exists whole or not at all."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.{os.getpid()}-", suffix=f"{TEMP_MARK}{self.path.suffix}", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that the file is either complete or not there at all."""
    out = AtomicPath(path)
    try:
        with open(out.tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        out.commit()
    except BaseException:
        out.discard()
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary outputs that runs killed outright (kill -9, a power cut) left in
    `folder`: ours by name, and their process gone. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False) or _process_alive(int(m.group(1))):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # someone else's process, or cannot tell: leave it
    return True
