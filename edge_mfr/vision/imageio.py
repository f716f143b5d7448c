"""Reading images from disk with clear errors and bounded memory.

Everything inside the package is RGB uint8; OpenCV's BGR stops here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mfr.errors import ImageError, InputNotFoundError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MAX_PIXELS = 64_000_000  # 64 MP JPEG: refused above this before decoding (a Pi has 1-8 GiB)
# Formats other than JPEG are decoded at full size (3 bytes a pixel, twice during conversion), so they get
# a lower limit: 16 MP is a 48 MiB frame, still more than any camera or phone photo needs.
MAX_FULL_DECODE_PIXELS = 16_000_000
MIN_SIDE = 16  # below this no face can be found or recognised
LONG_SIDE = 2048  # larger photos are decoded at a reduced scale; detection works on far less
ACCEPTED = "JPEG, PNG, WebP, BMP"
# Formats OpenCV would decode but the product does not need; their headers are not checked here, so they
# are refused outright (a tiny TIFF or PNM can claim gigapixels).
_REFUSED_MAGIC = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"), (b"P6", "PNM"),
    (b"P7", "PAM"), (b"PF", "PFM"), (b"Pf", "PFM"), (b"#?RADIANCE", "HDR"), (b"#?RGBE", "HDR"),
    (b"\x76\x2f\x31\x01", "OpenEXR"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x59\xa6\x6a\x95", "Sun raster"), (b"GIF8", "GIF"), (b"8BPS", "PSD"),
)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive), sorted for reproducible runs."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and is_image_path(p))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def _png_chunks_fit(data: bytes) -> bool:
    """Whether every chunk fits in the file, up to IEND.

    OpenCV allocates a chunk's claimed length before reading it: a 9 KB PNG whose IDAT length said 1.7 GB
    took 1.7 GB and 5 s (found by tests/security/test_fuzz.py), so the chunks are walked first.
    """
    i = 8
    while i + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        if i + 12 + length > len(data):
            return False
        if kind == b"IEND":
            return True
        i += 12 + length
    return False


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(body) >= 10:
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
        w, h = struct.unpack("<HH", data[18:22])
        return int(w), int(h)
    w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))


def image_format(data: bytes | memoryview) -> str | None:
    """The accepted format of encoded image bytes (from their magic bytes), or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM":
        return "BMP"
    return None


def refused_format(data: bytes) -> str | None:
    """The name of a recognised image format the product refuses (TIFF, PNM, ...), or None."""
    head = bytes(data[:16])  # bytes or a memoryview of a spooled upload
    return next((name for magic, name in _REFUSED_MAGIC if head.startswith(magic)), None)


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header of an accepted format without decoding, or None when unreadable."""
    if fmt == "PNG":
        return _png_size(data)
    if fmt == "JPEG":
        return _jpeg_size(data)
    if fmt == "WebP":
        return _webp_size(data)
    if fmt == "BMP":
        return _bmp_size(data)
    return None


def _limit(fmt: str) -> int:
    return MAX_PIXELS if fmt == "JPEG" else MAX_FULL_DECODE_PIXELS


def _too_large(name: str, w: int, h: int, limit: int) -> ImageError:
    return ImageError(f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {limit / 1e6:.0f} MP limit")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8, refusing empty, corrupt, tiny or huge images.

    Only JPEG, PNG, WebP and BMP are decoded, and only after their header's dimensions are read here
    and found within the limit: OpenCV would otherwise allocate whatever a 10 KB file claims.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    fmt = image_format(data)
    if fmt is None:
        refused = refused_format(data)
        if refused:
            raise ImageError(f"{name}: {refused} images are not accepted (accepted: {ACCEPTED})")
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format; accepted: {ACCEPTED})")
    size = header_size(data, fmt)
    if size is None:
        raise ImageError(f"{name}: not a readable image (corrupt {fmt} header)")
    w, h = size
    limit = _limit(fmt)
    if w * h > limit:
        raise _too_large(name, w, h, limit)
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is only {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if fmt == "PNG" and not _png_chunks_fit(data):
        raise ImageError(f"{name}: not a readable image (truncated or corrupt PNG chunks)")
    flags = cv2.IMREAD_COLOR
    if fmt == "JPEG":
        # JPEG can be decoded at 1/2, 1/4 or 1/8 scale directly, which saves memory and time.
        for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if max(w, h) / factor >= LONG_SIDE:
                flags = flag
                break
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, flags)
    except cv2.error:  # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS) raise instead of returning None
        bgr = None
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (corrupt {fmt} data)")
    h, w = bgr.shape[:2]
    if w * h > limit:
        raise _too_large(name, w, h, limit)
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: image is only {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if max(h, w) > LONG_SIDE:
        scale = LONG_SIDE / max(h, w)
        bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as RGB uint8 with a clear error for every way it can fail."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path))


def write_image(path: Path | str, image: np.ndarray) -> None:
    """Write an RGB uint8 image; the format follows the suffix."""
    path = Path(path)
    ok = cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"{path}: cannot write image (unknown suffix or unwritable folder)")


def rgb_frames(capture: Any) -> Iterator[np.ndarray]:
    """Every frame of an opened ``cv2.VideoCapture`` as RGB, until it ends (one loop for every reader)."""
    while True:
        ok, bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
