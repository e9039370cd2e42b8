"""The gallery: enrolled people's encodings, stored locally; never their photos.

File format (version 1): a NumPy ``.npz`` archive read with ``allow_pickle=False`` holding
``header`` (JSON text), ``names`` (K strings), ``owner`` (M person indices) and
``encodings`` (M x D float32, one row per enrolled photo). The header binds the file to the
encoder's fingerprint; encodings from any other model are refused, never compared.
Version 2 adds ``head`` to the header: the gallery decides with a learned verification
head instead of a distance threshold. A gallery without a head is still written as version
1, so older jetkiosk releases keep reading it; one with a head is refused by them.
Writes go to a temporary file that is fsynced and renamed over the old one, mode 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .errors import GalleryError
from .verification_head import VerificationHead

FORMAT = "jetkiosk-gallery"
VERSIONS = (1, 2)


class Gallery:
    """People and their encodings, bound to one encoder fingerprint."""

    def __init__(self, encoder: str, fingerprint: str, dim: int):
        self.encoder = encoder
        self.fingerprint = fingerprint
        self.dim = dim
        self.threshold: Optional[float] = None
        self.head: Optional[VerificationHead] = None  # decide with it instead of a threshold
        self.people: Dict[str, Dict[str, Any]] = {}  # name -> {"threshold", "enrolled"}
        self._encodings: Dict[str, np.ndarray] = {}  # name -> n x D

    # -- people -----------------------------------------------------------------
    @property
    def names(self) -> List[str]:
        return sorted(self.people)

    def encodings(self, name: str) -> np.ndarray:
        return self._encodings[self._known(name)]

    def _known(self, name: str) -> str:
        if name not in self.people:
            raise GalleryError(f"no person named {name!r} in the gallery")
        return name

    def add(self, name: str, encodings: np.ndarray) -> int:
        """Enroll (or add photos to) ``name``; returns that person's photo count."""
        name = name.strip()
        if not name or len(name) > 128 or any(c in name for c in "\n\r\t/"):
            raise GalleryError(f"invalid person name {name!r}")
        encodings = np.asarray(encodings, np.float32).reshape(-1, self.dim)
        if not len(encodings):
            raise GalleryError(f"no encodings to enroll for {name!r}")
        old = self._encodings.get(name, np.zeros((0, self.dim), np.float32))
        self._encodings[name] = np.concatenate([old, encodings])
        self.people.setdefault(name, {"threshold": None, "enrolled": time.time()})
        return len(self._encodings[name])

    def remove(self, name: str) -> None:
        self._known(name)
        del self.people[name], self._encodings[name]

    def rename(self, old: str, new: str) -> None:
        self._known(old)
        if new in self.people:
            raise GalleryError(f"{new!r} is already enrolled")
        self.add(new, self._encodings[old])
        self.people[new] = self.people[old]
        self.remove(old)

    def set_threshold(self, value: Optional[float], name: Optional[str] = None) -> None:
        if value is not None and not 0.0 < value < 4.0:
            raise GalleryError(f"threshold {value} out of range (0, 4) for squared L2 distance")
        if name is None:
            self.threshold = value
        else:
            self.people[self._known(name)]["threshold"] = value

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
        if not self.people:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.template(n) for n in self.names])

    # -- file -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = self.names
        header = {
            "format": FORMAT, "version": 1 if self.head is None else 2,
            "encoder": self.encoder, "fingerprint": self.fingerprint, "dim": self.dim,
            "threshold": self.threshold, "people": {n: self.people[n] for n in names},
        }
        if self.head is not None:
            header["head"] = self.head.as_dict()
        owner = np.concatenate([np.full(len(self._encodings[n]), i, np.int32)
                                for i, n in enumerate(names)] or [np.zeros(0, np.int32)])
        rows = [self._encodings[n] for n in names] or [np.zeros((0, self.dim), np.float32)]
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, header=np.array(json.dumps(header)),
                             names=np.array(names, dtype=str), owner=owner,
                             encodings=np.concatenate(rows).astype(np.float32))
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


def load_gallery(path: Path, fingerprint: Optional[str] = None) -> Gallery:
    """Read a gallery file; with ``fingerprint``, refuse one made by another encoder."""
    path = Path(path)
    try:
        with np.load(str(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            names = [str(n) for n in data["names"]]
            owner, rows = data["owner"], data["encodings"]
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
    for i, name in enumerate(names):
        gallery.add(name, rows[owner == i])
        gallery.people[name] = dict(header["people"][name])
    return gallery
