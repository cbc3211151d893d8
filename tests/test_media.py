"""Formats, modes, orientation and metadata, through the real file path."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

import photos
from anonyface.media import ImageError, read_image

GPS_IFD = 0x8825


def _face_changed(out: np.ndarray, src: np.ndarray) -> bool:
    x1, y1, x2, y2 = (int(v) for v in photos.ASTRONAUT_FACE)
    return np.abs(out[y1 + 20 : y2 - 20, x1 + 15 : x2 - 15].astype(int) - src[y1 + 20 : y2 - 20, x1 + 15 : x2 - 15]).mean() > 8


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0xA431] = "SN-123456"  # BodySerialNumber (in IFD0 here, Pillow accepts it)
    exif[0x0131] = "Secret Editor"
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)
    return exif


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane Source</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>'


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_jpeg_metadata_stripped_by_default_and_icc_kept(anonymizer, astronaut, tmp_path):
    src = tmp_path / "in.jpg"
    icc = _srgb_icc()  # made once: the profile's header carries a time stamp
    Image.fromarray(astronaut).save(src, exif=_exif_with_gps().tobytes(), xmp=XMP, comment=b"taken at home", icc_profile=icc)
    assert Image.open(src).getexif().get(0x010F) == "SpyCam"
    dst = tmp_path / "out.jpg"
    anonymizer.process_file(src, dst)
    out = Image.open(dst)
    raw = dst.read_bytes()
    assert not out.getexif()
    assert b"SpyCam" not in raw and b"SN-123456" not in raw and b"Jane Source" not in raw and b"taken at home" not in raw
    assert b"Exif" not in raw and "xmp" not in out.info and "comment" not in out.info
    assert out.info.get("icc_profile") == icc
    assert _face_changed(np.asarray(out), astronaut)


def test_keep_metadata_keeps_it_with_orientation_reset(anonymizer, astronaut, tmp_path):
    src = tmp_path / "in.jpg"
    exif = _exif_with_gps()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(astronaut, 1)).save(src, exif=exif.tobytes(), xmp=XMP)
    dst = tmp_path / "out.jpg"
    anonymizer.process_file(src, dst, keep_metadata=True)
    out = Image.open(dst)
    e = out.getexif()
    assert e.get(0x010F) == "SpyCam" and e.get(0x0112) == 1
    assert e.get_ifd(GPS_IFD).get(1) == "N"
    assert b"Jane Source" in dst.read_bytes()


def test_png_text_chunks_stripped(anonymizer, astronaut, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Jane Source")
    info.add_text("Location", "52.5N 13.4E")
    src = tmp_path / "in.png"
    Image.fromarray(astronaut).save(src, pnginfo=info)
    dst = tmp_path / "out.png"
    anonymizer.process_file(src, dst)
    assert b"Jane Source" not in dst.read_bytes() and not Image.open(dst).text
    anonymizer.process_file(src, tmp_path / "kept.png", keep_metadata=True)
    assert Image.open(tmp_path / "kept.png").text["Author"] == "Jane Source"


@pytest.mark.parametrize("orientation,rotate", [(6, 1), (8, -1), (3, 2)])
def test_exif_orientation_applied_before_detection(anonymizer, astronaut, tmp_path, orientation, rotate):
    # Stored sideways with an orientation tag: upright, the astronaut is as usual.
    stored = np.rot90(astronaut, rotate)
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "in.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(src, exif=exif.tobytes(), quality=95)
    pic = read_image(src)
    assert pic.rgb.shape == astronaut.shape
    assert np.abs(pic.rgb.astype(int) - astronaut).mean() < 6  # upright now
    result = anonymizer.process_file(src, tmp_path / "out.jpg")
    assert len(result.faces) == 1
    out = np.asarray(Image.open(tmp_path / "out.jpg"))
    assert out.shape == astronaut.shape  # written upright, no orientation tag left
    assert _face_changed(out, astronaut)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "bmp", "tif"])
def test_formats_round_trip(anonymizer, astronaut, tmp_path, ext):
    src = tmp_path / f"in.{ext}"
    Image.fromarray(astronaut).save(src)
    dst = tmp_path / f"out.{ext}"
    anonymizer.process_file(src, dst)
    out = Image.open(dst)
    assert out.format == Image.open(src).format and out.size == (512, 512)
    assert _face_changed(np.asarray(out.convert("RGB")), astronaut)


def test_output_format_from_extension(anonymizer, astronaut, tmp_path):
    src = tmp_path / "in.jpg"
    Image.fromarray(astronaut).save(src)
    anonymizer.process_file(src, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").format == "PNG"


def test_grey_image_stays_grey(anonymizer, astronaut, tmp_path):
    src = tmp_path / "grey.png"
    grey = Image.fromarray(astronaut).convert("L")
    grey.save(src)
    anonymizer.process_file(src, tmp_path / "out.png")
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "L"
    a, b = np.asarray(out), np.asarray(grey)
    assert (a != b).any() and np.array_equal(a[400:], b[400:])


def test_rgba_alpha_kept(anonymizer, astronaut, tmp_path):
    alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    alpha[:, 150:300] = 255
    src = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([astronaut, alpha]), "RGBA").save(src)
    anonymizer.process_file(src, tmp_path / "out.png")
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (512, 512, 4) and np.array_equal(out[..., 3], alpha)
    assert _face_changed(out[..., :3], astronaut)


def test_16bit_grey_keeps_depth_and_untouched_pixels(anonymizer, astronaut, tmp_path):
    grey16 = np.asarray(Image.fromarray(astronaut).convert("L")).astype(np.uint16) * 256 + 3
    src = tmp_path / "g16.png"
    Image.fromarray(grey16).save(src)
    anonymizer.process_file(src, tmp_path / "out.png")
    out = Image.open(tmp_path / "out.png")
    arr = np.asarray(out)
    assert out.mode.startswith("I") and arr.dtype == np.uint16 or arr.max() > 255
    assert np.array_equal(arr[400:], grey16[400:])  # untouched pixels exact, 16 bits
    assert (arr[100:150, 200:250] != grey16[100:150, 200:250]).any()


def test_cmyk_jpeg(anonymizer, astronaut, tmp_path):
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(src, quality=95)
    res = anonymizer.process_file(src, tmp_path / "out.jpg")
    out = Image.open(tmp_path / "out.jpg")
    assert out.mode == "CMYK" and len(res.faces) == 1
    assert _face_changed(np.asarray(out.convert("RGB")), np.asarray(Image.open(src).convert("RGB")))


def test_16bit_colour_refused_clearly(tmp_path):
    import cv2

    src = tmp_path / "rgb16.png"
    cv2.imwrite(str(src), (np.random.default_rng(0).random((20, 20, 3)) * 65535).astype(np.uint16))
    with pytest.raises(ImageError, match="16-bit colour"):
        read_image(src)


def test_bad_inputs_give_clear_errors(tmp_path, astronaut):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a photo")
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    data = bytearray(buf.getvalue())
    data[200:4000] = bytes(3800)
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data[:1000]))
    cases = {"empty.jpg": "empty", "text.jpg": "not an image", "trunc.jpg": "truncated", "corrupt.jpg": "corrupt|truncated"}
    for name, pattern in cases.items():
        with pytest.raises(ImageError, match=pattern):
            read_image(tmp_path / name)


def test_decompression_bomb_refused(tmp_path):
    src = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(src, optimize=True)  # 144 MP, a few hundred kB
    assert src.stat().st_size < 2_000_000
    with pytest.raises(ImageError, match="megapixels"):
        read_image(src)
    with pytest.raises(ImageError, match="megapixels"):
        read_image(src, max_pixels=1_000_000)
