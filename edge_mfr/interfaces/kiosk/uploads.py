"""Kiosk uploads: multipart/form-data parsing (RFC 7578) and storing each upload after checking it by
decoding it (never by its file name). Hand-written on the standard library: ``cgi`` is gone from Python 3.13
and a multipart package would add a dependency for ~40 lines."""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

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
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body (RFC 7578); UploadError when it is malformed.

    Each part's data is copied out of ``body`` once (an upload may be tens of MB on a small Pi).
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
        parts.append(Part(params["name"], params.get("filename"), bytes(view[head_end + 4:nxt])))
        pos = nxt + 2
    raise UploadError("the upload is malformed or incomplete (no closing boundary)")


def store_upload(folder: Path, index: int, filename: str, data: bytes) -> Path:
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
