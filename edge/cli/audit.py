"""``jetkiosk audit verify|tail``: check the audit trail's hash chain; show its newest
entries."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any, Callable, Dict

from ..core.audit import RESERVED, tail, verify
from ..core.config import Config
from .common import Common, emit

_PLAIN = re.compile(r"[^\s=\"']+")  # a value printed as it is; anything else as JSON


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    audit = sub.add_parser("audit", help="the audit trail: verify its hash chain, show its "
                           "newest entries")
    asub = audit.add_subparsers(dest="action", required=True)
    keys = {"audit_log": ("gallery.audit_log",)}
    check = asub.add_parser("verify", help="check every line of the log and its rotated "
                            "files (exit 1 naming the first broken line)")
    check.add_argument("--audit-log", help="the log file (gallery.audit_log)")
    common(check, keys)
    last = asub.add_parser("tail", help="the newest entries, oldest first")
    last.add_argument("-n", type=int, default=20, help="how many entries (default 20)")
    last.add_argument("--audit-log", help="the log file (gallery.audit_log)")
    common(last, keys)


def describe(entry: Dict[str, Any]) -> str:
    """One entry as a line: local time, action, then its fields as ``key=value``."""
    if "unreadable" in entry:
        return f"(unreadable line) {entry['unreadable']}"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
    fields = " ".join(f"{k}={_value(v)}" for k, v in sorted(entry.items())
                      if k not in RESERVED)
    return f"{when}  {entry['action']}  {fields}".rstrip()


def _value(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    path = config.audit_path
    if args.action == "verify":
        result = verify(path)
        record: Dict[str, Any] = {"ok": result.ok, "entries": result.entries,
                                  "files": [str(f) for f in result.files],
                                  "complete": result.complete}
        if not result.ok:
            record.update(file=str(result.file), line=result.line, reason=result.reason)
        text = str(result) if result.files or not result.ok else \
            f"{result} ({path} does not exist yet)"
        emit(args, record, text)
        return 0 if result.ok else 1
    for entry in tail(path, args.n):
        emit(args, entry, describe(entry))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {"audit": cmd_audit}
