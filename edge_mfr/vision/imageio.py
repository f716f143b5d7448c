"""Reading images from disk with clear errors and bounded memory.

Everything inside the package is RGB uint8; OpenCV's BGR stops here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.errors import ImageError, InputNotFoundError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
MAX_PIXELS = 64_000_000  # 64 MP: larger images are refused before decoding (a Pi has 1-8 GiB)
MIN_SIDE = 16  # below this no face can be found or recognised
LONG_SIDE = 2048  # larger photos are decoded at a reduced scale; detection works on far less


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive), sorted for reproducible runs."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and is_image_path(p))


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None when unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    return None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8, refusing empty, corrupt, tiny or huge images."""
    if not data:
        raise ImageError(f"{name}: empty file")
    size = _header_size(data)
    flags = cv2.IMREAD_COLOR
    if size is not None:
        w, h = size
        if w * h > MAX_PIXELS:
            raise ImageError(
                f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit"
            )
        if data[:2] == b"\xff\xd8":
            # JPEG can be decoded at 1/2, 1/4 or 1/8 scale directly, which saves memory and time.
            for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                 (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if max(w, h) / factor >= LONG_SIDE:
                    flags = flag
                    break
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, flags)
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (corrupt or unsupported format)")
    h, w = bgr.shape[:2]
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image is {w}x{h} ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS / 1e6:.0f} MP limit")
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
