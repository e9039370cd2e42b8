"""A new gallery key while `jetkiosk run` runs: the node reloads the re-sealed gallery (the
file watch and SIGHUP) and goes on recognising everyone; the old key opens nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from node.test_service_daemon import Daemon, settings

from conftest import enroll_demo_people
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.core.sealing import KEY_ENV, MAGIC
from jetkiosk.edge.faces.gallery import load_gallery


def test_rekey_under_a_running_node_loses_nobody(models_dir, analyzer, demo_clip, tmp_path):
    path, photos = demo_clip
    gallery = tmp_path / "gallery.npz"
    config = load_config(overrides=[f"models.dir={models_dir}", f"gallery.path={gallery}"])
    enroll_demo_people(config, analyzer, photos)
    assert gallery.read_bytes().startswith(MAGIC)
    old_key = (tmp_path / "gallery.key").read_bytes()
    events = tmp_path / "events.jsonl"
    daemon = Daemon(tmp_path, settings(models_dir, gallery, f"file://{path}?loop=1",
                                       f"jsonl:{events}"), 30.0)

    def names(start: int = 0) -> set:
        if not events.exists():
            return set()
        lines = events.read_text().splitlines()[start:]
        return {json.loads(line)["name"] for line in lines if line.endswith("}")}

    try:
        assert daemon.manager.wait(lambda: {"eileen_collins", "grace_hopper"} <= names(), 120), \
            daemon.text()
        rekey = subprocess.run([sys.executable, "-m", "jetkiosk.edge.cli.main", "gallery",
                                "rekey", "--config", str(daemon.config)],
                               check=False, capture_output=True, text=True, timeout=120)
        assert rekey.returncode == 0, rekey.stderr
        assert "sealed with key" in rekey.stdout
        assert daemon.manager.wait(lambda: "gallery file changed: reloaded" in daemon.text(), 30)
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.manager.wait(lambda: "reloaded: no setting applied; gallery" in
                                   daemon.text(), 30), daemon.text()
        assert "'people': 2" in daemon.text().split("reloaded: no setting applied")[-1]
        seen = len(events.read_text().splitlines())
        assert daemon.manager.wait(  # a whole loop of the clip later: both still named
            lambda: {"eileen_collins", "grace_hopper"} <= names(seen), 120), daemon.text()
        assert "not reloaded" not in daemon.text() and daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0
    assert (tmp_path / "gallery.key").read_bytes() != old_key
    assert load_gallery(gallery).names == ["eileen_collins", "grace_hopper"]
    os.environ[KEY_ENV] = old_key.hex()
    try:
        with pytest.raises(GalleryError, match="sealed with key"):
            load_gallery(gallery)
    finally:
        del os.environ[KEY_ENV]
