"""The audit trail: its hash chain, every kind of tampering found at its line, rotation,
a torn last line, what is refused, the file's mode, and writers in several processes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

from jetkiosk.edge.core.audit import (
    GENESIS,
    REPAIRED,
    AuditError,
    AuditLog,
    canonical,
    entry_hash,
    tail,
    verify,
)
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ConfigError


def write(path: Path, count: int, **kwargs) -> AuditLog:
    log = AuditLog(path, **kwargs)
    for i in range(count):
        log.record("enroll", name=f"P{i + 1}", encodings=5)
    return log


def lines(path: Path) -> List[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def put(path: Path, rows: List[bytes]) -> None:
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def test_entries_chain_from_the_first(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    first = log.record("enroll", name="Ada", encodings=5)
    second = log.record("threshold", value=0.9, person=None, people=["Ada", "Bob"],
                        detail={"old": 1.1, "ok": True})
    rows = lines(path)
    assert [json.loads(r) for r in rows] == [first, second]
    assert first["seq"] == 1 and first["prev"] == GENESIS and second["seq"] == 2
    assert second["prev"] == hashlib.sha256(rows[0]).hexdigest()
    for entry, raw in zip((first, second), rows):
        assert raw == canonical(entry).encode()  # the canonical JSON, as documented
        assert entry["hash"] == entry_hash(entry)
        assert round(entry["time"], 3) == entry["time"]
    assert tail(path, 5) == [first, second] and tail(path, 1) == [second]
    result = verify(path)
    assert result.ok and result.entries == 2 and result.complete
    assert str(result) == "audit log OK: 2 entries in 1 file(s)"


def test_a_third_party_verifies_with_a_few_lines_of_python(tmp_path):
    """The recipe of the module's docstring, over rotated files joined oldest first."""
    path = tmp_path / "audit.jsonl"
    write(path, 20, max_bytes=1000, keep=20)
    count = len(list(tmp_path.glob("audit.jsonl.*[0-9]")))
    files = [path.with_name(f"audit.jsonl.{i}") for i in range(count, 0, -1)] + [path]
    assert count >= 2 and all(f.exists() for f in files)
    data = b"".join(f.read_bytes() for f in files)
    assert data.endswith(b"\n")
    prev = None
    for raw in data.split(b"\n")[:-1]:
        entry = json.loads(raw)
        claimed = entry.pop("hash")
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == claimed
        assert prev is None or entry["prev"] == prev
        prev = hashlib.sha256(raw).hexdigest()
    assert entry["seq"] == 20


def test_names_are_written_as_given(tmp_path):
    """Any text, line separators included, stays one line and reads back unchanged."""
    path = tmp_path / "audit.jsonl"
    name = "Zoë \u2028O'Brien\n\"x\"\r\x85 李"
    AuditLog(path).record("rename", old=name, new=" Ada ")
    assert len(lines(path)) == 1
    assert tail(path, 1)[0]["old"] == name and tail(path, 1)[0]["new"] == " Ada "
    assert "Zoë" in path.read_text("utf-8")  # not \u-escaped
    assert verify(path).ok


def edit(rows):
    rows[2] = rows[2].replace(b'"P3"', b'"P9"')


def delete(rows):
    del rows[2]


def reorder(rows):
    rows[2], rows[3] = rows[3], rows[2]


def forge(rows):
    """A made-up line whose hash is right but whose prev is not the line before."""
    entry = json.loads(rows[2])
    entry.update(name="Mallory", prev=hashlib.sha256(rows[0]).hexdigest())
    entry["hash"] = entry_hash(entry)
    rows.insert(2, canonical(entry).encode())


def forge_with_the_right_prev(rows):
    """Chained correctly to line 2, so the line after it (the real line 3) breaks."""
    entry = json.loads(rows[2])
    entry.update(name="Mallory", prev=hashlib.sha256(rows[1]).hexdigest())
    entry["hash"] = entry_hash(entry)
    rows.insert(2, canonical(entry).encode())


def reformat(rows):
    """Same content, other bytes: the line's own hash holds, the next line's prev not."""
    rows[2] = json.dumps(json.loads(rows[2])).encode()


def delete_first(rows):
    del rows[0]


@pytest.mark.parametrize("tamper, line, why", [
    (edit, 3, "hash does not match"),
    (delete, 3, "prev does not match"),
    (reorder, 3, "prev does not match"),
    (forge, 3, "prev does not match"),
    (forge_with_the_right_prev, 4, "prev does not match"),
    (reformat, 4, "prev does not match"),
    (delete_first, 1, "does not start at the first entry"),
])
def test_tampering_is_found_at_its_line(tmp_path, tamper: Callable, line: int, why: str):
    path = tmp_path / "audit.jsonl"
    write(path, 6)
    assert verify(path).ok and verify(path).entries == 6
    rows = lines(path)
    tamper(rows)
    put(path, rows)
    result = verify(path)
    assert not result.ok and result.file == path and result.line == line
    assert why in result.reason
    assert str(result).startswith(f"audit log BROKEN at {path}:{line}: ")


def test_truncating_mid_line_is_found_at_that_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 6)
    data = path.read_bytes()
    start = sum(len(r) + 1 for r in lines(path)[:3])  # line 4 begins here
    path.write_bytes(data[:start + 25])
    result = verify(path)
    assert not result.ok and result.line == 4 and "torn" in result.reason


def test_a_blank_or_garbage_line_is_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 4)
    rows = lines(path)
    put(path, rows[:2] + [b""] + rows[2:])
    assert verify(path).line == 3 and "JSON" in verify(path).reason
    put(path, rows[:1] + [b'{"seq": 2}'] + rows[1:])
    assert verify(path).line == 2 and "no valid" in verify(path).reason


def test_a_torn_last_line_is_reported_then_repaired_on_the_record(tmp_path):
    """A crash mid-write leaves a partial line: verify names it; the next record cuts it off
    and first records an audit.repaired entry saying what was cut, so the chain goes on
    from the last whole line."""
    path = tmp_path / "audit.jsonl"
    log = write(path, 3)
    whole = path.read_bytes()
    partial = b'{"action":"remove","name":"Ad'
    path.write_bytes(whole + partial)
    result = verify(path)
    assert not result.ok and result.line == 4 and "torn" in result.reason
    assert [e["seq"] for e in tail(path, 5)] == [1, 2, 3]  # the partial line is left out

    entry = log.record("remove", name="Ada")
    repaired, after = tail(path, 2)
    assert repaired["action"] == REPAIRED and repaired["seq"] == 4
    assert repaired["discarded_bytes"] == len(partial)
    assert repaired["discarded_sha256"] == hashlib.sha256(partial).hexdigest()
    assert repaired["discarded"] == partial.decode()
    assert repaired["prev"] == hashlib.sha256(lines(path)[2]).hexdigest()
    assert after == entry and entry["seq"] == 5
    assert path.read_bytes().startswith(whole) and partial not in path.read_bytes()
    result = verify(path)
    assert result.ok and result.entries == 5


def test_a_file_that_is_only_a_torn_line_starts_again(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":1,"ti')
    entry = AuditLog(path).record("reload")
    assert [e["action"] for e in tail(path, 5)] == [REPAIRED, "reload"]
    assert entry["seq"] == 2 and verify(path).ok


def test_a_damaged_last_entry_stops_the_record(tmp_path):
    """Rather than fork the chain from a line it cannot read, record refuses."""
    path = tmp_path / "audit.jsonl"
    log = write(path, 2)
    put(path, lines(path)[:1] + [b"not json"])
    with pytest.raises(AuditError, match="damaged"):
        log.record("enroll", name="Ada")


def test_rotation_keeps_the_chain_across_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1000, keep=20)
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len([f for f in files if f.name[-1].isdigit()]) >= 3
    result = verify(path)
    assert result.ok and result.entries == 40 and result.complete
    assert result.files[-1] == path and result.files[0].name.endswith(f".{len(files) - 2}")
    assert [e["seq"] for e in tail(path, 40)] == list(range(1, 41))
    assert [e["name"] for e in tail(path, 3)] == ["P38", "P39", "P40"]
    first_of_current = json.loads(lines(path)[0])
    assert first_of_current["prev"] == hashlib.sha256(lines(result.files[-2])[-1]).hexdigest()
    for rotated in result.files[:-1]:
        assert rotated.stat().st_size > 1000 and stat.S_IMODE(rotated.stat().st_mode) == 0o600


def test_rotation_deletes_the_oldest_and_the_rest_still_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1000, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    result = verify(path)
    assert result.ok and not result.complete and 1 < result.first_seq < 40
    assert result.entries == 40 - result.first_seq + 1
    assert "kept history starts at seq" in str(result)


def test_a_smaller_keep_drops_the_files_beyond_it(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1000, keep=20)
    log = AuditLog(path, max_bytes=1, keep=2)
    log.record("reload")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    result = verify(path)
    assert result.ok and not result.complete and tail(path, 1)[0]["seq"] == 41


def test_tampering_across_rotated_files_is_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    write(path, 40, max_bytes=1000, keep=20)
    one, two = path.with_name("audit.jsonl.1"), path.with_name("audit.jsonl.2")
    rows = lines(two)
    rows[1] = rows[1].replace(b'"enroll"', b'"remove"')
    saved = two.read_bytes()
    put(two, rows)
    assert (verify(path).file, verify(path).line) == (two, 2)
    two.write_bytes(saved)
    one.unlink()  # a whole rotated file removed from the middle of the history
    result = verify(path)
    assert not result.ok and (result.file, result.line) == (path, 1)


@pytest.mark.parametrize("value", [
    np.zeros(4, np.float32), np.float32(0.5), np.int64(3), b"\x00jpeg", bytearray(b"x"),
    [1, np.zeros(2)], {"photo": b"x"}, float("nan"), float("inf"), object(), {1: "x"},
    "\ud800",
])
def test_anything_but_plain_json_is_refused(tmp_path, value):
    path = tmp_path / "audit.jsonl"
    with pytest.raises(ValueError):
        AuditLog(path).record("enroll", name="Ada", encoding=value)
    assert not path.exists()


@pytest.mark.parametrize("name", ["seq", "time", "prev", "hash", "action"])
def test_the_fields_the_log_sets_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="set by the log"):
        AuditLog(tmp_path / "audit.jsonl").record("enroll", **{name: 1})


def test_the_file_is_mode_0600_whatever_the_umask(tmp_path):
    path = tmp_path / "audit.jsonl"
    old = os.umask(0)
    try:
        write(path, 30, max_bytes=1000, keep=5)
    finally:
        os.umask(old)
    for file in tmp_path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def _writer(path: str, who: int, count: int, max_bytes: int, start) -> None:
    log = AuditLog(Path(path), max_bytes=max_bytes, keep=1000)
    start.wait()
    for i in range(count):
        log.record("decision", writer=who, i=i)


@pytest.mark.parametrize("max_bytes", [10 << 20, 8192])
def test_four_processes_writing_at_once_make_one_chain(tmp_path, max_bytes):
    """4 processes x 200 entries at the same time (and rotating, with a small size): 800
    entries, one unbroken chain, every writer's entries in its own order."""
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_writer, args=(str(path), w, 200, max_bytes, start))
               for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    result = verify(path)
    assert result.ok and result.entries == 800 and result.complete, str(result)
    entries = tail(path, 1000)
    assert [e["seq"] for e in entries] == list(range(1, 801))
    for who in range(4):
        assert [e["i"] for e in entries if e["writer"] == who] == list(range(200))
    writers = [e["writer"] for e in entries]
    assert sum(a != b for a, b in zip(writers, writers[1:])) > 3  # they did interleave


def test_an_absent_log_verifies_empty(tmp_path):
    result = verify(tmp_path / "audit.jsonl")
    assert result.ok and result.entries == 0 and result.files == []
    assert tail(tmp_path / "audit.jsonl", 5) == []
    assert list(tmp_path.iterdir()) == []  # reading creates nothing


def test_the_configuration_names_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("JETKIOSK_DATA", str(tmp_path))
    config = load_config()
    assert config.audit_path == tmp_path / "audit.jsonl"
    assert config.gallery.audit_max_bytes == 10 << 20
    config = load_config(overrides=[f"gallery.audit_log={tmp_path / 'x.jsonl'}",
                                    "gallery.audit_max_bytes=5000"])
    log = AuditLog.from_config(config)
    assert log.path == tmp_path / "x.jsonl" and log.max_bytes == 5000
    with pytest.raises(ConfigError, match="audit_max_bytes"):
        load_config(overrides=["gallery.audit_max_bytes=100"])
