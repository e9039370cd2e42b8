"""Log records on stderr as text, JSON lines, or journald's ``<N>`` priority prefixes.

Under systemd, stderr goes to the journal ($JOURNAL_STREAM is set); ``<N>`` prefixes give
each line its priority there (`journalctl -p warning`). JSON lines carry the same fields
for log shippers. Events stay on stdout (``jsonl:-``), apart from the logs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Dict

# syslog priorities, as journald reads them from a "<N>" line prefix
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; each line of a traceback keeps the priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        text = f"{record.name}: {super().format(record)}"
        return "\n".join(prefix + line for line in text.splitlines())


def setup_logging(level: str, style: str) -> None:
    """Configure the root logger: ``style`` is text, json, journal or auto."""
    if style == "auto":
        style = "journal" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stderr)
    formatter = {"json": JsonFormatter(), "journal": JournalFormatter()}.get(
        style, logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
