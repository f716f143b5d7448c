"""Fleet signing keys: Ed25519 (via ``cryptography``), one private key on the admin host, public keys on doors.

Why Ed25519: small keys and signatures, fast verification on a Pi, no parameters to get wrong. The private key
never leaves the admin host: a door only needs the public key, so a stolen door cannot sign bundles.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from edge_mfr.errors import ConfigError

PRIVATE_NAME = "fleet.key"
PUBLIC_NAME = "fleet.pub"
WARNING = ("keep fleet.key on the admin host only (mode 0600, never on a door, in a backup you do not "
           "control, or in the repository): anyone holding it can enroll people at every door")


def key_id(public_key: Any) -> str:
    """A short, stable name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_text(public_key: Any) -> str:
    """The one-line text form written to ``fleet.pub`` and accepted by :func:`load_public`."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519 " + base64.b64encode(raw).decode("ascii")


def keygen(out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Create ``fleet.key`` (0600, PEM PKCS#8) and ``fleet.pub`` in ``out_dir``; refuse to overwrite."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path, pub_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if not force and (priv_path.exists() or pub_path.exists()):
        raise ConfigError(f"{out_dir}: a fleet key already exists there; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = priv_path.with_name(priv_path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, priv_path)
    pub_path.write_text(public_text(key.public_key()) + "\n", encoding="ascii")
    pub_path.chmod(0o644)
    return priv_path, pub_path


def load_private(path: Path) -> Any:
    """Read the admin host's private key; refuse one that others can read."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fleet private key ({exc.strerror or exc})") from None
    if mode & 0o077:
        raise ConfigError(f"{path}: fleet private key is readable by others (mode {mode:04o}); chmod 600 it")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not a PEM Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Any:
    """Read one trusted public key (the ``ed25519 BASE64`` line written by :func:`keygen`)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the fleet public key ({getattr(exc, 'strerror', None) or exc})"
                          ) from None
    kind, _, b64 = text.partition(" ")
    try:
        raw = base64.b64decode(b64, validate=True)
        if kind != "ed25519" or len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ConfigError(f"{path}: not an edge-mfr fleet public key (expected one line 'ed25519 BASE64')"
                          ) from None


def load_trusted(paths: list[Path]) -> dict[str, Any]:
    """Key id -> public key for every configured fleet key (at least one)."""
    if not paths:
        raise ConfigError("fleet.public_keys is empty: a door must trust at least one fleet key")
    keys = {}
    for p in paths:
        k = load_public(Path(p))
        keys[key_id(k)] = k
    return keys
