"""A persistent outbox for messages that must not be lost: what the MQTT link publishes from.

Every message is committed to SQLite before it is sent and deleted only when the broker
acknowledges it, so it survives a broker restart, a network cut and a crash of our own
process; after a restart the messages drain in the order they were written. The outbox is
bounded: when full, the oldest message is dropped to make room and counted in ``dropped``
(persisted), because the newest state matters most to subscribers.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

from ..core.errors import JetkioskError


class OutboxError(JetkioskError):
    """The outbox file cannot be opened or is damaged."""


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('dropped', 0);
"""


class Outbox:
    """Ordered, durable, bounded message store; safe to share between threads."""

    def __init__(self, path: Path, capacity: int = 100_000):
        if capacity < 1:
            raise OutboxError(f"outbox capacity must be at least 1, got {capacity}")
        self.path = Path(path)
        self.capacity = capacity
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: outbox is damaged or not an outbox ({exc}); "
                              "move it aside to start a new one") from exc
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot open outbox ({exc})") from exc

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store a message durably (committed before returning); returns its id."""
        with self._transaction():
            excess = self._depth() - self.capacity + 1
            if excess > 0:
                self._db.execute("DELETE FROM messages WHERE id IN "
                                 "(SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,))
                self._db.execute("UPDATE counters SET value = value + ? "
                                 "WHERE name = 'dropped'", (excess,))
            cursor = self._db.execute(
                "INSERT INTO messages (topic, payload, qos, retain) VALUES (?, ?, ?, ?)",
                (topic, payload, qos, int(retain)))
        return int(cursor.lastrowid or 0)

    def peek(self, after: int = 0, limit: int = 100) -> List[OutboxMessage]:
        """Messages with id greater than ``after``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? "
                "ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows]

    def ack(self, *message_ids: int) -> None:
        """The broker has these messages: forget them (one transaction)."""
        if not message_ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM messages WHERE id = ?",
                                 [(i,) for i in message_ids])

    def forget(self, name: str) -> int:
        """Delete every queued message whose JSON payload names ``name`` (a person removed
        from the gallery: their events are never sent); returns how many."""
        with self._transaction():
            doomed = [row_id for row_id, payload in
                      self._db.execute("SELECT id, payload FROM messages")
                      if _names(bytes(payload)) == name]
            self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in doomed])
        return len(doomed)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock, rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite already rolled back on a full disk
                    self._db.execute("ROLLBACK")
                raise

    def _depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    @property
    def depth(self) -> int:
        with self._lock:
            return self._depth()

    @property
    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _names(payload: bytes) -> Optional[str]:
    """The ``name`` a JSON object payload carries, if any."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    name = message.get("name") if isinstance(message, dict) else None
    return name if isinstance(name, str) else None
