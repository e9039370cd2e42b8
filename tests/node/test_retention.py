"""Nobody kept longer than they are seen: last-seen times from a node's matches, expiry by
gallery.expire_after or a person's own, receipts and audit entries for who was removed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import unit
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.audit import tail
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.gallery import Gallery, load_gallery, locked_update
from jetkiosk.edge.node.retention import Retention, expire_people

DAY = 86400.0


@pytest.fixture
def aged(config):
    """ann (enrolled 40 days ago), bob (30 days ago, seen 2 days ago), cy (enrolled today)."""
    now = time.time()
    gallery = Gallery("enc", "fp", 8)
    for i, name in enumerate(("ann", "bob", "cy")):
        gallery.add(name, unit(np.random.default_rng(i).normal(size=(1, 8))))
    gallery.person("ann").enrolled = now - 40 * DAY
    gallery.person("bob").enrolled = now - 30 * DAY
    gallery.person("bob").last_seen = now - 2 * DAY
    gallery.save(config.gallery_path)
    return config


def test_last_seen_and_expiry_are_kept_in_the_file_as_version_5(aged):
    loaded = load_gallery(aged.gallery_path)
    assert loaded.person("bob").last_seen == pytest.approx(time.time() - 2 * DAY, abs=5)
    assert loaded.person("ann").last_seen is None
    now = time.time()
    assert loaded.expired(0, now) == []  # 0: never
    assert loaded.expired(10, now) == ["ann"]
    assert loaded.expired(1, now) == ["ann", "bob"]
    loaded.set_expiry("ann", 0)  # never, whatever the default
    loaded.set_expiry("cy", 0.0001)
    assert loaded.expired(1, now + 60) == ["bob", "cy"]
    with pytest.raises(GalleryError, match="days from 0"):
        loaded.set_expiry("ann", -1)
    loaded.save(aged.gallery_path)
    again = load_gallery(aged.gallery_path)
    assert again.person("ann").expire_after == 0 and again.person("cy").expire_after == 0.0001


def test_expiry_removes_only_the_expired_with_receipts_and_audit_entries(aged, tmp_path):
    before = aged.gallery_path.read_bytes()
    assert expire_people(aged) == []  # gallery.expire_after = 0: nobody, nothing written
    assert aged.gallery_path.read_bytes() == before
    aged.gallery.expire_after = 10
    receipts = expire_people(aged, {"cy": time.time()})
    assert [r["name"] for r in receipts] == ["ann"] and receipts[0]["reason"] == "expired"
    left = load_gallery(aged.gallery_path)
    assert left.names == ["bob", "cy"] and left.person("cy").last_seen is not None
    entries = [e for e in tail(aged.audit_path) if e["action"] == "remove"]
    assert [(e["name"], e["reason"]) for e in entries] == [("ann", "expired")]
    assert expire_people(aged, {"ghost": time.time()}) == []  # a name not enrolled: ignored


def test_a_nodes_matches_become_last_seen_times_on_the_loops_thread(aged):
    retention = Retention(aged, interval=0.05)
    ran = []
    retention.call_soon = lambda work: ran.append(work) or work()
    retention.publish({"event": "new", "decision": "match", "name": "ann",
                       "timestamp": 1_900_000_000.0})
    retention.publish({"event": "new", "decision": "unknown", "name": None, "timestamp": 1.0})
    retention.start()
    try:
        deadline = time.monotonic() + 30
        while load_gallery(aged.gallery_path).person("ann").last_seen is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        retention.close()
    assert ran and load_gallery(aged.gallery_path).person("ann").last_seen == 1_900_000_000.0


def test_the_commands_expire_after_and_expire(aged, capsys):
    flags = ["--gallery", str(aged.gallery_path)]
    assert main(["gallery", "expire-after", "cy", "0.00001", *flags]) == 0
    assert "is removed after 1e-05 days unseen" in capsys.readouterr().out
    assert main(["gallery", "expire-after", "ann", "0", *flags]) == 0
    assert "ann never expires" in capsys.readouterr().out
    time.sleep(1.0)
    assert main(["gallery", "expire", *flags, "--json"]) == 0
    receipts = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in receipts] == ["cy"] and receipts[0]["action"] == "expire"
    assert main(["gallery", "expire", *flags, "--set", "gallery.expire_after=10"]) == 0
    assert "removed 'bob'" not in capsys.readouterr().out  # seen 2 days ago
    assert load_gallery(aged.gallery_path).names == ["ann", "bob"]
    assert main(["gallery", "expire-after", "nobody", "3", *flags]) == 2
    with locked_update(aged.gallery_path) as gallery:
        assert gallery.person("ann").expire_after == 0
