"""The persistent outbox: ordered, durable across crashes, bounded with counted drops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from jetkiosk.edge.mqtt.outbox import Outbox, OutboxError


def test_messages_drain_in_order_and_only_acked_ones_leave(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    ids = [box.put("t/a", f"m{i}".encode(), qos=1, retain=i == 2) for i in range(5)]
    assert ids == sorted(ids)
    first = box.peek(limit=3)
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2"] and first[2].retain
    box.ack(first[1].id)
    assert [m.payload for m in box.peek()] == [b"m0", b"m2", b"m3", b"m4"]
    assert [m.payload for m in box.peek(after=first[2].id)] == [b"m3", b"m4"]
    box.close()
    reopened = Outbox(tmp_path / "outbox.db")  # survives a restart, order kept
    assert [m.payload for m in reopened.peek()] == [b"m0", b"m2", b"m3", b"m4"]
    assert reopened.depth == 4


def test_full_outbox_drops_the_oldest_and_counts_it(tmp_path):
    box = Outbox(tmp_path / "outbox.db", capacity=3)
    for i in range(5):
        box.put("t", str(i).encode())
    assert [m.payload for m in box.peek()] == [b"2", b"3", b"4"]
    assert box.dropped == 2
    box.close()
    assert Outbox(tmp_path / "outbox.db", capacity=3).dropped == 2


WRITER = """
import sys
from jetkiosk.edge.mqtt.outbox import Outbox
box = Outbox(sys.argv[1])
for i in range(100000):
    box.put("t", str(i).encode())
    print(i, flush=True)
"""


def test_a_writer_killed_mid_stream_loses_no_committed_message(tmp_path):
    path = tmp_path / "outbox.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    last = -1
    deadline = time.monotonic() + 60
    while last < 200 and time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    box = Outbox(path)  # opens cleanly: the database survived the kill
    payloads = [int(m.payload) for m in box.peek(limit=1_000_000)]
    # Everything reported as stored is there, in order, with no gaps.
    assert payloads[: last + 1] == list(range(last + 1))
    assert payloads == list(range(len(payloads)))


def test_a_damaged_outbox_is_a_clear_error_and_is_left_alone(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="damaged or not an outbox"):
        Outbox(path)
    assert path.read_bytes().startswith(b"this is not a database")
    with pytest.raises(OutboxError, match="capacity"):
        Outbox(tmp_path / "other.db", capacity=0)
