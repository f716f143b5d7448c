"""Kiosk uploads: multipart/form-data parsing (RFC 7578) and storing each upload after checking it by
decoding it (never by its file name). Hand-written on the standard library: ``cgi`` is gone from Python 3.13
and a multipart package would add a dependency for ~40 lines."""

from __future__ import annotations

import mmap
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO

import cv2

from edge_mfr.errors import EdgeMfrError, ImageError


class UploadError(EdgeMfrError, ValueError):
    """An upload or form the kiosk refuses (too large, malformed, wrong type); the message is shown."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status




@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes | memoryview  # a view into the spooled body (no copy) when parsed from a file


def spool_body(read: Callable[[int], bytes], length: int, limit: int) -> IO[bytes]:
    """Copy ``length`` bytes from ``read`` to an anonymous temp file, 1 MiB at a time (memory stays flat).

    The caller checked ``length <= limit``; a body that ends early is refused. Parse it with
    :func:`parse_multipart` on ``mmap`` of the file, so the parts are views of the file, not copies.
    """
    if length > limit:
        raise UploadError(f"the upload is over the limit of {limit / 1048576:g} MB",
                          HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    spool = tempfile.TemporaryFile(prefix="edge-mfr-upload-")
    try:
        left = length
        while left > 0:
            chunk = read(min(left, 1 << 20))
            if not chunk:
                raise UploadError("the upload ended before its Content-Length")
            spool.write(chunk)
            left -= len(chunk)
        spool.flush()
        return spool
    except BaseException:
        spool.close()
        raise


def looks_like_video(data: bytes | memoryview) -> bool:
    """MP4/MOV, Matroska/WebM or AVI by their magic bytes: anything else is never handed to FFmpeg, which
    would decode image formats refused by edge_mfr.vision.imageio (a TIFF bomb among them)."""
    head = bytes(data[:16])
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def parse_multipart(body: bytes | mmap.mmap, content_type: str, keep_views: bool = False) -> list[Part]:
    """The parts of a multipart/form-data body (RFC 7578); UploadError when it is malformed.

    Each part's data is copied out of ``body`` once (an upload may be tens of MB on a small Pi), or with
    ``keep_views`` left as a view of ``body`` (an mmap of the spooled upload: nothing copied).
    """
    m = re.search(r'boundary="?([^";,]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not m:
        raise UploadError("the upload is not multipart/form-data")
    delimiter = b"--" + m.group(1).encode("latin-1")
    view = memoryview(body)
    parts: list[Part] = []
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body[start:start + 2] == b"--":
            return parts
        nxt = body.find(b"\r\n" + delimiter, start)
        if nxt < 0:
            break
        head_end = body.find(b"\r\n\r\n", start, nxt)
        if head_end < 0:
            raise UploadError("the upload is malformed (a part has no headers)")
        headers = {}
        for line in body[start:head_end].decode("utf-8", "replace").strip("\r\n").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', headers.get("content-disposition", "")))
        if "name" not in params:
            raise UploadError("the upload is malformed (a part has no name)")
        data = view[head_end + 4:nxt]
        parts.append(Part(params["name"], params.get("filename"), data if keep_views else bytes(data)))
        pos = nxt + 2
    raise UploadError("the upload is malformed or incomplete (no closing boundary)")


def store_upload(folder: Path, index: int, filename: str, data: bytes | memoryview) -> Path:
    """Decode an uploaded photo or video and store it in ``folder`` under a name of our own choosing.

    Photos are re-encoded as PNG (metadata dropped); videos are kept as uploaded once a frame decodes.
    The client's file name only labels the templates; it never decides the type or the path.
    """
    from edge_mfr.vision.imageio import decode_image, write_image

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").stem).strip("._")[:40] or "upload"
    shown = filename or f"file {index}"
    if not data:
        raise UploadError(f"{shown}: the file is empty")
    try:
        image = decode_image(data, shown)
    except ImageError as exc:
        if "not a readable image" not in str(exc):
            raise UploadError(str(exc)) from None  # an image, but too small or too large
    else:
        target = folder / f"{index:02d}-{stem}.png"
        write_image(target, image)
        return target
    if not looks_like_video(data):
        raise UploadError(f"{shown}: not a photo or video this device can decode (checked by its content, not "
                          "by the file name; photos: JPEG, PNG, WebP, BMP; videos: MP4, MOV, WebM, MKV, AVI)")
    target = folder / f"{index:02d}-{stem}.mp4"  # the container is probed from the content, not the suffix
    target.write_bytes(data)
    capture = cv2.VideoCapture(str(target))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if not ok or frame is None:
        target.unlink(missing_ok=True)
        raise UploadError(f"{shown}: not a photo or video this device can decode (checked by decoding the "
                          "content, not by the file name)")
    return target
