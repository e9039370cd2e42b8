"""Encryption at rest: a key, and files sealed with it (AES-256-GCM, ``cryptography``).

A sealed file is::

    MAGIC (8 bytes) | header length (4 bytes, big-endian) | header (UTF-8 JSON) | ciphertext

The header is public: ``format``, ``version``, ``cipher`` ("AES-256-GCM"), ``nonce`` (12
random bytes, hex, fresh for every write), ``key_id`` (which key sealed it) and whatever the
caller adds (the gallery adds its encoder and fingerprint). Everything before the ciphertext
is the associated data, so the header cannot be changed without the file failing to open.
The ciphertext ends with GCM's 16-byte tag: a flipped bit anywhere, a cut or a wrong key is
refused, never misread.

The key (32 random bytes) is looked for, in this order: ``$CREDENTIALS_DIRECTORY/<name>``
(a systemd credential: ``LoadCredential=`` or ``LoadCredentialEncrypted=``), then
``$JETKIOSK_GALLERY_KEY`` (64 hex digits), then a key file (the configured one, else
``<data dir>/<name>``), created on first use with mode 0400. A key file holds the 32 bytes,
or 64 hex digits. During a key rotation, ``<key file>.new`` holds the next key: a file
sealed with either opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .errors import JetkioskError

MAGIC = b"\x89JKSEAL\n"
CIPHER = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_HEADER = 64 << 10
KEY_ENV = "JETKIOSK_GALLERY_KEY"
HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class SealError(JetkioskError):
    """A sealed file that cannot be opened, or a key that cannot be read or made."""


@dataclass(frozen=True)
class Key:
    """A 32-byte key and where it came from (a path, or the environment variable)."""

    secret: bytes
    where: str

    @property
    def key_id(self) -> str:
        """Names the key in a sealed file's header without revealing it."""
        return hashlib.sha256(b"jetkiosk-key-id\0" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls, where: str) -> Key:
        return cls(os.urandom(KEY_BYTES), where)


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) starts like a sealed file."""
    return data[:len(MAGIC)] == MAGIC


def seal(plaintext: bytes, key: Key, public: Dict[str, Any]) -> bytes:
    """``plaintext`` encrypted with ``key``, ``public`` in the authenticated header."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(NONCE_BYTES)
    header = json.dumps({**public, "cipher": CIPHER, "nonce": nonce.hex(),
                         "key_id": key.key_id}, sort_keys=True).encode()
    prefix = MAGIC + len(header).to_bytes(4, "big") + header
    return prefix + AESGCM(key.secret).encrypt(nonce, plaintext, prefix)


def header(data: bytes, where: str) -> Tuple[Dict[str, Any], int]:
    """A sealed file's public header and where its ciphertext starts (nothing decrypted)."""
    if not is_sealed(data):
        raise SealError(f"{where}: not a sealed file")
    start = len(MAGIC) + 4
    length = int.from_bytes(data[len(MAGIC):start], "big")
    if len(data) < start or length > MAX_HEADER or len(data) < start + length:
        raise SealError(f"{where}: sealed file is truncated (its header is cut short)")
    try:
        fields = json.loads(data[start:start + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SealError(f"{where}: sealed file's header is damaged") from None
    if not isinstance(fields, dict) or fields.get("cipher") != CIPHER \
            or not isinstance(fields.get("nonce"), str) \
            or not re.fullmatch(r"[0-9a-f]{24}", fields["nonce"]) \
            or not isinstance(fields.get("key_id"), str):
        raise SealError(f"{where}: sealed file's header is damaged or of an unknown cipher")
    return fields, start + length


def unseal(data: bytes, keys: List[Key], where: str) -> Tuple[Dict[str, Any], bytes]:
    """The public header and the plaintext of a sealed file, opened with whichever of
    ``keys`` sealed it; SealError for a missing key, a wrong one, or any change to the
    file."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    fields, start = header(data, where)
    key = next((k for k in keys if k.key_id == fields["key_id"]), None)
    if key is None:
        held = ", ".join(f"{k.key_id} ({k.where})" for k in keys) or "none"
        raise SealError(f"{where}: sealed with key {fields['key_id']}, but the key found is "
                        f"{held}; give the right key (gallery.key_file, ${KEY_ENV}, or the "
                        "systemd credential)")
    try:
        plaintext = AESGCM(key.secret).decrypt(bytes.fromhex(fields["nonce"]), data[start:],
                                               data[:start])
    except InvalidTag:
        raise SealError(f"{where}: sealed file fails its authentication check: it was changed "
                        "or truncated after it was written") from None
    return fields, plaintext


def key_path(configured: str, name: str, default_dir: Path) -> Path:
    """The key file: ``configured``, else ``<default_dir>/<name>``."""
    return Path(configured) if configured else default_dir / name


def find_keys(configured: str, name: str, default_dir: Path, create: bool = False
              ) -> List[Key]:
    """The key to use first, then (during a rotation) the next one; see the module's
    docstring for the order looked in. ``create``: make the key file when no key is found
    (none is made when a credential or the environment variable is set)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / name).is_file():
        return [read_key(Path(credentials) / name)]
    if os.environ.get(KEY_ENV):
        return [_parse_key(os.environ[KEY_ENV].encode(), f"${KEY_ENV}")]
    path = key_path(configured, name, default_dir)
    keys = [read_key(p) for p in (path, path.with_name(path.name + ".new")) if p.exists()]
    if not keys and create:
        keys = [write_key(path, Key.generate(str(path)))]
    return keys


def read_key(path: Path) -> Key:
    try:
        with open(path, "rb") as fh:
            data = fh.read(4 * KEY_BYTES)
    except OSError as exc:
        raise SealError(f"{path}: cannot read the key ({exc.strerror or exc})") from None
    return _parse_key(data, str(path))


def _parse_key(data: bytes, where: str) -> Key:
    if len(data) == KEY_BYTES:
        return Key(data, where)
    text = data.strip()
    if HEX_KEY.fullmatch(text.decode("ascii", "replace")):
        return Key(bytes.fromhex(text.decode("ascii")), where)
    raise SealError(f"{where}: not a key (32 bytes, or 64 hex digits)")


def write_key(path: Path, key: Key) -> Key:
    """Write ``key`` to a new file ``path`` (mode 0400, fsynced); an existing file is
    replaced atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            os.fchmod(fd, 0o400)
            os.write(fd, key.secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.exists():
            tmp.unlink()
        raise SealError(f"{path}: cannot write the key ({exc.strerror or exc})") from None
    return Key(key.secret, str(path))

