"""Reading images: every bad input is a clear ImageError, never a crash or a giant allocation."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from edge_mfr.errors import ImageError, InputNotFoundError
from edge_mfr.vision.imageio import LONG_SIDE, decode_image, read_image


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_round_trip_is_rgb(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = read_image(path)
    assert out.shape == (40, 60, 3) and out[0, 0, 0] == 200 and out[0, 0, 2] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not a readable image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "not a readable image"),
    ],
)
def test_bad_bytes(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_truncated_jpeg(tmp_path, astronaut):
    ok, buf = cv2.imencode(".jpg", astronaut)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[:300])
    with pytest.raises(ImageError):
        read_image(path)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="only 1x1 pixels"):
        read_image(path)


def test_huge_image_refused_from_its_header_before_decoding():
    with pytest.raises(ImageError, match="10000x10000"):
        decode_image(_png_header_only(10000, 10000), "huge.png")


def test_real_huge_image_refused(tmp_path):
    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), np.zeros((10000, 10000), np.uint8))
    with pytest.raises(ImageError, match="over the 16 MP limit"):
        read_image(path)


def test_large_photo_is_downscaled(tmp_path):
    path = tmp_path / "large.jpg"
    cv2.imwrite(str(path), np.full((3000, 5000, 3), 128, np.uint8))
    out = read_image(path)
    assert max(out.shape[:2]) <= LONG_SIDE and out.shape[2] == 3


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputNotFoundError):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


# -- decoder bombs (issue 16 item 2): every accepted format's header is checked before decoding ---------------


def _bomb(suffix: str, side: int = 5000, params: tuple[int, ...] = ()) -> bytes:
    """A real, valid, tiny file that decodes to side x side pixels (one flat colour compresses to nothing)."""
    ok, buf = cv2.imencode(suffix, np.zeros((side, side, 3), np.uint8), list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("suffix", "params"),
    [(".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)), (".png", ()),
     (".bmp", ())],
)
def test_full_decode_formats_refused_over_their_limit_before_decoding(suffix, params):
    data = _bomb(suffix, params=params)
    if suffix in (".webp", ".png"):
        assert len(data) < 5000 * 5000 * 3 // 100  # a real bomb: 75 MB of pixels from under 1% of that
    with pytest.raises(ImageError, match="5000x5000 .* over the 16 MP limit"):
        decode_image(data, f"bomb{suffix}")


def test_webp_vp8x_canvas_is_checked():
    body = b"\x00" * 4 + (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    data = b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(body)) + body
    with pytest.raises(ImageError, match="16384x16384"):
        decode_image(data, "canvas.webp")


@pytest.mark.parametrize("suffix", [".tiff", ".pgm", ".ppm"])
def test_formats_the_product_does_not_need_are_refused(suffix):
    image = np.zeros((64, 64) if suffix == ".pgm" else (64, 64, 3), np.uint8)
    data = cv2.imencode(suffix, image)[1].tobytes()
    with pytest.raises(ImageError, match="images are not accepted .*JPEG, PNG, WebP, BMP"):
        decode_image(data, f"x{suffix}")


def test_tiff_bomb_refused():
    data = _bomb(".tiff")
    with pytest.raises(ImageError, match="TIFF images are not accepted"):
        decode_image(data, "bomb.tiff")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp"])
def test_every_accepted_format_decodes(suffix, astronaut):
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = decode_image(buf.tobytes(), f"a{suffix}")
    assert out.shape == astronaut.shape


def test_png_chunk_length_bomb_refused_before_decoding():
    """A 9 KB PNG whose IDAT claimed 1.7 GB made OpenCV allocate it (found by the fuzz run)."""
    data = bytearray(cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))[1].tobytes())
    at = data.index(b"IDAT") - 4
    data[at:at + 4] = struct.pack(">I", 1_744_838_656)
    with pytest.raises(ImageError, match="corrupt PNG chunks"):
        decode_image(bytes(data), "bomb.png")
