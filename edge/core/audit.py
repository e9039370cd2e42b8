"""The audit trail: an append-only, hash-chained JSON-lines file of who was enrolled,
removed or renamed, thresholds changed, verification heads installed, keys rotated,
recognition decisions that opened or refused something, and configuration reloads.

Each line is one entry, UTF-8, ending in ``\\n``::

    {"action":"enroll","encodings":5,"hash":"…","name":"Ada","prev":"…","seq":7,"time":…}

written as the canonical JSON of the entry::

    json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

- ``seq``: 1 for the very first entry, then one more per entry, across rotated files.
- ``time``: Unix time in seconds, rounded to 3 decimals.
- ``prev``: the hex SHA-256 of the previous line's exact bytes, without its ``\\n`` (across
  rotation: of the last line of the file rotated away); ``"0" * 64`` for the very first.
- ``hash``: the hex SHA-256 of the canonical JSON (as above, UTF-8) of the entry without
  its ``hash`` key.

A third party verifies a file (or rotated files read oldest first, ``.N`` … ``.1``, then the
current one, and joined) with a few lines of Python::

    data = open("audit.jsonl", "rb").read()
    assert data.endswith(b"\\n")  # otherwise the last line is torn
    prev = None
    for raw in data.split(b"\\n")[:-1]:
        entry = json.loads(raw)
        claimed = entry.pop("hash")
        canon = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canon.encode()).hexdigest() == claimed
        assert prev is None or entry["prev"] == prev
        prev = hashlib.sha256(raw).hexdigest()

Lines are split on ``\\n`` bytes only (a name may hold other line separators, which JSON
keeps as they are). Editing, deleting, reordering or inserting a line breaks the chain at
that line; a line cut short (a crash mid-write, or a file truncated mid-line) is reported as
torn. The next ``record`` repairs a torn last line: it cuts the partial bytes off and first
records an ``audit.repaired`` entry with their length, SHA-256 and text, so the loss stays
on the record. Removing whole lines from the end cannot be seen from the file alone: compare
the newest ``seq`` and ``hash`` with a copy kept elsewhere.

Appends from several processes are serialised by an exclusive ``flock`` on ``<path>.lock``
held around reading the last line, appending and fsyncing, so the chain never forks. The
file is created with mode 0600. Past ``max_bytes`` the file is renamed ``<path>.1`` (older
ones shift to ``.2`` … ``.keep``, the oldest is deleted) and the new file's first entry
chains to the last line of the rotated one. Once the oldest files are gone, the oldest
kept file's first ``prev`` cannot be checked: verification reports that as the start of
the kept history. Values are JSON scalars, lists and objects of them only: arrays, bytes
and other objects (face encodings, photos) are refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from .errors import JetkioskError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)
GENESIS = "0" * 64  # ``prev`` of the very first entry
RESERVED = ("seq", "time", "action", "prev", "hash")  # set by the log, never by a caller
MAX_LINE = 1 << 16  # bytes: an entry is a short record, never a payload
REPAIRED = "audit.repaired"
_PREVIEW = 1000  # characters of a discarded torn line kept in the repair entry


class AuditError(JetkioskError):
    """The audit log cannot be read or written (the message names the file)."""


def canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed and written."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def entry_hash(entry: Dict[str, Any]) -> str:
    """The ``hash`` an entry must carry: SHA-256 of the canonical JSON of the rest."""
    rest = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(rest).encode("utf-8")).hexdigest()


def line_hash(line: bytes) -> str:
    """The ``prev`` of the entry after ``line`` (its exact bytes without the newline)."""
    return hashlib.sha256(line).hexdigest()


def _check_value(value: Any, where: str) -> None:
    kind = type(value)
    if value is None or kind in (bool, int):
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"audit field {where}: {value} is not a finite number")
        return
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"audit field {where}: not valid text (a lone surrogate)") \
                from None
        return
    if kind in (list, tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"audit field {where}: key {key!r} is not a string")
            _check_value(item, f"{where}.{key}")
        return
    what = "an array" if hasattr(value, "__array__") or hasattr(value, "shape") else \
        "bytes" if isinstance(value, (bytes, bytearray, memoryview)) else kind.__name__
    raise ValueError(f"audit field {where}: {what} is not allowed (only text, numbers, "
                     "booleans, null, and lists and objects of them; never encodings or "
                     "photos)")


def rotated_files(path: Path) -> List[Path]:
    """``<path>.N`` files that exist, oldest (highest N) first."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    found: List[Tuple[int, Path]] = []
    if path.parent.is_dir():
        for other in path.parent.iterdir():
            match = pattern.fullmatch(other.name)
            if match and other.is_file():
                found.append((int(match.group(1)), other))
    return [p for _, p in sorted(found, reverse=True)]


def log_files(path: Path) -> List[Path]:
    """Every file of the log, oldest first: the rotated ones, then ``path`` if it exists."""
    return rotated_files(path) + ([path] if path.is_file() else [])


@contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on ``<path>.lock`` (a writer creates it). A reader that cannot open it
    (no log yet, a copy of the log) reads without it."""
    lock = path.with_name(path.name + ".lock")
    try:
        if exclusive:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o600)
        else:
            fd = os.open(str(lock), os.O_RDONLY)
    except OSError as exc:
        if exclusive:
            raise AuditError(f"{lock}: cannot lock the audit log "
                             f"({exc.strerror or exc})") from exc
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(path: Path) -> Tuple[Optional[bytes], bytes]:
    """``(last complete line without its newline or None, bytes after it)`` of a file; read
    from the end, so that a large file costs little."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            tail = b""
            pos = end
            while pos > 0:
                step = min(pos, 1 << 16)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
                cut = tail.rfind(b"\n")
                if cut >= 0 and tail[:cut].rfind(b"\n") >= 0:
                    break
    except FileNotFoundError:
        return None, b""
    cut = tail.rfind(b"\n")
    if cut < 0:
        return None, tail
    return tail[:cut].rsplit(b"\n", 1)[-1], tail[cut + 1:]


class _NotAnEntry(Exception):
    """A line that is not an audit entry (the message says why)."""


def _parse(raw: bytes) -> Dict[str, Any]:
    """An entry from a line; _NotAnEntry when it is not one."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        raise _NotAnEntry("not a JSON line") from None
    if not isinstance(entry, dict):
        raise _NotAnEntry("not a JSON object")
    for key, kind in (("seq", int), ("time", (int, float)), ("action", str), ("prev", str),
                      ("hash", str)):
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise _NotAnEntry(f"no valid {key!r}")
    return entry


class AuditLog:
    """The audit trail at ``path``, rotated past ``max_bytes`` keeping ``keep`` older files
    (``<path>.1`` newest … ``<path>.<keep>`` oldest)."""

    def __init__(self, path: Path, max_bytes: int = 10 << 20, keep: int = 5) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError("max_bytes and keep must be at least 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep

    @classmethod
    def from_config(cls, config: Config) -> AuditLog:
        """The log ``gallery.audit_log`` names, rotated at ``gallery.audit_max_bytes``."""
        return cls(config.audit_path, config.gallery.audit_max_bytes)

    def note(self, action: str, /, **fields: Any) -> None:
        """``record``, for what has already happened: a log that cannot be written (a full
        disk, a damaged last entry) is logged as an error instead of undoing the action."""
        try:
            self.record(action, **fields)
        except (AuditError, OSError) as exc:
            log.error("%s: %s not recorded in the audit trail: %s", self.path, action, exc)

    def record(self, action: str, /, **fields: Any) -> Dict[str, Any]:
        """Append one entry and return it (with its ``seq``, ``time``, ``prev`` and
        ``hash``). ValueError for a field that is not JSON text, numbers, booleans, null,
        or lists and objects of them (arrays and bytes are always refused), or one the log
        sets itself. Waits for other writers; the entry is on disk when this returns."""
        if type(action) is not str or not action:
            raise ValueError("the audit action must be a non-empty string")
        for name in RESERVED:
            if name in fields:
                raise ValueError(f"audit field {name!r} is set by the log, not by the caller")
        for name, value in fields.items():
            _check_value(value, name)
        with _locked(self.path, exclusive=True):
            try:
                return self._append(action, fields, time.time())
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot write the audit log "
                                 f"({exc.strerror or exc})") from exc

    def _append(self, action: str, fields: Dict[str, Any], now: float) -> Dict[str, Any]:
        last, torn = _last_line(self.path)
        if torn:  # a write cut short: drop the partial bytes, and say so first
            os.truncate(str(self.path), self.path.stat().st_size - len(torn))
            repaired = self._append(REPAIRED, {
                "discarded_bytes": len(torn), "discarded_sha256": line_hash(torn),
                "discarded": torn[:_PREVIEW].decode("utf-8", "replace")}, now)
            last = canonical(repaired).encode("utf-8")
        elif last is None:  # empty or new: continue from the newest rotated file
            for older in reversed(rotated_files(self.path)):
                last, _ = _last_line(older)
                if last is not None:
                    break
        if last is None:
            seq, prev = 1, GENESIS
        else:
            try:
                seq, prev = _parse(last)["seq"] + 1, line_hash(last)
            except _NotAnEntry as exc:
                raise AuditError(f"{self.path}: the last audit entry is damaged ({exc}); "
                                 "see `jetkiosk audit verify`") from None
        entry: Dict[str, Any] = {"seq": seq, "time": round(now, 3), "action": action,
                                 **fields, "prev": prev}
        entry["hash"] = entry_hash(entry)
        line = (canonical(entry) + "\n").encode("utf-8")
        if len(line) > MAX_LINE:
            raise ValueError(f"audit entry of {len(line)} bytes; at most {MAX_LINE}")
        created = not self.path.exists()
        if not created and self.path.stat().st_size > self.max_bytes:
            self._rotate()
            created = True
        fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if created:
                os.fchmod(fd, 0o600)  # whatever the umask
            written = 0
            while written < len(line):  # a short write is finished; a failed one is torn
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return entry

    def _rotate(self) -> None:
        numbered = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.keep + 1)]
        numbered[0] = self.path
        for older in rotated_files(self.path):  # the oldest, and any beyond a smaller keep
            if int(older.name.rsplit(".", 1)[1]) >= self.keep:
                older.unlink()
        for i in range(self.keep - 1, -1, -1):
            if numbered[i].exists():
                os.replace(str(numbered[i]), str(numbered[i + 1]))
        _fsync_dir(self.path.parent)


@dataclass
class VerifyResult:
    """What ``verify`` found: ``ok``, the entries checked, the files (oldest first) and,
    when broken, the first bad line (``file``, 1-based ``line``) and ``reason``.
    ``complete``: the history starts at the very first entry (rather than at the oldest
    kept rotated file)."""

    ok: bool
    entries: int
    files: List[Path] = field(default_factory=list)
    file: Optional[Path] = None
    line: Optional[int] = None
    reason: str = ""
    complete: bool = True
    first_seq: Optional[int] = None
    last_hash: Optional[str] = None

    def __str__(self) -> str:
        if self.ok:
            start = "" if self.complete or self.first_seq is None else \
                f"; kept history starts at seq {self.first_seq}"
            return f"audit log OK: {self.entries} entries in {len(self.files)} file(s){start}"
        return f"audit log BROKEN at {self.file}:{self.line}: {self.reason}"


def verify(path: Path) -> VerifyResult:
    """Check the log at ``path`` and its rotated files, oldest first: every line is a whole
    JSON entry, its ``hash`` matches its content, its ``prev`` the previous line and its
    ``seq`` follows the previous one. The oldest kept rotated file may start after the
    very first entry (older files were deleted by rotation); ``path`` alone must start at
    it."""
    path = Path(path)
    with _locked(path, exclusive=False):
        files = log_files(path)
        result = VerifyResult(ok=True, entries=0, files=files)
        prev_hash: Optional[str] = None
        prev_seq: Optional[int] = None
        for file in files:
            try:
                data = file.read_bytes()
            except OSError as exc:
                return _broken(result, file, 1, f"cannot read ({exc.strerror or exc})")
            lines = data.split(b"\n")
            for number, raw in enumerate(lines, 1):
                if number == len(lines):
                    if raw:
                        return _broken(result, file, number, "torn last line (no newline at "
                                       "the end): an interrupted write, or the file was cut")
                    break
                try:
                    entry = _parse(raw)
                except _NotAnEntry as exc:
                    return _broken(result, file, number, str(exc))
                try:
                    expected = entry_hash(entry)
                except ValueError:
                    expected = ""
                if entry["hash"] != expected:
                    return _broken(result, file, number,
                                   "hash does not match the content (the line was edited)")
                if prev_hash is None:
                    if entry["prev"] == GENESIS and entry["seq"] == 1:
                        result.complete = True
                    elif file != path:
                        result.complete = False  # older files were deleted by rotation
                    else:
                        return _broken(result, file, number, "the log does not start at the "
                                       f"first entry (seq {entry['seq']}, prev not zero)")
                    result.first_seq = entry["seq"]
                elif entry["prev"] != prev_hash:
                    return _broken(result, file, number, "prev does not match the line before "
                                   "(a line was removed, moved or inserted here)")
                elif entry["seq"] != prev_seq + 1:  # type: ignore[operator]
                    return _broken(result, file, number,
                                   f"seq {entry['seq']} does not follow {prev_seq}")
                prev_hash, prev_seq = line_hash(raw), entry["seq"]
                result.entries += 1
        result.last_hash = prev_hash
        return result


def _broken(result: VerifyResult, file: Path, line: int, reason: str) -> VerifyResult:
    result.ok, result.file, result.line, result.reason = False, file, line, reason
    return result


def tail(path: Path, n: int = 20) -> List[Dict[str, Any]]:
    """The last ``n`` entries, newest last, across rotated files. A line that is not an
    entry comes back as ``{"unreadable": text}``; a torn last line is left out."""
    path = Path(path)
    found: List[Dict[str, Any]] = []
    if n <= 0:
        return found
    with _locked(path, exclusive=False):
        for file in reversed(log_files(path)):
            try:
                lines = file.read_bytes().split(b"\n")[:-1]
            except OSError as exc:
                raise AuditError(f"{file}: cannot read the audit log "
                                 f"({exc.strerror or exc})") from exc
            for raw in reversed(lines):
                try:
                    found.append(_parse(raw))
                except _NotAnEntry:
                    found.append({"unreadable": raw.decode("utf-8", "replace")})
                if len(found) == n:
                    return found[::-1]
    return found[::-1]
