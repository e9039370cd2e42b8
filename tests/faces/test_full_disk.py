"""A full disk (a real 256 KiB tmpfs filled up): the gallery says so and stays as it was; the
outbox says so and events still go out, without their durable copy."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from conftest import unit
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.gallery import Gallery, load_gallery
from mosquitto import Mosquitto, Subscriber, open_link


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {result.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(folder) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_leaves_the_gallery_file_as_it_was(small_disk):
    path = small_disk / "gallery.npz"
    gallery = Gallery("facenet-casia", "f" * 64, 512)
    rng = np.random.default_rng(0)
    gallery.add("ada", unit(rng.normal(size=(2, 512))))
    gallery.save(path)
    before = path.read_bytes()
    gallery.add("grace", unit(rng.normal(size=(100, 512))))  # 400 KiB with hopper
    gallery.add("hopper", unit(rng.normal(size=(100, 512))))
    with pytest.raises(GalleryError, match=r"gallery.npz: cannot save the gallery \(No space "
                       r"left on device\); the file on disk is unchanged"):
        gallery.save(path)
    assert path.read_bytes() == before
    # no temporary file left: the gallery and its key only
    assert sorted(p.name for p in small_disk.iterdir()) == ["gallery.key", "gallery.npz"]
    assert load_gallery(path).names == ["ada"]


def test_a_full_disk_under_the_outbox_still_delivers_events(small_disk, tmp_path, caplog):
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "jetkiosk/test/#")
    link = open_link(broker, small_disk / "outbox.db")
    try:
        assert link.put("jetkiosk/test/e", b"stored") > 0
        fill(small_disk)
        big = b"x" * 65536  # more than any free page left
        assert [link.put("jetkiosk/test/e", big + bytes([i])) for i in range(3)] == [0, 0, 0]
        assert link.unsaved == 3
        assert caplog.text.count("cannot store events") == 1  # said once, not per event
        assert sub.wait(lambda: len(sub.payloads("/e")) == 4, 30)
        assert sub.payloads("/e")[0] == b"stored"
    finally:
        link.close(2.0)
        link.outbox.close()
        sub.close()
        broker.stop()
