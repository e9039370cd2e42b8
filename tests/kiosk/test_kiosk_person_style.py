"""A recognised person's own style: the kiosk shows it while they are the main face, and its
own style again once they leave."""

from __future__ import annotations

import pytest

from conftest import configure, enroll_demo_people, matcher_loader
from jetkiosk.edge.core.config import KioskConfig
from jetkiosk.edge.faces.gallery import locked_update
from jetkiosk.edge.kiosk.app import KioskService
from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
from jetkiosk.edge.kiosk.faces import FaceBoard
from jetkiosk.edge.kiosk.loop import Kiosk, rotation_list
from jetkiosk.edge.kiosk.outputs import Output
from jetkiosk.edge.kiosk.stylizer import Stylizer


@pytest.fixture(scope="module")
def catalog():
    catalog = StyleCatalog([BUNDLED])
    yield catalog
    catalog.close()


class Scripted:
    """A face path whose main person's style is set by the test."""

    def __init__(self):
        self.style = None

    def main_style(self):
        return self.style


def test_the_main_persons_style_is_shown_while_they_stay_and_keys_change_the_kiosks_own(
        catalog):
    faces = Scripted()
    kiosk = Kiosk(KioskConfig(), Stylizer(catalog, "mosaic", 320), [],
                  rotation_list("", catalog.names), faces)
    seen = []
    kiosk.listeners.append(seen.append)
    kiosk.follow_person_style()
    assert seen == []  # nobody with a style: nothing changes
    faces.style = "halftone"
    kiosk.follow_person_style()
    kiosk.follow_person_style()
    assert kiosk.stylizer.style == "halftone" and seen == ["halftone"]
    kiosk.set_style("starry_night")  # while the person stays, theirs stays on the screen
    assert kiosk.stylizer.style == "halftone"
    faces.style = None
    kiosk.follow_person_style()
    assert kiosk.stylizer.style == "starry_night" and seen == ["halftone", "starry_night"]
    faces.style = "no_such_style"  # removed since it was stored: logged, the kiosk's stays
    kiosk.follow_person_style()
    assert kiosk.stylizer.style == "starry_night"


def test_the_main_person_is_the_largest_face_recognised():
    board = FaceBoard()
    board._boxes = {1: (0, 0, 50, 50), 2: (100, 0, 300, 200), 3: (400, 0, 700, 300)}
    board._decisions = {1: ("ann", "match"), 2: ("bob", "match"), 3: ("unknown", "unknown")}
    assert board.main_person() == "bob"
    board._decisions = {3: ("unknown", "unknown")}
    assert board.main_person() is None


class Styles(Output):
    """Records the style in effect and who the face path calls the main person, per frame."""

    uri = "styles://"

    def __init__(self):
        self.service = None
        self.seen = []

    def show(self, frame):
        faces = self.service.faces
        self.seen.append((self.service.kiosk.stylizer.style, faces.board.main_person()))
        return -1


def test_the_kiosk_switches_to_eileens_style_while_she_is_in_view(config, analyzer, demo_clip):
    path, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    with locked_update(config.gallery_path) as gallery:
        gallery.set_style("eileen_collins", "halftone")
    config = configure(config, {"kiosk.source": f"file://{path}", "kiosk.width": 320,
                                "kiosk.output": "file:///dev/null",
                                "kiosk.style": "mosaic", "kiosk.faces": True,
                                "kiosk.faces_nice": 0, "tracker.iou": 0.05,
                                "run.sink": "jsonl:/dev/null"})
    service = KioskService(config, analyzer, matcher_loader(config, analyzer))
    styles = Styles()
    styles.service = service
    service.kiosk.outputs = [styles]
    changes = []
    service.kiosk.listeners.append(changes.append)
    service.run()
    # Eileen alone, then Grace (no style of her own), then Eileen beside a stranger: the
    # style follows whoever is the main face, a frame or two after the face path says so
    # (on a busy machine a track's box stays a while after its face has gone, so the main
    # face may switch back and forth: each switch is followed all the same).
    assert changes[0] == "halftone" and "mosaic" in changes
    held = {"eileen_collins": 0, "grace_hopper": 0}
    for i in range(len(styles.seen) - 3):
        window = styles.seen[i:i + 4]
        main = window[0][1]
        if main in held and all(m == main for _, m in window):
            assert window[-1][0] == ("halftone" if main == "eileen_collins" else "mosaic")
            held[main] += 1
    assert held["eileen_collins"] > 10 and held["grace_hopper"] > 10
