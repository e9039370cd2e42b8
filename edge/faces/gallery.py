"""The gallery: enrolled people's encodings, stored locally; never their photos.

File format (version 1): a NumPy ``.npz`` archive read with ``allow_pickle=False`` holding
``header`` (JSON text), ``names`` (K strings), ``owner`` (M person indices) and
``encodings`` (M x D float32, one row per enrolled photo). The header binds the file to the
encoder's fingerprint; encodings from any other model are refused, never compared.
Version 2 adds ``head`` to the header: the gallery decides with a learned verification
head instead of a distance threshold. Version 3 adds ``rejected`` (R x D float32) and
``rejected_owner`` (R person indices): encodings that were confirmed *not* to be that person
(``jetkiosk gallery reject``). Version 4 adds ``style`` to a person's header record: the
kiosk style shown to them (``jetkiosk gallery style``), 1 to 64 of ``A-Z a-z 0-9 _ -``; a
record without one (or with null) has none. Version 5 adds ``last_seen`` (seconds since
1970 of their last match, written at most hourly by a running node) and ``expire_after``
(days without a match after which they are removed; 0: never; absent: the configured
``gallery.expire_after``). A file is written with the lowest version that
holds what it has, so older jetkiosk releases keep reading galleries that use nothing newer,
and refuse a newer version rather than misread it.

Reading checks a file before anything is allocated from it: each array's ``.npy`` header
(its dtype and shape, which must account for the member's size exactly), the JSON header's
size and fields, at most ``gallery.max_people`` people and ``gallery.max_encodings``
encodings (and as many rejections) each, every person's name once with at least one
encoding, and finite, unit-length encodings. Whatever is wrong is a ``GalleryError``.

At rest the archive is sealed (``core.sealing``: AES-256-GCM, the encoder and its
fingerprint in the authenticated header) with the gallery key, unless ``gallery.encrypt`` is
off; a plaintext file is read and, when encryption is on, sealed in its place once.

Writes go to a temporary file that is fsynced and renamed over the old one, mode 0600, so
a reader never sees half a file. Every writer changes the file through ``locked_update``:
an exclusive lock on ``<gallery>.lock``, the file read again under it, the change, the
write, the release; concurrent writers then never lose each other's changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import math
import os
import re
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from ..core.config import GalleryConfig
from ..core.errors import GalleryError
from ..core.sealing import (
    Key,
    SealError,
    find_keys,
    is_sealed,
    key_path,
    read_key,
    seal,
    unseal,
    write_key,
)
from ..runtime.manifest import Manifest
from .verification_head import VerificationHead

log = logging.getLogger(__name__)
FORMAT = "jetkiosk-gallery"
SEALED = "jetkiosk-gallery-sealed"  # the public header's format of an encrypted gallery
KEY_NAME = "gallery.key"  # the key file's and the systemd credential's name
VERSIONS = (1, 2, 3, 4, 5)
MAX_DIM = 4096  # encoding dimensions a header may claim
MAX_NAME = 128  # characters in a person's name
MAX_LABEL = 256  # characters in the header's encoder name and fingerprint
UNIT_TOLERANCE = 1e-3  # |length - 1| of an encoding (encoders L2-normalise: float32 ~1e-7)
HEADER_CHARS = 1 << 20  # JSON header: this many characters (the head's weights)...
HEADER_CHARS_PER_PERSON = 2048  # ...and these per person (an escaped name, their record)
STYLE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a style name in a person's record
NPY_PREFIX = 512  # bytes of a member read for its .npy header (numpy writes 128)
LOCK_TIMEOUT = 60.0  # seconds a writer waits for another one to finish
# A .npy header as numpy writes it (keys sorted, ", " after each), of a number or text dtype
_NPY_HEADER = re.compile(r"\{'descr': '([<>|=][fiuU][0-9]{1,6})', 'fortran_order': "
                         r"(False|True), 'shape': \(((?:[0-9]{1,12}, ?)*[0-9]{0,12})\), \} *\n")
# What zipfile raises on a damaged file (RuntimeError: an encrypted member,
# NotImplementedError: an unknown compression method), and np.dtype on an unknown size.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError,
               NotImplementedError, RuntimeError)


@dataclass
class Person:
    """One enrolled person: their encodings, the encodings confirmed not to be them, their own
    threshold (None: the gallery's rule decides), when they were first enrolled and their
    kiosk style (None: the kiosk's own)."""

    name: str
    encodings: np.ndarray  # n x D, one row per enrolled photo or frame
    rejected: np.ndarray  # r x D: "this is not name" (``jetkiosk gallery reject``)
    threshold: Optional[float] = None
    enrolled: float = field(default_factory=time.time)
    style: Optional[str] = None
    last_seen: Optional[float] = None  # their last match, as a node recorded it
    expire_after: Optional[float] = None  # days; None: gallery.expire_after; 0: never

    def expires(self, default_days: float) -> Optional[float]:
        """When they are to be removed for not being seen (None: never)."""
        days = default_days if self.expire_after is None else self.expire_after
        if days <= 0:
            return None
        return max(self.enrolled, self.last_seen or 0.0) + days * 86400.0

    def record(self) -> Dict[str, Any]:
        """What the file's header keeps of this person (the arrays are stored beside it); a
        style only when set, so a file without one keeps an older version's records."""
        record: Dict[str, Any] = {"threshold": self.threshold, "enrolled": self.enrolled}
        for key in ("style", "last_seen", "expire_after"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        return record


class Gallery:
    """People and their encodings, bound to one encoder fingerprint. ``limits`` (default:
    the configuration's defaults) bounds the people, and the encodings and rejections of
    each."""

    def __init__(self, encoder: str, fingerprint: str, dim: int,
                 limits: Optional[GalleryConfig] = None):
        self.encoder = encoder
        self.fingerprint = fingerprint
        self.dim = dim
        self.limits = limits or GalleryConfig()
        self.threshold: Optional[float] = None
        self.head: Optional[VerificationHead] = None  # decide with it instead of a threshold
        self._people: Dict[str, Person] = {}

    # -- people -----------------------------------------------------------------
    @property
    def names(self) -> List[str]:
        return sorted(self._people)

    def __contains__(self, name: object) -> bool:
        return name in self._people

    def person(self, name: str) -> Person:
        """``name``'s record; GalleryError when nobody of that name is enrolled."""
        if name not in self._people:
            raise GalleryError(f"no person named {name!r} in the gallery")
        return self._people[name]

    def encodings(self, name: str) -> np.ndarray:
        return self.person(name).encodings

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dim), np.float32)

    def _rows(self, encodings: np.ndarray, what: str) -> np.ndarray:
        rows = np.asarray(encodings, np.float32).reshape(-1, self.dim)
        _check_unit(rows, what)
        return rows

    def add(self, name: str, encodings: np.ndarray) -> int:
        """Enroll (or add photos to) ``name``; returns that person's photo count."""
        name = clean_name(name)
        encodings = self._rows(encodings, f"encodings of {name!r}")
        if not len(encodings):
            raise GalleryError(f"no encodings to enroll for {name!r}")
        person = self._people.get(name)
        if person is None and len(self._people) >= self.limits.max_people:
            raise GalleryError(f"{name!r} not enrolled: the gallery already has "
                               f"gallery.max_people ({self.limits.max_people}) people")
        count = len(encodings) + (0 if person is None else len(person.encodings))
        if count > self.limits.max_encodings:
            raise GalleryError(f"{name!r} would have {count} encodings, more than "
                               f"gallery.max_encodings ({self.limits.max_encodings}); remove "
                               "the person and enroll fewer photos, or raise the setting")
        if person is None:
            person = self._people[name] = Person(name, self._empty(), self._empty())
        person.encodings = np.concatenate([person.encodings, encodings])
        return len(person.encodings)

    def remove(self, name: str) -> None:
        del self._people[self.person(name).name]

    def rename(self, old: str, new: str) -> None:
        person = self.person(old)
        new = clean_name(new)
        if new in self._people:
            raise GalleryError(f"{new!r} is already enrolled")
        del self._people[old]
        person.name = new
        self._people[new] = person

    def reject(self, name: str, encoding: np.ndarray) -> int:
        """Record that ``encoding`` is not ``name``; returns that person's rejection count."""
        person = self.person(name)
        encoding = self._rows(encoding, f"rejection of {name!r}")
        count = len(person.rejected) + len(encoding)
        if count > self.limits.max_encodings:
            raise GalleryError(f"{name!r} would have {count} rejections, more than "
                               f"gallery.max_encodings ({self.limits.max_encodings})")
        person.rejected = np.concatenate([person.rejected, encoding])
        return len(person.rejected)

    def rejections(self, name: str) -> np.ndarray:
        """Encodings confirmed not to be ``name`` (r x D, possibly empty)."""
        return self.person(name).rejected

    def set_threshold(self, value: Optional[float], name: Optional[str] = None) -> None:
        _check_threshold(value)
        if name is None:
            self.threshold = value
        else:
            self.person(name).threshold = value

    def set_expiry(self, name: str, days: Optional[float]) -> None:
        """Remove ``name`` after ``days`` without a match (0: never; None: the configured
        ``gallery.expire_after``)."""
        if days is not None and not 0 <= days < 1e6:
            raise GalleryError(f"expire_after {days!r}: days from 0 (never) up to 999999")
        self.person(name).expire_after = days

    def expired(self, default_days: float, now: float) -> List[str]:
        """Who has gone unseen for longer than their expiry, at ``now``."""
        return [name for name, p in sorted(self._people.items())
                if (p.expires(default_days) or now + 1) <= now]

    def set_style(self, name: str, style: Optional[str]) -> None:
        """Show ``name`` the kiosk style ``style`` (None: the kiosk's own). Only the name's
        form is checked here; which styles exist is the kiosk's to say."""
        _check_style(style)
        self.person(name).style = style

    def set_head(self, head: Optional[VerificationHead]) -> None:
        """Decide with ``head`` (None: back to the distance threshold)."""
        if head is not None and head.fingerprint != self.fingerprint:
            raise GalleryError(
                f"the verification head was trained on encoder fingerprint {head.fingerprint}, "
                f"this gallery's encodings come from {self.fingerprint}")
        if head is not None and len(head.weights) != self.dim:
            raise GalleryError(f"the verification head has {len(head.weights)} weights, "
                               f"the encodings {self.dim} dimensions")
        self.head = head

    def template(self, name: str) -> np.ndarray:
        """``name``'s unit-length template: the mean of their encodings, renormalised."""
        mean = self.encodings(name).mean(0).astype(np.float32)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def templates(self) -> np.ndarray:
        """Every person's template, in ``names`` order."""
        if not self._people:
            return self._empty()
        return np.stack([self.template(n) for n in self.names])

    # -- file -------------------------------------------------------------------
    def save(self, path: Path, key: Optional[Key] = None,
             encrypt: Optional[bool] = None) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600, sealed with ``key``
        (default: the gallery key, made on first use) when ``encrypt`` (default:
        ``gallery.encrypt``)."""
        encrypt = self.limits.encrypt if encrypt is None else encrypt
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = self.names
        people = [self._people[n] for n in names]
        rejected = [p for p in people if len(p.rejected)]
        version = 5 if any(p.last_seen is not None or p.expire_after is not None
                           for p in people) \
            else 4 if any(p.style is not None for p in people) else 3 if rejected \
            else 1 if self.head is None else 2
        header = {
            "format": FORMAT, "version": version,
            "encoder": self.encoder, "fingerprint": self.fingerprint, "dim": self.dim,
            "threshold": self.threshold, "people": {p.name: p.record() for p in people},
        }
        if self.head is not None:
            header["head"] = self.head.as_dict()
        owner = np.concatenate([np.full(len(p.encodings), i, np.int32)
                                for i, p in enumerate(people)] or [np.zeros(0, np.int32)])
        rows = [p.encodings for p in people] or [self._empty()]
        arrays: Dict[str, Any] = {
            "header": np.array(json.dumps(header)), "names": np.array(names, dtype=str),
            "owner": owner, "encodings": np.concatenate(rows).astype(np.float32)}
        if rejected:
            arrays["rejected"] = np.concatenate([p.rejected for p in rejected])
            arrays["rejected_owner"] = np.concatenate([
                np.full(len(p.rejected), names.index(p.name), np.int32) for p in rejected])
        archive = io.BytesIO()
        np.savez(archive, **arrays)
        data = archive.getvalue()
        if encrypt and key is None:
            key = gallery_keys(path, self.limits, create=True)[0]
        if encrypt and key is not None:
            data = seal(data, key, {"format": SEALED, "version": 1, "encoder": self.encoder,
                                    "fingerprint": self.fingerprint})
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a full disk, most often
            raise GalleryError(f"{path}: cannot save the gallery ({exc.strerror or exc}); "
                               "the file on disk is unchanged") from exc
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def locked_update(path: Path, fingerprint: Optional[str] = None, legacy: Optional[str] = None,
                  limits: Optional[GalleryConfig] = None,
                  new: Optional[Gallery] = None) -> Iterator[Gallery]:
    """The gallery file to change, with no other writer in between.

    Takes an exclusive lock on ``<path>.lock``, reads the file again under it (``new`` when
    there is no file yet and ``new`` is given), yields it, saves it atomically when the block
    ends without an exception, and releases the lock. Do slow work (detection, encoding)
    before, not inside the block: other writers wait for it.
    """
    path = Path(path)
    with _exclusive(path.with_name(path.name + ".lock")):
        if new is not None and not path.exists():
            gallery = new
        else:
            gallery = load_gallery(path, fingerprint, legacy, limits, migrate=False)
        yield gallery
        gallery.save(path)


def enroll_encodings(path: Path, manifest: Manifest, dim: int, limits: GalleryConfig,
                     encoded: Dict[str, np.ndarray], only_new: bool = False) -> Dict[str, int]:
    """Add each person's encodings to the gallery file (created when missing) under its
    lock; returns each person's encoding count. ``only_new``: a name already enrolled is
    refused (GalleryError) and nothing is saved."""
    new = Gallery(manifest.name, manifest.fingerprint, dim, limits)
    with locked_update(path, manifest.fingerprint, manifest.legacy_fingerprint, limits,
                       new) as gallery:
        taken = [name for name in encoded if only_new and name in gallery]
        if taken:
            raise GalleryError(f"{taken[0]!r} is already enrolled")
        return {name: gallery.add(name, rows) for name, rows in encoded.items()}


@contextlib.contextmanager
def _exclusive(lock: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on the file ``lock``, created if need be."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise GalleryError(f"{lock}: cannot lock the gallery ({exc.strerror or exc})") from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GalleryError(f"{lock}: another process has held the gallery for "
                                       f"{timeout:.0f} s; nothing was changed") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def gallery_keys(path: Path, limits: GalleryConfig, create: bool = False) -> List[Key]:
    """The gallery key (and during a rotation the next one): ``gallery.key_file``, else
    ``gallery.key`` beside the gallery file; see ``core.sealing`` for credentials and the
    environment. ``create``: make the key file if there is no key."""
    try:
        return find_keys(limits.key_file, KEY_NAME, Path(path).parent, create)
    except SealError as exc:
        raise GalleryError(str(exc)) from None


def load_gallery(path: Path, fingerprint: Optional[str] = None, legacy: Optional[str] = None,
                 limits: Optional[GalleryConfig] = None, migrate: bool = True) -> Gallery:
    """Read a gallery file; with ``fingerprint``, refuse one made by another encoder.

    A gallery bound to ``legacy`` (the same encoder's fingerprint as earlier releases wrote
    it) is accepted and rebound to ``fingerprint``; the next save records the new one.
    ``limits`` (default: the configuration's) bounds the people and encodings accepted.
    A sealed file is opened with the gallery key; a plaintext one, when ``gallery.encrypt``
    is on and ``migrate``, is sealed in its place (under the lock) after it has been read.
    """
    path = Path(path)
    limits = limits or GalleryConfig()
    try:
        with open(path, "rb") as fh:
            sealed = is_sealed(fh.read(16))
            fh.seek(0)
            if sealed:
                return _read_archive(io.BytesIO(_opened(path, fh.read(), limits)), path,
                                     fingerprint, legacy, limits)
            gallery = _read_archive(fh, path, fingerprint, legacy, limits)
    except FileNotFoundError:
        raise GalleryError(f"{path}: no gallery here (enroll someone first)") from None
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read the gallery ({exc.strerror or exc})") from exc
    if limits.encrypt and migrate:
        _seal_in_place(path, limits)
    return gallery


def reseal(path: Path, limits: GalleryConfig, encrypt: bool,
           new_key: Optional[Path] = None) -> Optional[Key]:
    """Write the gallery file again under its lock: sealed with the gallery key
    (``encrypt``), in plaintext (not ``encrypt``), or with a new key (``new_key``: a key file
    to use, made if missing; with the gallery key file itself, a fresh key replaces it).
    Returns the key it is sealed with now. During a key change, readers find the next key in
    ``<key file>.new``; the old key is gone once the change is done."""
    path = Path(path)
    with _exclusive(path.with_name(path.name + ".lock")):
        gallery = load_gallery(path, limits=limits, migrate=False)
        if not encrypt:
            gallery.save(path, encrypt=False)
            return None
        if new_key is None:
            key = gallery_keys(path, limits, create=True)[0]
            gallery.save(path, key)
            return key
        current = gallery_keys(path, limits)
        own = key_path(limits.key_file, KEY_NAME, path.parent)
        if new_key.resolve() == own.resolve():
            if current and current[0].where != str(own):
                raise GalleryError(f"the gallery key comes from {current[0].where}, not "
                                   f"{own}; give --new-key another file and install it there")
            pending = write_key(own.with_name(own.name + ".new"), Key.generate(str(own)))
            gallery.save(path, pending)
            os.replace(pending.where, own)
            return Key(pending.secret, str(own))
        key = read_key(new_key) if new_key.exists() else write_key(new_key,
                                                                     Key.generate(str(new_key)))
        gallery.save(path, key)
        return key


def archive_bytes(path: Path, limits: Optional[GalleryConfig] = None) -> bytes:
    """The gallery's ``.npz`` archive as stored, opened with the gallery key if sealed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read the gallery ({exc.strerror or exc})") from exc
    return _opened(path, data, limits or GalleryConfig()) if is_sealed(data) else data


def _opened(path: Path, data: bytes, limits: GalleryConfig) -> bytes:
    try:
        public, plaintext = unseal(data, gallery_keys(path, limits), str(path))
    except SealError as exc:
        raise GalleryError(str(exc)) from None
    if public.get("format") != SEALED:
        raise GalleryError(f"{path}: a sealed file, but not a jetkiosk gallery")
    return plaintext


def _read_archive(fh: Any, path: Path, fingerprint: Optional[str], legacy: Optional[str],
                  limits: GalleryConfig) -> Gallery:
    try:
        archive = zipfile.ZipFile(fh)
    except _ZIP_ERRORS as exc:
        raise GalleryError(f"{path}: gallery file is corrupt or truncated ({exc})") from exc
    with archive:
        return _read(_Members(archive, path), fingerprint, legacy, limits)


def _seal_in_place(path: Path, limits: GalleryConfig) -> None:
    """Encrypt a plaintext gallery file once, under the lock; if that fails (a read-only
    file system, say) it stays as it is and the reason is logged."""
    try:
        with locked_update(path, limits=limits):
            pass  # read again under the lock, saved sealed
        key = gallery_keys(path, limits)[0]
        log.warning("%s: the plaintext gallery is now encrypted (key %s, %s)", path,
                    key.key_id, key.where)
    except GalleryError as exc:
        log.error("%s: the gallery stays unencrypted: %s", path, exc)


class _Layout(NamedTuple):
    """An array as its ``.npy`` header declares it, and where its data starts."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _Members:
    """An open gallery file's arrays, each checked from its ``.npy`` header before it is read."""

    def __init__(self, archive: zipfile.ZipFile, path: Path):
        self.archive = archive
        self.path = path
        self.infos = {i.filename[:-4]: i for i in archive.infolist()
                      if i.filename.endswith(".npy")}
        self.layouts: Dict[str, _Layout] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def layout(self, name: str, kinds: str, itemsizes: Tuple[int, int], ndim: int,
               what: str) -> Tuple[int, ...]:
        """The shape ``name``'s header declares, refused (as not ``what``) unless the dtype
        is of ``kinds`` with an item size in ``itemsizes`` and the shape has ``ndim``
        dimensions, and unless the member's size is exactly what that shape needs."""
        info = self.infos.get(name)
        if info is None:
            raise GalleryError(f"{self.path}: not a jetkiosk gallery file (no {name} array)")
        try:
            with self.archive.open(info) as member:
                layout = _npy_layout(member.read(NPY_PREFIX))
        except _ZIP_ERRORS as exc:
            raise GalleryError(f"{self.path}: {name}: unreadable array header ({exc})") from exc
        shape, dtype = layout.shape, layout.dtype
        low, high = itemsizes
        if dtype.kind not in kinds or not low <= dtype.itemsize <= high or len(shape) != ndim:
            raise GalleryError(f"{self.path}: {name} is a {len(shape)}-dimensional array of "
                               f"{dtype.str}, not {what}")
        if layout.offset + layout.nbytes != info.file_size:
            raise GalleryError(f"{self.path}: {name} claims shape {shape} "
                               f"({layout.offset + layout.nbytes} bytes) but holds "
                               f"{info.file_size} bytes")
        self.layouts[name] = layout
        return shape

    def array(self, name: str) -> np.ndarray:
        """The member's array, as ``layout`` checked it (call that first)."""
        layout = self.layouts[name]
        try:
            with self.archive.open(self.infos[name]) as member:
                member.read(layout.offset)
                data = member.read(layout.nbytes)
        except _ZIP_ERRORS as exc:
            raise GalleryError(f"{self.path}: {name}: corrupt or truncated ({exc})") from exc
        if len(data) != layout.nbytes:
            raise GalleryError(f"{self.path}: {name}: truncated")
        return np.frombuffer(data, layout.dtype).reshape(layout.shape,
                                                         order="F" if layout.fortran else "C")


def _npy_layout(prefix: bytes) -> _Layout:
    """The layout of a ``.npy`` file (version 1.0 or 2.0) from its first bytes. Only a
    header written the way numpy writes it, for the dtypes a gallery stores, is read; it is
    matched, never evaluated, so what a file claims costs nothing to look at."""
    version = prefix[6:8]
    if prefix[:6] != b"\x93NUMPY" or version not in (b"\x01\x00", b"\x02\x00"):
        raise ValueError("not a .npy array of format version 1.0 or 2.0")
    start = 10 if version == b"\x01\x00" else 12
    if len(prefix) < start:
        raise ValueError("cut short")
    length = int.from_bytes(prefix[8:start], "little")
    match = _NPY_HEADER.fullmatch(prefix[start:start + length].decode("latin1"))
    if match is None:
        raise ValueError("not numpy's header of a number or text array")
    descr, fortran, shape = match.groups()
    return _Layout(tuple(int(n) for n in shape.split(",") if n.strip()), np.dtype(descr),
                   fortran == "True", start + length)


def _read(files: _Members, fingerprint: Optional[str], legacy: Optional[str],
          limits: GalleryConfig) -> Gallery:
    """Check and read the members, in an order that allocates nothing unbounded."""
    where = files.path
    people = files.layout("names", "U", (4, 4 * MAX_NAME), 1,
                          f"a list of names of up to {MAX_NAME} characters")[0]
    if people > limits.max_people:
        raise GalleryError(f"{where}: {people} people, more than gallery.max_people "
                           f"({limits.max_people})")
    chars = HEADER_CHARS + HEADER_CHARS_PER_PERSON * people
    files.layout("header", "U", (4, 4 * chars), 0, f"a text of up to {chars} characters")
    header = _check_header(_parse_json(str(files.array("header")), where), where)
    rebind = fingerprint is not None and legacy is not None and header["fingerprint"] == legacy
    if rebind:
        log.info("%s: encoder fingerprint %s is the earlier form of %s; rebinding", where,
                 legacy, fingerprint)
        header["fingerprint"] = fingerprint
    if fingerprint is not None and header["fingerprint"] != fingerprint:
        raise GalleryError(
            f"{where}: encodings were made by encoder {header['encoder']} "
            f"(fingerprint {header['fingerprint']}), but the loaded encoder has fingerprint "
            f"{fingerprint}; they cannot be compared. Re-enroll, or use the matching models.")
    dim = header["dim"]
    pairs = [("encodings", "owner")]
    if "rejected" in files or "rejected_owner" in files:
        pairs.append(("rejected", "rejected_owner"))
    for rows, owner in pairs:
        count, width = files.layout(rows, "f", (4, 4), 2, "a float32 matrix")
        owners = files.layout(owner, "iu", (1, 8), 1, "a list of integers")[0]
        if width != dim or owners != count:
            raise GalleryError(f"{where}: {count} x {width} {rows} and {owners} {owner}, "
                               f"expected {dim} columns and one {owner} per row")
        if count > people * limits.max_encodings:
            raise GalleryError(f"{where}: {count} {rows} for {people} person(s), more than "
                               f"gallery.max_encodings ({limits.max_encodings}) each")
    names = [str(n) for n in files.array("names")]
    _check_names(names, header["people"], where)
    gallery = Gallery(header["encoder"], header["fingerprint"], dim, limits)
    gallery.threshold = header["threshold"]
    head = header.get("head")
    if head is not None:
        if rebind and isinstance(head, dict):
            head = {**head, "fingerprint": fingerprint}
        gallery.set_head(VerificationHead.from_dict(head, dim, f"{where}: head"))
    split = {rows: _per_person(files, rows, owner, names, limits, where)
             for rows, owner in pairs}
    for i, name in enumerate(names):
        person = Person(name, split["encodings"][i],
                        split["rejected"][i] if "rejected" in split else gallery._empty())
        _restore(person, header["people"], f"{where}: person {name!r}")
        gallery._people[name] = person
    return gallery


def _per_person(files: _Members, rows: str, owner: str, names: List[str],
                limits: GalleryConfig, where: Path) -> List[np.ndarray]:
    """The rows of ``rows`` split by person (``owner``), each person's count checked before
    the rows are read: at most ``max_encodings`` each, at least one encoding each."""
    whose = files.array(owner)
    outside = (whose < 0) | (whose >= len(names))
    if outside.any():
        raise GalleryError(f"{where}: {owner} index {whose[outside][0]} is not one of the "
                           f"{len(names)} people")
    whose = whose.astype(np.intp)
    counts = np.bincount(whose, minlength=len(names))
    for name, count in zip(names, counts):
        if count > limits.max_encodings:
            raise GalleryError(f"{where}: {name!r} has {count} {rows}, more than "
                               f"gallery.max_encodings ({limits.max_encodings})")
        if rows == "encodings" and not count:
            raise GalleryError(f"{where}: {name!r} has no encodings")
    vectors = files.array(rows)
    _check_unit(vectors, f"{where}: {rows}")
    order = np.argsort(whose, kind="stable")
    return np.split(vectors[order].astype(np.float32, copy=False), np.cumsum(counts)[:-1])


def _parse_json(text: str, where: Path) -> Any:
    """The header's JSON: no NaN or Infinity, no integer beyond 18 digits, bounded depth."""
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number")

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > 18:
            raise ValueError(f"integer {digits[:20]}... out of range")
        return int(digits)

    try:
        return json.loads(text, parse_constant=constant, parse_int=integer)
    except RecursionError:
        raise GalleryError(f"{where}: the header is nested too deeply") from None
    except ValueError as exc:
        raise GalleryError(f"{where}: the header is not JSON ({exc})") from None


def _check_header(header: Any, where: Path) -> Dict[str, Any]:
    """The header's fields, each of the type and in the range the format allows."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GalleryError(f"{where}: not a jetkiosk gallery file")
    version = header.get("version")
    if not _whole(version) or version not in VERSIONS:
        raise GalleryError(f"{where}: gallery format version {_brief(version)}, "
                           f"this jetkiosk reads versions {VERSIONS}")
    for key in ("encoder", "fingerprint", "dim", "people"):
        if key not in header:
            raise GalleryError(f"{where}: the header has no {key!r}")
    for key in ("encoder", "fingerprint"):
        value = header[key]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL \
                or not value.isprintable():
            raise GalleryError(f"{where}: header {key} {_brief(value)} is not 1 to "
                               f"{MAX_LABEL} printable characters")
    if not _whole(header["dim"]) or not 0 < header["dim"] <= MAX_DIM:
        raise GalleryError(f"{where}: header dim {_brief(header['dim'])} is not a whole "
                           f"number from 1 to {MAX_DIM}")
    header.setdefault("threshold", None)
    _check_threshold(header["threshold"], f"{where}: threshold")
    if not isinstance(header["people"], dict):
        raise GalleryError(f"{where}: header people {_brief(header['people'])} is not an "
                           "object")
    return header


def _check_names(names: List[str], records: Dict[str, Any], where: Path) -> None:
    """Valid, distinct names, the same as the header's records."""
    seen = set()
    for name in names:
        if not _valid_name(name):
            raise GalleryError(f"{where}: invalid person name {_brief(name)}")
        if name in seen:
            raise GalleryError(f"{where}: {name!r} is in the gallery twice")
        seen.add(name)
    extra = set(records) - seen
    if extra:
        raise GalleryError(f"{where}: the header has a record of {_brief(min(extra))} but "
                           "no encodings")


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and name == name.strip() \
        and not any(c in name for c in "\n\r\t/")


def clean_name(name: str) -> str:
    """``name`` without surrounding blanks; GalleryError unless it is a usable name."""
    if not _valid_name(name.strip()):
        raise GalleryError(f"invalid person name {_brief(name)}")
    return name.strip()


def _check_unit(rows: np.ndarray, what: str) -> None:
    """Finite, unit-length rows, as encoders give them."""
    if not np.isfinite(rows).all():
        raise GalleryError(f"{what}: NaN or infinite values")
    lengths = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    off = np.flatnonzero(np.abs(lengths - 1.0) >= UNIT_TOLERANCE)
    if len(off):
        raise GalleryError(f"{what}: encoding {off[0] + 1} has length {lengths[off[0]]:.4g}, "
                           f"not 1 (within {UNIT_TOLERANCE})")


def _check_threshold(value: Optional[float], where: str = "threshold") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0.0 < value < 4.0):
        raise GalleryError(f"{where} {_brief(value)} out of range (0, 4) for squared L2 "
                           "distance")


def _restore(person: Person, records: Dict[str, Any], where: str) -> None:
    """The header's record of ``person``: their own threshold, enrollment time and style."""
    record = records.get(person.name)
    if not isinstance(record, dict):
        raise GalleryError(f"{where}: missing from the header")
    _check_threshold(record.get("threshold"), f"{where}: threshold")
    enrolled = record.get("enrolled", person.enrolled)
    if isinstance(enrolled, bool) or not isinstance(enrolled, (int, float)) \
            or not 0 <= enrolled < 1e11:
        raise GalleryError(f"{where}: enrollment time {_brief(enrolled)} is not a number of "
                           "seconds since 1970")
    _check_style(record.get("style"), f"{where}: style")
    for key, high in (("last_seen", 1e11), ("expire_after", 1e6)):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < high):
            raise GalleryError(f"{where}: {key} {_brief(value)} is not a number from 0 to "
                               f"{high:g}")
        setattr(person, key, None if value is None else float(value))
    person.threshold, person.enrolled = record.get("threshold"), float(enrolled)
    person.style = record.get("style")


def _check_style(value: Optional[str], where: str = "style") -> None:
    if value is not None and (not isinstance(value, str) or STYLE.fullmatch(value) is None):
        raise GalleryError(f"{where} {_brief(value)} is not a style name (1 to 64 letters, "
                           "digits, '_' or '-')")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _brief(value: Any) -> str:
    """``repr(value)``, cut short: a hostile file's values go into one-line messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
