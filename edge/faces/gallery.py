"""The gallery: enrolled people's encodings, stored locally; never their photos.

File format (version 1): a NumPy ``.npz`` archive read with ``allow_pickle=False`` holding
``header`` (JSON text), ``names`` (K strings), ``owner`` (M person indices) and
``encodings`` (M x D float32, one row per enrolled photo). The header binds the file to the
encoder's fingerprint; encodings from any other model are refused, never compared.
Version 2 adds ``head`` to the header: the gallery decides with a learned verification
head instead of a distance threshold. Version 3 adds ``rejected`` (R x D float32) and
``rejected_owner`` (R person indices): encodings that were confirmed *not* to be that person
(``jetkiosk gallery reject``). A file is written with the lowest version that holds what
it has, so older jetkiosk releases keep reading galleries that use nothing newer.
Writes go to a temporary file that is fsynced and renamed over the old one, mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..core.errors import GalleryError
from .verification_head import VerificationHead

log = logging.getLogger(__name__)
FORMAT = "jetkiosk-gallery"
VERSIONS = (1, 2, 3)


@dataclass
class Person:
    """One enrolled person: their encodings, the encodings confirmed not to be them, their own
    threshold (None: the gallery's rule decides) and when they were first enrolled."""

    name: str
    encodings: np.ndarray  # n x D, one row per enrolled photo or frame
    rejected: np.ndarray  # r x D: "this is not name" (``jetkiosk gallery reject``)
    threshold: Optional[float] = None
    enrolled: float = field(default_factory=time.time)

    def record(self) -> Dict[str, Any]:
        """What the file's header keeps of this person (the arrays are stored beside it)."""
        return {"threshold": self.threshold, "enrolled": self.enrolled}


class Gallery:
    """People and their encodings, bound to one encoder fingerprint."""

    def __init__(self, encoder: str, fingerprint: str, dim: int):
        self.encoder = encoder
        self.fingerprint = fingerprint
        self.dim = dim
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

    def add(self, name: str, encodings: np.ndarray) -> int:
        """Enroll (or add photos to) ``name``; returns that person's photo count."""
        name = name.strip()
        if not name or len(name) > 128 or any(c in name for c in "\n\r\t/"):
            raise GalleryError(f"invalid person name {name!r}")
        encodings = np.asarray(encodings, np.float32).reshape(-1, self.dim)
        if not len(encodings):
            raise GalleryError(f"no encodings to enroll for {name!r}")
        person = self._people.setdefault(name, Person(name, self._empty(), self._empty()))
        person.encodings = np.concatenate([person.encodings, encodings])
        return len(person.encodings)

    def remove(self, name: str) -> None:
        del self._people[self.person(name).name]

    def rename(self, old: str, new: str) -> None:
        person = self.person(old)
        if new in self._people:
            raise GalleryError(f"{new!r} is already enrolled")
        self.add(new, person.encodings)
        self._people[new].rejected = person.rejected
        self._people[new].threshold, self._people[new].enrolled = person.threshold, \
            person.enrolled
        self.remove(old)

    def reject(self, name: str, encoding: np.ndarray) -> int:
        """Record that ``encoding`` is not ``name``; returns that person's rejection count."""
        person = self.person(name)
        encoding = np.asarray(encoding, np.float32).reshape(-1, self.dim)
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
    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = self.names
        people = [self._people[n] for n in names]
        rejected = [p for p in people if len(p.rejected)]
        version = 3 if rejected else 1 if self.head is None else 2
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
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
            try:
                with os.fdopen(fd, "wb") as fh:
                    arrays: Dict[str, Any] = {
                        "header": np.array(json.dumps(header)),
                        "names": np.array(names, dtype=str), "owner": owner,
                        "encodings": np.concatenate(rows).astype(np.float32)}
                    if rejected:
                        arrays["rejected"] = np.concatenate([p.rejected for p in rejected])
                        arrays["rejected_owner"] = np.concatenate([
                            np.full(len(p.rejected), names.index(p.name), np.int32)
                            for p in rejected])
                    np.savez(fh, **arrays)
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


def load_gallery(path: Path, fingerprint: Optional[str] = None,
                 legacy: Optional[str] = None) -> Gallery:
    """Read a gallery file; with ``fingerprint``, refuse one made by another encoder.

    A gallery bound to ``legacy`` (the same encoder's fingerprint as earlier releases wrote
    it) is accepted and rebound to ``fingerprint``; the next save records the new one.
    """
    path = Path(path)
    try:
        with np.load(str(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            names = [str(n) for n in data["names"]]
            owner, rows = data["owner"], data["encodings"]
            rejected = (data["rejected"], data["rejected_owner"]) if "rejected" in data \
                else None
    except FileNotFoundError:
        raise GalleryError(f"{path}: no gallery here (enroll someone first)") from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise GalleryError(f"{path}: gallery file is corrupt or truncated ({exc})") from exc
    except (KeyError, ValueError, OSError) as exc:
        raise GalleryError(f"{path}: not a jetkiosk gallery file ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise GalleryError(f"{path}: not a jetkiosk gallery file")
    if header.get("version") not in VERSIONS:
        raise GalleryError(f"{path}: gallery format version {header.get('version')!r}, "
                           f"this jetkiosk reads versions {VERSIONS}")
    if fingerprint is not None and legacy is not None and header["fingerprint"] == legacy:
        log.info("%s: encoder fingerprint %s is the earlier form of %s; rebinding", path,
                 legacy, fingerprint)
        header["fingerprint"] = fingerprint
        if header.get("head") is not None:
            header["head"]["fingerprint"] = fingerprint
    if fingerprint is not None and header["fingerprint"] != fingerprint:
        raise GalleryError(
            f"{path}: encodings were made by encoder {header['encoder']} "
            f"(fingerprint {header['fingerprint']}), but the loaded encoder has fingerprint "
            f"{fingerprint}; they cannot be compared. Re-enroll, or use the matching models.")
    dim = int(header["dim"])
    if rows.ndim != 2 or rows.shape[1] != dim or len(owner) != len(rows) or (
            len(owner) and (owner.min() < 0 or owner.max() >= len(names))):
        raise GalleryError(f"{path}: gallery file is inconsistent (shapes do not agree)")
    gallery = Gallery(header["encoder"], header["fingerprint"], dim)
    gallery.threshold = header.get("threshold")
    if header.get("head") is not None:
        gallery.set_head(VerificationHead.from_dict(header["head"], dim, f"{path}: head"))
    records = header.get("people")
    for i, name in enumerate(names):
        gallery.add(name, rows[owner == i])
        _restore(gallery.person(name), records, f"{path}: person {name!r}")
    if rejected is not None:
        vectors, whose = rejected
        if vectors.ndim != 2 or vectors.shape[1] != dim or len(whose) != len(vectors) or (
                len(whose) and (whose.min() < 0 or whose.max() >= len(names))):
            raise GalleryError(f"{path}: gallery file is inconsistent (rejections)")
        for i in np.unique(whose):
            gallery.reject(names[int(i)], vectors[whose == i])
    return gallery


def _check_threshold(value: Optional[float], where: str = "threshold") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0.0 < value < 4.0):
        raise GalleryError(f"{where} {value!r} out of range (0, 4) for squared L2 distance")


def _restore(person: Person, records: Any, where: str) -> None:
    """The header's record of ``person``: their own threshold and enrollment time."""
    record = records.get(person.name) if isinstance(records, dict) else None
    if not isinstance(record, dict):
        raise GalleryError(f"{where}: missing from the header")
    _check_threshold(record.get("threshold"), f"{where}: threshold")
    enrolled = record.get("enrolled", person.enrolled)
    if isinstance(enrolled, bool) or not isinstance(enrolled, (int, float)):
        raise GalleryError(f"{where}: enrollment time {enrolled!r} is not a number")
    person.threshold, person.enrolled = record.get("threshold"), float(enrolled)
