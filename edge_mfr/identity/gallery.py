"""The enrolled-people gallery: embeddings plus metadata in one versioned, atomically written file.

File format (``gallery.npz``): a plain zip archive of ``.npy`` members, readable with
``numpy.load(path, allow_pickle=False)`` for inspection, but written and read here member by member so
nothing in it is ever unpickled or executed:

* ``header.npy``: uint8 bytes of a UTF-8 JSON object (format marker and version, embedding model sha256,
  dim, timestamps, revision, people and per-template metadata, retired person ids);
* ``embeddings.npy``: float32 (N, dim), every template of every person, in header order (stored raw:
  float noise does not compress);
* ``crops.npy``: uint8 (M, 160, 160, 3) aligned RGB crops of real templates, only when the gallery was
  created with ``keep_crops=True`` (deflated);
* ``embeddings_<i>.npy`` (format version 2): float32 (N, dim_i), the same templates seen by the i-th
  extra embedder of a fused set (header ``extra_models``: name, sha256, dim each), row for row.

Why not JSON alone or SQLite: the embeddings must round-trip bit-exactly and load fast on a Pi, a single
file can be replaced atomically with ``os.replace`` (readers such as the daemon never see half a write),
and the zip's CRC32 per member turns bit rot into a clear error instead of wrong matches.

Writers go through :meth:`Gallery.edit`, which holds an ``fcntl.flock`` on ``<file>.lock`` for the whole
load-change-save cycle, so the CLI, the daemon's MQTT commands and the kiosk cannot lose each other's
changes. Readers need no lock.

Why one file: the file format, the atomic write, the writer lock and the validation of what goes in
are one contract (a change to one is a format change to all); most of the length is the Gallery class.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import re
import tempfile
import time
import tokenize
import unicodedata
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edge_mfr.errors import EnrollmentError, GalleryError
from edge_mfr.identity import gallery_delta
from edge_mfr.identity import gallery_fields as F

log = logging.getLogger(__name__)

FORMAT = "edge-mfr-gallery"
FORMAT_VERSION = 2  # 2: extra_models, one template set per extra embedder (issue 11)
CROP_SHAPE = (160, 160, 3)
MAX_NAME_LEN = 64
MAX_SOURCE_LEN = 200
MAX_TEMPLATES_PER_PERSON = 256
NORM_TOLERANCE = 1e-3
LOCK_TIMEOUT_S = 10.0

_ZIP_MAGIC = b"PK\x03\x04"
_HEADER_MEMBER = "header.npy"
_EMB_MEMBER = "embeddings.npy"
_CROPS_MEMBER = "crops.npy"
_MAX_HEADER_BYTES = 8 << 20
_NPY_HEADER_SLACK = 4096  # an .npy member's own header is at most a few hundred bytes
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PERSON_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_MASK_STYLE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SLUG_LEN = 24
# Latin letters that NFKD does not decompose into an ASCII base letter.
_TRANSLIT = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ß": "ss",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "ı": "i",
    }
)
# Format characters that are legitimate inside names (Persian, Indic scripts, emoji sequences).
_ALLOWED_FORMAT_CHARS = {"\u200c", "\u200d"}
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class GalleryModelMismatch(GalleryError):
    """The gallery was built with another embedding model than the current one."""


class GalleryVersionError(GalleryError):
    """The gallery file was written by a newer (or unknown) edge-mfr format version."""


class GalleryLockedError(GalleryError):
    """Another process held the gallery's writer lock for longer than the timeout."""


class GalleryNotFound(GalleryError, FileNotFoundError):
    """No gallery file at the given path."""


class PersonNotFound(GalleryError, LookupError):
    """No enrolled person has that id or name."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _short(sha: str) -> str:
    return sha[:12] + "..."


def _bad_char(text: str) -> str | None:
    """The first control/format/separator character of ``text`` (as U+XXXX), or None."""
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES and ch not in _ALLOWED_FORMAT_CHARS:
            return f"U+{ord(ch):04X}"
    return None


def validate_name(name: object) -> str:
    """Return the display name, NFC-normalised and stripped, or raise EnrollmentError saying why not.

    Names reach file listings, MQTT payloads, HTML and shells, so anything that could act as a path,
    an option or a terminal/bidi control is refused rather than escaped everywhere.
    """
    if not isinstance(name, str):
        raise EnrollmentError(f"name must be text, not {type(name).__name__}")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise EnrollmentError("name is empty")
    if len(clean) > MAX_NAME_LEN:
        raise EnrollmentError(f"name is {len(clean)} characters long (at most {MAX_NAME_LEN})")
    bad = _bad_char(clean)
    if bad:
        raise EnrollmentError(f"name {clean!r} contains the control character {bad}")
    if "/" in clean or "\\" in clean:
        raise EnrollmentError(f"name {clean!r} must not contain '/' or '\\'")
    if clean in (".", ".."):
        raise EnrollmentError(f"name {clean!r} is not allowed")
    if clean.startswith("-"):
        raise EnrollmentError(f"name {clean!r} must not start with '-'")
    return clean


def _slug(name: str) -> str:
    """ASCII, lowercase, URL- and MQTT-topic-safe stem of a person id ('José Núñez' -> 'jose-nunez')."""
    ascii_name = (
        unicodedata.normalize("NFKD", name.translate(_TRANSLIT)).encode("ascii", "ignore").decode("ascii")
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:_SLUG_LEN].rstrip("-")
    return slug or "person"


def source_label(path: str | os.PathLike[str], frame: int | None = None) -> str:
    """A template ``source`` for an image or video path: its file name, never the directory it was in."""
    label = Path(path).name
    return label if frame is None else f"{label}#frame={int(frame)}"


def _validate_source(source: object) -> str:
    if not isinstance(source, str) or not source.strip():
        raise EnrollmentError("template source must be a non-empty description such as the image file name")
    source = source.strip()
    if len(source) > MAX_SOURCE_LEN:
        raise EnrollmentError(f"template source is {len(source)} characters long (at most {MAX_SOURCE_LEN})")
    if _bad_char(source):
        raise EnrollmentError(f"template source {source!r} contains a control character")
    if source.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", source):
        raise EnrollmentError(
            f"template source {source!r} is an absolute path: store the file name (see source_label)"
        )
    return source


@dataclass(frozen=True)
class TemplateMeta:
    """What is known about one enrolled embedding.

    A synthetic (rendered-mask) template carries the ``source`` of the real image it was rendered from,
    so re-embedding after a model change can re-render it from that image's kept crop.
    """

    source: str
    quality: float
    synthetic: bool = False
    mask_style: str | None = None
    masked: bool = False
    enrolled_at: str = ""  # filled with the current time when added

    def checked(self) -> TemplateMeta:
        """A validated copy (timestamps filled), or EnrollmentError."""
        source = _validate_source(self.source)
        try:
            quality = float(self.quality)
        except (TypeError, ValueError):
            raise EnrollmentError(f"template {source!r}: quality {self.quality!r} is not a number") from None
        if not np.isfinite(quality):
            raise EnrollmentError(f"template {source!r}: quality is {quality}")
        if not isinstance(self.synthetic, bool) or not isinstance(self.masked, bool):
            raise EnrollmentError(f"template {source!r}: synthetic and masked must be booleans")
        if self.synthetic:
            if self.mask_style is None or not _MASK_STYLE_RE.match(str(self.mask_style)):
                raise EnrollmentError(f"template {source!r}: a synthetic template needs a short mask_style")
            if not self.masked:
                raise EnrollmentError(f"template {source!r}: a synthetic mask template must be masked=True")
        elif self.mask_style is not None:
            raise EnrollmentError(f"template {source!r}: mask_style is only for synthetic templates")
        enrolled_at = self.enrolled_at or _now()
        try:
            datetime.fromisoformat(enrolled_at)
        except (TypeError, ValueError):
            raise EnrollmentError(
                f"template {source!r}: enrolled_at {enrolled_at!r} is not ISO 8601"
            ) from None
        return replace(self, source=source, quality=quality, enrolled_at=enrolled_at)


@dataclass(frozen=True, eq=False)
class Person:
    """One enrolled person: an immutable snapshot; change it through the Gallery's methods.

    ``embeddings`` is read-only float32 (n, dim); ``crops[i]`` is the aligned crop of template i, or
    None (synthetic templates, or a gallery without kept crops).
    """

    person_id: str
    name: str
    created_at: str
    updated_at: str
    allowed: bool
    templates: tuple[TemplateMeta, ...]
    embeddings: np.ndarray
    crops: tuple[np.ndarray | None, ...] = field(default=())
    extra: tuple[np.ndarray, ...] = field(default=())  # per extra model: read-only (n, dim_i), row for row

    def __len__(self) -> int:
        return len(self.templates)

    @property
    def num_real(self) -> int:
        return sum(not t.synthetic for t in self.templates)


@dataclass(frozen=True)
class ExtraModel:
    """An extra embedder of a fused set whose templates the gallery also holds."""

    name: str  # model file name, as in models/manifest.json
    sha256: str
    dim: int


def _check_extra_models(models: Sequence[ExtraModel]) -> tuple[ExtraModel, ...]:
    out = tuple(models)
    for m in out:
        if not isinstance(m, ExtraModel) or not _MODEL_NAME_RE.match(m.name) or not _SHA256_RE.match(m.sha256) \
                or not isinstance(m.dim, int) or isinstance(m.dim, bool) or not 1 <= m.dim <= 4096:
            raise GalleryError(f"invalid extra embedder {m!r}")
    if len({m.name for m in out}) != len(out):
        raise GalleryError("an extra embedder is listed twice")
    return out


def _extra_member(i: int) -> str:
    return f"embeddings_{i + 1}.npy"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def check_embeddings(embeddings: object, dim: int) -> np.ndarray:
    """Return ``embeddings`` as a fresh float32 (n, dim) array, or raise EnrollmentError.

    Refuses NaN/inf, the wrong width and vectors that are not L2-normalised: any of those would make
    cosine scores meaningless without anything failing loudly.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[1] != dim:
        raise EnrollmentError(f"embeddings must be shaped (n, {dim}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise EnrollmentError(f"embeddings must be floating point, got {x.dtype}")
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    _check_rows(x)
    return x


_CHECK_BLOCK_ROWS = 4096


def _check_rows(x: np.ndarray) -> None:
    """check_embeddings' value checks on a float32 (n, dim) array, in blocks of rows: the float64 norms
    then need a few MiB whatever n is (a 10,000-person gallery read used to peak at 5x its templates)."""
    for start in range(0, len(x), _CHECK_BLOCK_ROWS):
        block = x[start:start + _CHECK_BLOCK_ROWS]
        bad_rows = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad_rows.size:
            raise EnrollmentError(f"embedding row {start + int(bad_rows[0])} contains NaN or inf")
        norms = np.linalg.norm(block.astype(np.float64), axis=1)
        off = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if off.size:
            i = int(off[0])
            raise EnrollmentError(f"embedding row {start + i} is not L2-normalised (norm {norms[i]:.4f})")


def _check_crop(crop: object, index: int) -> np.ndarray:
    c = np.asarray(crop)
    if c.dtype != np.uint8 or c.shape != CROP_SHAPE:
        raise EnrollmentError(f"crop {index} must be uint8 {CROP_SHAPE} RGB, got {c.dtype} {c.shape}")
    return np.array(c, order="C", copy=True)


class Gallery:
    """Enrolled people for one embedding model. Holds no classifier and does no I/O besides its file."""

    def __init__(self, model_sha256: str, dim: int = 512, keep_crops: bool = False,
                 extra_models: Sequence[ExtraModel] = ()) -> None:
        """Use :meth:`create`, :meth:`load` or :meth:`edit`."""
        if not isinstance(model_sha256, str) or not _SHA256_RE.match(model_sha256):
            raise GalleryError(f"model sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        if not isinstance(dim, int) or not 1 <= dim <= 4096:
            raise GalleryError(f"embedding dim must be between 1 and 4096, got {dim!r}")
        self.model_sha256 = model_sha256
        self.dim = dim
        self.extra_models = _check_extra_models(extra_models)
        self.keep_crops = bool(keep_crops)
        self.created_at = _now()
        self.updated_at = self.created_at
        self.revision = 0
        self._people: dict[str, Person] = {}
        self._retired: set[str] = set()
        self._model_checked = True  # False after load(model_sha256=None): adding vectors is refused
        self._crops_loaded = True
        self._modified = False
        self._file_key: str | None = None  # header digest of the file this was read from (gallery_delta)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def create(cls, model_sha256: str, dim: int = 512, keep_crops: bool = False,
               extra_models: Sequence[ExtraModel] = ()) -> Gallery:
        """An empty gallery. ``keep_crops`` stores face crops so people can be re-embedded later."""
        return cls(model_sha256, dim=dim, keep_crops=keep_crops, extra_models=extra_models)

    def check_extra_models(self, path: str | os.PathLike[str], wanted: Sequence[tuple[str, str]]) -> None:
        """GalleryModelMismatch unless the extra template sets are exactly ``wanted`` ((name, sha256), in order).

        A gallery made with other embedders would be matched against the wrong templates (or none): the
        message says how to get a gallery for this set instead.
        """
        have = [(m.name, m.sha256) for m in self.extra_models]
        if have == [(n, s) for n, s in wanted]:
            return
        names = ", ".join(n for n, _ in wanted) or "none"
        made = ", ".join(n for n, _ in have) or "none"
        todo = ("run `edge-mfr people reembed` to re-embed the kept face crops with the current embedders"
                if self.keep_crops else
                "it kept no face crops, so re-enroll everyone (`edge-mfr enroll`) into a new gallery")
        if not have:
            todo += " (or keep using it with FaceNet alone: --embedders / recognition.embedders with only FaceNet)"
        raise GalleryModelMismatch(f"{path}: made with extra embedders {made} but recognition.embedders needs "
                                   f"{names}; {todo}")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model_sha256: str | None = None, with_crops: bool = True,
        extra_models: Sequence[tuple[str, str]] | None = None,
    ) -> Gallery:
        """Read a gallery file; with ``model_sha256`` refuse one built with another embedding model.

        ``extra_models`` ((name, sha256) of the extra embedders, in order; None: not checked) also refuses
        a gallery made for another embedder set.

        ``model_sha256=None`` skips the check (listing, renaming, re-embedding) but then refuses to add
        embeddings. ``with_crops=False`` saves memory in the daemon; such a gallery cannot be saved.
        """
        path = Path(path)
        gallery = _read_with_deltas(path, with_crops)
        if extra_models is not None and model_sha256 is not None:
            gallery.check_extra_models(path, extra_models)
        if model_sha256 is None:
            gallery._model_checked = False
        elif model_sha256 != gallery.model_sha256:
            if gallery.keep_crops:
                todo = "run `edge-mfr people reembed` to re-embed the kept face crops with the current model"
            else:
                todo = "it kept no face crops, so re-enroll everyone (`edge-mfr enroll`) into a new gallery"
            raise GalleryModelMismatch(
                f"{path}: built with embedding model {_short(gallery.model_sha256)} but the current model "
                f"is {_short(model_sha256)}; {todo}"
            )
        return gallery

    @classmethod
    @contextlib.contextmanager
    def edit(
        cls,
        path: str | os.PathLike[str],
        model_sha256: str | None,
        *,
        create: bool = True,
        dim: int = 512,
        keep_crops: bool = False,
        timeout: float = LOCK_TIMEOUT_S,
        extra_models: Sequence[ExtraModel] | None = None,
    ) -> Iterator[Gallery]:
        """Lock, load (or create when missing), yield, and save only if the block succeeds and changed it.

        An exception inside the block leaves the file exactly as it was. ``dim``/``keep_crops`` apply
        only when the file is created. ``model_sha256=None`` permits metadata-only edits.
        """
        path = Path(path)
        with _writer_lock(path, timeout):
            wanted = None if extra_models is None else [(m.name, m.sha256) for m in extra_models]
            if path.exists():
                gallery = cls.load(path, model_sha256, extra_models=wanted)
            elif create and model_sha256 is not None:
                gallery = cls.create(model_sha256, dim=dim, keep_crops=keep_crops, extra_models=extra_models or ())
            else:
                raise GalleryNotFound(
                    f"{path}: no gallery file (enroll someone first with `edge-mfr enroll`)"
                )
            yield gallery
            if gallery._modified:
                gallery.save(path)

    # -- reading --------------------------------------------------------------------------------------

    @property
    def people(self) -> list[Person]:
        """Everyone, in enrollment order."""
        return list(self._people.values())

    def __len__(self) -> int:
        return len(self._people)

    @property
    def num_templates(self) -> int:
        return sum(len(p) for p in self._people.values())

    def get(self, person_id_or_name: str) -> Person:
        """The person with this id, else the one with this (case-insensitive) name."""
        if person_id_or_name in self._people:
            return self._people[person_id_or_name]
        key = unicodedata.normalize("NFC", str(person_id_or_name)).strip().casefold()
        matches = [p for p in self._people.values() if p.name.casefold() == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(p.person_id for p in matches)
            raise GalleryError(f"{len(matches)} people are called {person_id_or_name!r}; use an id: {ids}")
        raise PersonNotFound(f"no enrolled person with id or name {person_id_or_name!r}")

    def without(self, person_ids: set[str]) -> Gallery:
        """An in-memory copy minus these people (the door's instant revoke, until the full reload); adding
        templates to it is refused."""
        out = copy.copy(self)
        out._people = {pid: p for pid, p in self._people.items() if pid not in person_ids}
        out._retired = self._retired | (set(self._people) & person_ids)
        out._model_checked = False
        return out

    def matrix(self) -> tuple[np.ndarray, np.ndarray, list[TemplateMeta]]:
        """(X float32 (N, dim), person_id per row, metadata per row) for fitting the classifier.

        Includes people who are not allowed: the classifier must recognise them so the policy can deny
        them by name instead of treating them as strangers.
        """
        people = [p for p in self._people.values() if len(p)]
        if not people:
            return np.zeros((0, self.dim), np.float32), np.array([], dtype=str), []
        x = np.concatenate([p.embeddings for p in people]).astype(np.float32, copy=False)
        labels = np.array([p.person_id for p in people for _ in p.templates])
        meta = [t for p in people for t in p.templates]
        return x, labels, meta

    def extra_matrices(self) -> dict[str, np.ndarray]:
        """Extra model name -> (N, dim_i) rows in the order of :meth:`matrix`'s rows."""
        people = [p for p in self._people.values() if len(p)]
        return {m.name: (np.concatenate([p.extra[i] for p in people]) if people else np.zeros((0, m.dim), np.float32))
                for i, m in enumerate(self.extra_models)}

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per person for `people list`, MQTT and the kiosk (no biometric data)."""
        return [
            {
                "person_id": p.person_id,
                "name": p.name,
                "allowed": p.allowed,
                "templates": len(p),
                "real": p.num_real,
                "synthetic": len(p) - p.num_real,
                "masked": sum(t.masked for t in p.templates),
                "crops": sum(c is not None for c in p.crops),
                "created_at": p.created_at,
                "updated_at": p.updated_at,
            }
            for p in self._people.values()
        ]

    # -- changing ---------------------------------------------------------------------------------------

    def _touch(self) -> str:
        self.updated_at = _now()
        self._modified = True
        return self.updated_at

    def _require(self, person_id: str) -> Person:
        try:
            return self._people[person_id]
        except (KeyError, TypeError):
            raise PersonNotFound(f"no enrolled person with id {person_id!r}") from None

    def _check_name_free(self, name: str, allow_duplicate_name: bool, except_id: str | None = None) -> None:
        if allow_duplicate_name:
            return
        for p in self._people.values():
            if p.person_id != except_id and p.name.casefold() == name.casefold():
                raise EnrollmentError(
                    f"a person called {p.name!r} is already enrolled (id {p.person_id}): choose another "
                    "name, or add photos to that person instead"
                )

    def add_person(self, name: str, allowed: bool = True, *, allow_duplicate_name: bool = False) -> Person:
        """Add someone with no templates yet; their id is derived from the name and never reused."""
        name = validate_name(name)
        self._check_name_free(name, allow_duplicate_name)
        stem = _slug(name)
        taken = self._people.keys() | self._retired
        person_id, n = stem, 2
        while person_id in taken:
            person_id, n = f"{stem}-{n}", n + 1
        now = self._touch()
        person = Person(
            person_id, name, now, now, bool(allowed), (), _readonly(np.zeros((0, self.dim), np.float32))
        )
        self._people[person_id] = person
        return person

    def add_templates(
        self,
        person_id: str,
        embeddings: np.ndarray,
        meta_list: Sequence[TemplateMeta],
        crops: Sequence[np.ndarray | None] | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> Person:
        """Append templates to a person. Crops are kept only for real templates of a keep_crops gallery.

        ``extra``: extra model name -> the same templates' rows by that model; required for each extra model.
        """
        person = self._require(person_id)
        if not self._model_checked:
            raise GalleryError(
                "this gallery was loaded without checking the embedding model; load it with the current "
                "model's sha256 before adding embeddings"
            )
        x = check_embeddings(embeddings, self.dim)
        extra = dict(extra or {})
        if set(extra) != {m.name for m in self.extra_models}:
            raise EnrollmentError(f"templates of extra embedders {sorted(extra)} but the gallery holds "
                                  f"{sorted(m.name for m in self.extra_models)}")
        extra_rows = [check_embeddings(extra[m.name], m.dim) for m in self.extra_models]
        if any(len(r) != len(x) for r in extra_rows):
            raise EnrollmentError("every extra embedder needs one row per template")
        if len(meta_list) != len(x):
            raise EnrollmentError(f"{len(x)} embeddings but {len(meta_list)} metadata entries")
        if crops is not None and len(crops) != len(x):
            raise EnrollmentError(f"{len(x)} embeddings but {len(crops)} crops")
        if len(person) + len(x) > MAX_TEMPLATES_PER_PERSON:
            raise EnrollmentError(
                f"{person.name!r} would have {len(person) + len(x)} templates "
                f"(at most {MAX_TEMPLATES_PER_PERSON})"
            )
        metas = []
        for m in meta_list:
            if not isinstance(m, TemplateMeta):
                raise EnrollmentError(f"template metadata must be TemplateMeta, got {type(m).__name__}")
            metas.append(m.checked())
        new_crops: list[np.ndarray | None] = []
        for i, m in enumerate(metas):
            crop = crops[i] if crops is not None else None
            keep = self.keep_crops and crop is not None and not m.synthetic
            new_crops.append(_readonly(_check_crop(crop, i)) if keep else None)
        now = self._touch()
        self._people[person.person_id] = replace(
            person,
            updated_at=now,
            templates=person.templates + tuple(metas),
            embeddings=_readonly(np.concatenate([person.embeddings, x])),
            crops=person.crops + tuple(new_crops),
            extra=tuple(_readonly(np.concatenate([old, r])) for old, r in zip(self._extra_of(person), extra_rows,
                                                                               strict=True)),
        )
        return self._people[person.person_id]

    def _extra_of(self, person: Person) -> tuple[np.ndarray, ...]:
        return person.extra or tuple(np.zeros((0, m.dim), np.float32) for m in self.extra_models)

    def rename(self, person_id: str, new_name: str, *, allow_duplicate_name: bool = False) -> Person:
        """Change the display name; the person_id stays, so topics, logs and URLs keep working."""
        person = self._require(person_id)
        name = validate_name(new_name)
        self._check_name_free(name, allow_duplicate_name, except_id=person.person_id)
        self._people[person.person_id] = replace(person, name=name, updated_at=self._touch())
        return self._people[person.person_id]

    def set_allowed(self, person_id: str, allowed: bool) -> Person:
        """Whether the door opens for this person (they are still recognised either way)."""
        person = self._require(person_id)
        self._people[person.person_id] = replace(person, allowed=bool(allowed), updated_at=self._touch())
        return self._people[person.person_id]

    def remove(self, person_id: str) -> Person:
        """Forget a person with all their embeddings and crops; their id is retired, never reissued."""
        person = self._require(person_id)
        del self._people[person.person_id]
        self._retired.add(person.person_id)
        self._touch()
        return person

    def put_person(self, person: Person) -> Person:
        """Insert or replace a person exactly as given, keeping their id (fleet bundles carry ids across doors).

        The person comes from a gallery loaded with the same embedding model check; crops are dropped
        unless this gallery keeps crops. A retired id becomes live again: the fleet publisher decides ids.
        """
        if not self._model_checked:
            raise GalleryError("this gallery was loaded without checking the embedding model")
        if not isinstance(person, Person) or not _PERSON_ID_RE.match(person.person_id):
            raise GalleryError(f"not a valid person: {person!r}")
        x = _readonly(check_embeddings(person.embeddings, self.dim))
        if len(person.extra) != len(self.extra_models):
            raise GalleryError(f"{person.person_id}: templates of {len(person.extra)} extra embedders, this gallery "
                               f"has {len(self.extra_models)}")
        extra = tuple(_readonly(check_embeddings(e, m.dim)) for e, m in zip(person.extra, self.extra_models,
                                                                           strict=True))
        if any(len(e) != len(x) for e in extra):
            raise GalleryError(f"{person.person_id}: extra embedders' templates do not match row for row")
        crops = person.crops if self.keep_crops and len(person.crops) == len(x) else (None,) * len(x)
        self._people[person.person_id] = replace(person, embeddings=x, crops=tuple(crops), extra=extra)
        self._retired.discard(person.person_id)
        self._touch()
        return self._people[person.person_id]

    def replace_embeddings(
        self, model_sha256: str, new: Mapping[str, np.ndarray], dim: int | None = None,
        extra_models: Sequence[ExtraModel] = (), extra_new: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        """Switch the whole gallery to another embedding model at once (``edge-mfr people reembed``).

        ``new`` maps every person_id to their re-computed embeddings, one row per existing template in
        the same order (synthetic ones re-rendered from the real crop with the same ``source``); ``dim``
        is the new model's width (default: unchanged). All or nothing: a missing person or a bad array
        leaves the gallery unchanged. ``extra_models``/``extra_new`` (model name -> person_id -> rows) replace
        the extra template sets the same way (none: the gallery becomes single-embedder).
        """
        extra_models = _check_extra_models(extra_models)
        extra_new = extra_new or {}
        if not isinstance(model_sha256, str) or not _SHA256_RE.match(model_sha256):
            raise GalleryError(f"model sha256 must be 64 lowercase hex digits, got {model_sha256!r}")
        dim = self.dim if dim is None else dim
        if not isinstance(dim, int) or not 1 <= dim <= 4096:
            raise GalleryError(f"embedding dim must be between 1 and 4096, got {dim!r}")
        missing = [pid for pid in self._people if pid not in new]
        extra = [pid for pid in new if pid not in self._people]
        if missing or extra:
            raise GalleryError(
                f"re-embedding must cover exactly the enrolled people (missing: {missing or 'none'}, "
                f"unknown: {extra or 'none'})"
            )
        checked: dict[str, np.ndarray] = {}
        for pid, person in self._people.items():
            x = check_embeddings(new[pid], dim)
            if len(x) != len(person):
                raise GalleryError(f"{pid}: {len(x)} new embeddings for {len(person)} templates")
            checked[pid] = _readonly(x)
        checked_extra: dict[str, list[np.ndarray]] = {pid: [] for pid in self._people}
        for m in extra_models:
            for pid, person in self._people.items():
                try:
                    x = check_embeddings(extra_new[m.name][pid], m.dim)
                except KeyError:
                    raise GalleryError(f"{pid}: no re-computed embeddings of {m.name}") from None
                if len(x) != len(person):
                    raise GalleryError(f"{pid}: {len(x)} new {m.name} embeddings for {len(person)} templates")
                checked_extra[pid].append(_readonly(x))
        now = self._touch()
        for pid, x in checked.items():
            self._people[pid] = replace(self._people[pid], embeddings=x, extra=tuple(checked_extra[pid]),
                                        updated_at=now)
        self.model_sha256, self.dim, self.extra_models = model_sha256, dim, extra_models
        self._model_checked = True

    # -- writing ----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file, fsync, rename, fsync dir) with mode 0600.

        On any failure the previous file is untouched and no temp file is left. Use :meth:`edit` for a
        read-change-write cycle that other processes may race with.
        """
        path = Path(path)
        if self.keep_crops and not self._crops_loaded:
            raise GalleryError(f"{path}: this gallery was loaded without its crops; saving would drop them")
        self.revision += 1
        header = self._encode_header()
        try:
            _write_atomic(path, header, self._people.values(), self.dim, self.extra_models)
        except BaseException:
            self.revision -= 1
            raise
        gallery_delta.clear(path)  # folded into the file just written (and they name the old one)
        self._file_key = gallery_delta.file_key(header)
        self._modified = False

    def _encode_header(self) -> bytes:
        people = []
        crop_index = 0
        for p in self._people.values():
            templates = []
            for meta, crop in zip(p.templates, p.crops, strict=True):
                entry = {
                    "source": meta.source,
                    "quality": meta.quality,
                    "synthetic": meta.synthetic,
                    "mask_style": meta.mask_style,
                    "masked": meta.masked,
                    "enrolled_at": meta.enrolled_at,
                    "crop": None,
                }
                if crop is not None:
                    entry["crop"], crop_index = crop_index, crop_index + 1
                templates.append(entry)
            people.append(
                {
                    "person_id": p.person_id,
                    "name": p.name,
                    "created_at": p.created_at,
                    "updated_at": p.updated_at,
                    "allowed": p.allowed,
                    "templates": templates,
                }
            )
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "dim": self.dim,
            "extra_models": [{"name": m.name, "sha256": m.sha256, "dim": m.dim} for m in self.extra_models],
            "keep_crops": self.keep_crops,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "revision": self.revision,
            "num_templates": self.num_templates,
            "num_crops": crop_index,
            "retired_ids": sorted(self._retired),
            "people": people,
        }
        return json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# -- file I/O ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _writer_lock(path: Path, timeout: float) -> Iterator[None]:
    """Exclusive flock on ``<gallery>.lock`` (kept forever: deleting lock files reopens the race)."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise GalleryError(f"{lock_path}: cannot open the gallery lock file: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GalleryLockedError(
                        f"{path}: another edge-mfr process has been changing the gallery for over "
                        f"{timeout:g} s; try again later"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.<gallery>.*.tmp`` files a killed writer left behind (they may hold face crops).

    Runs under the writer lock, taken without waiting: a writer holding it may own a temp file that is
    not stale, so nothing is removed then (the next start cleans up). Returns what was removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed: list[Path] = []
    try:
        with _writer_lock(path, timeout=0.0):
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed.append(tmp)
    except GalleryLockedError:
        log.info("%s: a writer holds the gallery lock; leftover temp files are kept for now", path)
    for tmp in removed:
        log.warning("%s: removed a temp file left by an interrupted gallery write", tmp)
    return removed


def _write_npy(zf: zipfile.ZipFile, name: str, parts: Sequence[np.ndarray], shape: tuple, dtype: str) -> None:
    """Stream ``parts`` as one stored .npy member of ``shape`` without stacking them in memory first."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    with zf.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        written = 0
        for part in parts:
            block = np.ascontiguousarray(part, dtype=dtype)
            fh.write(block.data)
            written += block.size
    if written != int(np.prod(shape)):  # a programming error, caught before os.replace
        raise ValueError(f"{name}: wrote {written} values for shape {shape}")


def _write_atomic(path: Path, header: bytes, people: Any, dim: int, extra_models: Sequence[ExtraModel] = ()) -> None:
    people = list(people)
    embeddings = [p.embeddings for p in people if len(p)]
    crops = [c for p in people for c in p.crops if c is not None]
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        previous = path.stat() if path.exists() else None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise GalleryError(f"{path}: cannot write the gallery: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        if previous is not None and os.geteuid() == 0:
            # root (the CLI under sudo) must not take the file away from the daemon's service user
            os.fchown(fd, previous.st_uid, previous.st_gid)
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", allowZip64=True) as zf:
                _write_npy(zf, _HEADER_MEMBER, [np.frombuffer(header, np.uint8)], (len(header),), "|u1")
                n_rows = sum(len(e) for e in embeddings)
                _write_npy(zf, _EMB_MEMBER, embeddings, (n_rows, dim), "<f4")
                for i, m in enumerate(extra_models):
                    _write_npy(zf, _extra_member(i), [p.extra[i] for p in people if len(p)], (n_rows, m.dim), "<f4")
                if crops:
                    _write_npy(zf, _CROPS_MEMBER, crops, (len(crops), *CROP_SHAPE), "|u1")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise GalleryError(f"{path}: cannot write the gallery: {exc.strerror or exc}") from None
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:  # the file is in place; only durability across power loss is in doubt
        log.warning("%s: could not fsync the directory: %s", directory, exc)


def _read_member(zf: zipfile.ZipFile, name: str, max_bytes: int) -> np.ndarray:
    info = zf.getinfo(name)
    if info.file_size > max_bytes:
        raise ValueError(f"member {name} is {info.file_size} bytes, more than its header allows")
    with zf.open(name) as fh:
        array = np.lib.format.read_array(fh, allow_pickle=False)
        if fh.read(1):  # also makes sure the member was read to its end, where zipfile checks its CRC32
            raise ValueError(f"member {name} has trailing data")
    return array


def read_header(path: Path) -> tuple[dict[str, Any], str]:
    """(header JSON, its gallery_delta key) without reading any templates (a fleet delta needs no more)."""
    try:
        with zipfile.ZipFile(path) as zf:
            raw = _read_member(zf, _HEADER_MEMBER, _MAX_HEADER_BYTES).tobytes()
        header = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise GalleryNotFound(f"{path}: no gallery file (enroll someone first with `edge-mfr enroll`)") from None
    except (OSError, ValueError, KeyError, EOFError, SyntaxError, RecursionError, zipfile.BadZipFile) as exc:
        raise GalleryError(f"{path}: gallery header is unreadable or corrupt ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GalleryError(f"{path}: not an edge-mfr gallery (wrong format marker)")
    return header, gallery_delta.file_key(raw)


def _read_with_deltas(path: Path, with_crops: bool) -> Gallery:
    """_read, then the deltas written on that very file; again if a writer replaced the file meanwhile."""
    for _ in range(5):
        before = gallery_delta.signature(path)
        gallery = _read(path, with_crops)
        _replay_deltas(gallery, path, gallery._file_key or "")
        after = gallery_delta.signature(path)
        if before is not None and after is not None and before[:3] == after[:3]:
            return gallery
    raise GalleryLockedError(f"{path}: the gallery kept changing while it was read; try again")


def read_stream(source: BinaryIO, label: Path) -> Gallery:
    """A gallery from an open, seekable binary file (a fleet bundle's payload inside a spooled bundle),
    without crops and with every check of :meth:`Gallery.load` but the model's (``model_sha256=None``);
    ``label`` names it in errors. No delta files apply to it."""
    gallery = _read(label, False, source)
    gallery._model_checked = False
    return gallery


def _read(path: Path, with_crops: bool, source: BinaryIO | None = None) -> Gallery:
    """Parse and validate a gallery file (or ``source``, already open); every problem becomes one
    GalleryError naming the file."""
    try:
        with contextlib.nullcontext(source) if source is not None else open(path, "rb") as fh:
            magic = fh.read(4)
            if not magic:
                raise GalleryError(f"{path}: gallery file is empty")
            if magic != _ZIP_MAGIC:
                raise GalleryError(f"{path}: not an edge-mfr gallery (not a zip/npz file)")
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                names = set(zf.namelist())
                if _HEADER_MEMBER not in names:
                    raise GalleryError(f"{path}: not an edge-mfr gallery (no {_HEADER_MEMBER})")
                raw = _read_member(zf, _HEADER_MEMBER, _MAX_HEADER_BYTES)
                if raw.dtype != np.uint8 or raw.ndim != 1:
                    raise GalleryError(f"{path}: malformed gallery header")
                header = json.loads(raw.tobytes().decode("utf-8"))
                gallery, n_templates, n_crops = _gallery_from_header(path, header)
                gallery._file_key = gallery_delta.file_key(raw.tobytes())
                extra_names = {_extra_member(i) for i in range(len(gallery.extra_models))}
                if (names - {_HEADER_MEMBER, _EMB_MEMBER, _CROPS_MEMBER} - extra_names or _EMB_MEMBER not in names
                        or extra_names - names):
                    raise GalleryError(f"{path}: unexpected members {sorted(names)}")
                emb = _read_member(zf, _EMB_MEMBER, n_templates * gallery.dim * 4 + _NPY_HEADER_SLACK)
                extra_emb = [_read_member(zf, _extra_member(i), n_templates * m.dim * 4 + _NPY_HEADER_SLACK)
                             for i, m in enumerate(gallery.extra_models)]
                crops = None
                if n_crops and with_crops:
                    if _CROPS_MEMBER not in names:
                        raise GalleryError(f"{path}: header lists {n_crops} crops but none are stored")
                    crops = _read_member(
                        zf, _CROPS_MEMBER, n_crops * int(np.prod(CROP_SHAPE)) + _NPY_HEADER_SLACK
                    )
    except GalleryError:
        raise
    except FileNotFoundError:
        raise GalleryNotFound(
            f"{path}: no gallery file (enroll someone first with `edge-mfr enroll`)"
        ) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile):
        raise GalleryError(f"{path}: gallery file is truncated or corrupt (bad zip archive)") from None
    except UnicodeDecodeError:
        raise GalleryError(f"{path}: gallery header is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise GalleryError(f"{path}: gallery header is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise GalleryError(f"{path}: gallery header is nested too deeply (corrupt or hostile file)") from None
    except (SyntaxError, tokenize.TokenError, MemoryError, OverflowError):
        # numpy parses each .npy member's header as a Python literal: a flipped bit there ends up here
        raise GalleryError(f"{path}: gallery file is corrupt (damaged array header)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise GalleryError(f"{path}: gallery file is unreadable or corrupt ({exc})") from None

    if emb.dtype != np.float32 or emb.shape != (n_templates, gallery.dim):
        raise GalleryError(
            f"{path}: embeddings are {emb.dtype} {emb.shape}, "
            f"header says float32 ({n_templates}, {gallery.dim})"
        )
    if crops is not None and (crops.dtype != np.uint8 or crops.shape != (n_crops, *CROP_SHAPE)):
        raise GalleryError(f"{path}: crops are {crops.dtype} {crops.shape}, header says {n_crops} crops")
    for m, x in zip(gallery.extra_models, extra_emb, strict=True):
        if x.dtype != np.float32 or x.shape != (n_templates, m.dim):
            raise GalleryError(f"{path}: {m.name} embeddings are {x.dtype} {x.shape}, "
                               f"header says float32 ({n_templates}, {m.dim})")
    if n_templates:
        try:
            _check_rows(emb)  # the shapes and dtypes are checked above: no copy needed to validate
            for x in extra_emb:
                _check_rows(x)
        except EnrollmentError as exc:
            raise GalleryError(f"{path}: stored {exc}") from None
    emb = _readonly(emb)
    extra_emb = [_readonly(x) for x in extra_emb]
    crops = None if crops is None else _readonly(crops)
    gallery._crops_loaded = with_crops or not n_crops
    start = 0
    for pid, person in gallery._people.items():
        n = len(person.templates)
        rows = emb[start : start + n]  # read-only views: no second copy of the file in memory
        start += n
        person_crops = tuple(
            crops[i] if (crops is not None and i is not None) else None
            for i in person.crops  # type: ignore[union-attr]  # indices until resolved here
        )
        extra = tuple(x[start - n : start] for x in extra_emb)
        gallery._people[pid] = replace(person, embeddings=rows, crops=person_crops, extra=extra)
    return gallery


def _gallery_from_header(path: Path, header: Any) -> tuple[Gallery, int, int]:
    """A Gallery whose people hold crop indices in place of crops (resolved by _read)."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GalleryError(f"{path}: not an edge-mfr gallery (wrong format marker)")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GalleryVersionError(f"{path}: unknown gallery format version {version!r}")
    if version > FORMAT_VERSION:
        raise GalleryVersionError(
            f"{path}: gallery format version {version} was written by a newer edge-mfr (this one reads up "
            f"to version {FORMAT_VERSION}); upgrade edge-mfr"
        )
    try:
        return _gallery_fields_checked(path, header)
    except GalleryError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise GalleryError(f"{path}: corrupt gallery header: {exc}") from None


def _gallery_fields_checked(path: Path, header: dict[str, Any]) -> tuple[Gallery, int, int]:
    """The body of _gallery_from_header: every field read with its exact type (gallery_fields)."""
    extra_models = []
    for m in (F.get_list(header, "extra_models", "header") if "extra_models" in header else []):
        m = F.get_object(m, "an extra_models entry")
        extra_models.append(ExtraModel(F.get_str(m, "name", "extra_models"),  # type: ignore[arg-type]
                                       F.get_str(m, "sha256", "extra_models"),  # type: ignore[arg-type]
                                       F.get_int(m, "dim", "extra_models", minimum=1)))
    gallery = Gallery(
        F.get_str(header, "model_sha256", "header"),  # type: ignore[arg-type]
        dim=F.get_int(header, "dim", "header", minimum=1),
        keep_crops=F.get_bool(header, "keep_crops", "header"),
        extra_models=extra_models,
    )
    gallery.created_at = F.get_time(header, "created_at", "header")
    gallery.updated_at = F.get_time(header, "updated_at", "header")
    gallery.revision = F.get_int(header, "revision", "header")
    retired = F.get_list(header, "retired_ids", "header")
    if not all(isinstance(r, str) and _PERSON_ID_RE.match(r) for r in retired):
        raise GalleryError("header: retired_ids must be person ids")
    gallery._retired = set(retired)
    n_templates, n_crops, seen_crops = 0, F.get_int(header, "num_crops", "header"), set()
    for entry in F.get_list(header, "people", "header"):
        entry = F.get_object(entry, "a person entry")
        pid = F.get_str(entry, "person_id", "a person entry")
        if not isinstance(pid, str) or not _PERSON_ID_RE.match(pid) or pid in gallery._people:
            raise GalleryError(f"invalid or duplicate person id {pid!r}")
        where = f"person {pid}"
        templates = [F.get_object(t, f"{where}: a template") for t in F.get_list(entry, "templates", where)]
        try:
            name = validate_name(F.get_str(entry, "name", where))
            metas = tuple(
                TemplateMeta(
                    source=F.get_str(t, "source", where),  # type: ignore[arg-type]
                    quality=F.get_number(t, "quality", where),
                    synthetic=F.get_bool(t, "synthetic", where),
                    mask_style=F.get_str(t, "mask_style", where, optional=True),
                    masked=F.get_bool(t, "masked", where),
                    enrolled_at=F.get_time(t, "enrolled_at", where),
                ).checked()
                for t in templates
            )
        except EnrollmentError as exc:
            raise GalleryError(f"{where}: {exc}") from None
        crop_ids = tuple(_get_crop_index(t, where) for t in templates)
        for i in crop_ids:
            if i is not None and (not 0 <= i < n_crops or i in seen_crops):
                raise GalleryError(f"{where}: bad crop index {i!r}")
            if i is not None:
                seen_crops.add(i)
        n_templates += len(metas)
        gallery._people[pid] = Person(
            person_id=pid,
            name=name,
            created_at=F.get_time(entry, "created_at", where),
            updated_at=F.get_time(entry, "updated_at", where),
            allowed=F.get_bool(entry, "allowed", where),
            templates=metas,
            embeddings=np.zeros((0, gallery.dim), np.float32),
            crops=crop_ids,  # type: ignore[arg-type]
        )
    if n_templates != F.get_int(header, "num_templates", "header"):
        raise GalleryError(
            f"header counts {header['num_templates']} templates but lists {n_templates}"
        )
    gallery._model_checked = True
    return gallery, n_templates, n_crops


def _get_crop_index(template: dict[str, Any], where: str) -> int | None:
    value = template.get("crop") if isinstance(template, dict) else None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise GalleryError(f"{where}: bad crop index {value!r:.40}")
    return value


# ------------------------------------------------------------------ fleet deltas (see gallery_delta)


def _replay_deltas(gallery: Gallery, path: Path, key: str) -> int:
    """Apply the deltas written on the file ``key`` to ``gallery`` in order; returns how many.

    A delta of other embedding models (never written by :func:`append_delta`) is refused as a corrupt gallery:
    the door keeps its previous gallery and says why, instead of matching across embedding spaces.
    """
    files = gallery_delta.delta_files(path, key)
    for _, f in files:
        delta = _read(f, with_crops=False)
        if _embedding_models(delta) != _embedding_models(gallery):
            raise GalleryError(f"{f}: delta made with other embedding models than {path}")
        for pid in sorted(delta._retired):
            gallery._people.pop(pid, None)
            gallery._retired.add(pid)
        for person in delta.people:  # read without crops: one None per template, as put_person keeps them
            gallery._people[person.person_id] = person
            gallery._retired.discard(person.person_id)
        gallery.updated_at = max(gallery.updated_at, delta.updated_at)
    return len(files)


def append_delta(path: Path, people: Sequence[Person], revoked: Sequence[str], like: Gallery) -> int:
    """Write one delta on the current gallery file under the writer lock; returns the people count after it.

    ``like`` gives the embedding models (the delta's payload); a gallery file of other models raises
    GalleryModelMismatch and nothing is written. Only the base file's header is read, never its templates.
    """
    path = Path(path)
    with _writer_lock(path, LOCK_TIMEOUT_S):
        header, key = read_header(path)
        base = {"model_sha256": header.get("model_sha256"), "dim": header.get("dim"),
                "extra": [(m.get("name"), m.get("sha256"), m.get("dim")) for m in header.get("extra_models", [])]}
        if base != _embedding_models(like):
            raise GalleryModelMismatch(f"{path}: made with other embedding models than the delta")
        ids = {str(e.get("person_id")) for e in header.get("people", [])}
        files = gallery_delta.delta_files(path, key)
        for _, f in files:
            h, _ = read_header(f)
            ids -= set(h.get("retired_ids", []))
            ids |= {str(e.get("person_id")) for e in h.get("people", [])}
        delta = Gallery.create(like.model_sha256, dim=like.dim, extra_models=like.extra_models)
        for person in people:
            delta.put_person(person)
        delta._retired = set(revoked)
        seq = files[-1][0] + 1 if files else 1
        delta.save(path.with_name(f"{path.name}.delta.{key}.{seq:04d}"))
    return len((ids - set(revoked)) | {p.person_id for p in people})


def _embedding_models(g: Gallery) -> dict:
    """What a delta and its base must share: the embedding models."""
    return {"model_sha256": g.model_sha256, "dim": g.dim, "extra": [(m.name, m.sha256, m.dim) for m in g.extra_models]}

