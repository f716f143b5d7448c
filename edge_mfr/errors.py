"""One exception family, so the CLI can turn any expected failure into a one-line message.

Each error also inherits the builtin it corresponds to, so callers that catch ``ValueError`` or
``FileNotFoundError`` keep working.
"""

from __future__ import annotations


class EdgeMfrError(Exception):
    """Base class of every error the CLI reports as a clear one-line message (exit code 2)."""


class ModelError(EdgeMfrError, RuntimeError):
    """A model file is missing, truncated, not the one in the manifest, or cannot be loaded."""


class RuntimeMissingError(ModelError):
    """Neither ai-edge-litert nor tflite-runtime can be imported."""


class ImageError(EdgeMfrError, ValueError):
    """An input image is unreadable, empty, corrupt, too small or too large."""


class InputNotFoundError(EdgeMfrError, FileNotFoundError):
    """A path given on the command line does not exist."""


class GalleryError(EdgeMfrError, ValueError):
    """The gallery file is corrupt, from another model, or an operation on it is invalid."""


class EnrollmentError(EdgeMfrError, ValueError):
    """Enrollment input yielded no usable face, or the name is invalid."""


class DuplicatePersonError(EnrollmentError):
    """A new enrollment's faces match someone already enrolled; carries who, so each interface (CLI, kiosk,
    MQTT) can name the match and say how to confirm in its own terms."""

    def __init__(self, message: str, *, person_id: str, name: str, score: float):
        super().__init__(message)
        self.person_id = person_id
        self.name = name
        self.score = score


class ConfigError(EdgeMfrError, ValueError):
    """The configuration file is invalid."""
