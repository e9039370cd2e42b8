"""``jetkiosk audit verify|tail`` end to end."""

from __future__ import annotations

import json
import time

import pytest

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.audit import AuditLog


@pytest.fixture
def log_path(tmp_path, monkeypatch):
    monkeypatch.delenv("JETKIOSK_CONFIG", raising=False)
    monkeypatch.setenv("JETKIOSK_DATA", str(tmp_path / "data"))
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.record("enroll", name="Ada", encodings=5)
    log.record("rename", old="Ada", new="Ada Lovelace")
    log.record("threshold", value=0.9)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_verify_says_ok(log_path, capsys):
    code, out, _ = run(capsys, "audit", "verify", "--audit-log", str(log_path))
    assert code == 0 and out == ["audit log OK: 3 entries in 1 file(s)"]
    code, out, _ = run(capsys, "audit", "verify", "--set", f"gallery.audit_log={log_path}",
                       "--json")
    assert code == 0 and json.loads(out[0]) == {
        "ok": True, "entries": 3, "files": [str(log_path)], "complete": True}


def test_verify_names_the_first_broken_line(log_path, capsys):
    rows = log_path.read_bytes().split(b"\n")
    rows[1] = rows[1].replace(b"Ada Lovelace", b"Eve")
    log_path.write_bytes(b"\n".join(rows))
    code, out, _ = run(capsys, "audit", "verify", "--audit-log", str(log_path))
    assert code == 1 and len(out) == 1
    assert out[0].startswith(f"audit log BROKEN at {log_path}:2: hash does not match")
    code, out, _ = run(capsys, "audit", "verify", "--audit-log", str(log_path), "--json")
    record = json.loads(out[0])
    assert code == 1 and (record["ok"], record["file"], record["line"]) == (False,
                                                                           str(log_path), 2)


def test_verify_without_a_log_yet(tmp_path, monkeypatch, capsys):
    """The default path is <data dir>/audit.jsonl; nothing recorded yet is not an error."""
    monkeypatch.delenv("JETKIOSK_CONFIG", raising=False)
    monkeypatch.setenv("JETKIOSK_DATA", str(tmp_path))
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0
    path = tmp_path / "audit.jsonl"
    assert out == [f"audit log OK: 0 entries in 0 file(s) ({path} does not exist yet)"]


def test_tail_prints_the_newest_entries(log_path, capsys):
    code, out, _ = run(capsys, "audit", "tail", "-n", "2", "--audit-log", str(log_path))
    entry = json.loads(log_path.read_bytes().split(b"\n")[1])
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
    assert code == 0 and len(out) == 2
    assert out[0].startswith(when + "  ")
    assert out[0].endswith('  rename  new="Ada Lovelace" old=Ada')
    assert out[1].endswith("  threshold  value=0.9")
    assert len(out[1].split("  ")[0]) == len("2026-12-01 19:40:01")
    code, out, _ = run(capsys, "audit", "tail", "--audit-log", str(log_path))
    assert out[0].endswith("  enroll  encodings=5 name=Ada") and len(out) == 3


def test_tail_json(log_path, capsys):
    code, out, _ = run(capsys, "audit", "tail", "-n", "5", "--json", "--audit-log",
                       str(log_path))
    entries = [json.loads(line) for line in out]
    assert code == 0 and [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["name"] == "Ada" and entries[0]["action"] == "enroll"
    assert all(len(e["hash"]) == 64 for e in entries)
