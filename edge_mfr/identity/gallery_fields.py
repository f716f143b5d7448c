"""Strict field readers for the gallery header: a damaged file must never be read as something else.

Why a module of its own: ``bool("false")`` is True, so a header field that became a string would turn a
denied person into an allowed one; every field is therefore read with its exact JSON type, and each
mismatch is one :class:`GalleryError` naming the field. Kept apart from the file format code so that
format versions can share it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_mfr.errors import GalleryError


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise GalleryError(f"{where} is {type(obj).__name__}, not an object")
    if key not in obj:
        raise GalleryError(f"{where} has no {key!r} field")
    return obj[key]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def get_bool(obj: Any, key: str, where: str) -> bool:
    value = _get(obj, key, where)
    if not isinstance(value, bool):
        raise GalleryError(f"{where}: {key} must be true or false, not {_kind(value)} {value!r:.40}")
    return value


def get_int(obj: Any, key: str, where: str, minimum: int = 0) -> int:
    value = _get(obj, key, where)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise GalleryError(f"{where}: {key} must be a whole number >= {minimum}, not {_kind(value)} {value!r:.40}")
    return value


def get_number(obj: Any, key: str, where: str) -> float:
    value = _get(obj, key, where)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise GalleryError(f"{where}: {key} must be a number, not {_kind(value)} {value!r:.40}")
    return float(value)


def get_str(obj: Any, key: str, where: str, optional: bool = False) -> str | None:
    value = _get(obj, key, where)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise GalleryError(f"{where}: {key} must be text, not {_kind(value)} {value!r:.40}")
    return value


def get_time(obj: Any, key: str, where: str) -> str:
    value = get_str(obj, key, where)
    assert value is not None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise GalleryError(f"{where}: {key} {value!r:.40} is not an ISO 8601 time") from None
    return value


def get_list(obj: Any, key: str, where: str) -> list[Any]:
    value = _get(obj, key, where)
    if not isinstance(value, list):
        raise GalleryError(f"{where}: {key} must be a list, not {_kind(value)}")
    return value


def get_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GalleryError(f"{where} must be an object, not {_kind(value)}")
    return value
