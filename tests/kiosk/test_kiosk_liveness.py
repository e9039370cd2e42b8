"""The kiosk greets only a live person when ``liveness.mode = "require"``, and with
``liveness.challenge = "turn"`` asks on the screen for a head turn before it does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import configure, matcher_loader, noisy_frames, read_jsonl
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.kiosk.app import KioskService
from jetkiosk.edge.kiosk.faces import TURN_PROMPT, FaceBoard, enrollment_faces, face_config
from jetkiosk.edge.kiosk.outputs import Output

SAMPLES = {"image_T1": "live_person", "image_F1": "photo_person"}


class Shown(Output):
    """Counts the frames shown."""

    uri = "count://"

    def __init__(self) -> None:
        self.frames = 0

    def show(self, frame: np.ndarray) -> int:
        self.frames += 1
        return -1


@pytest.fixture
def kiosk_config(config, analyzer, shared, tmp_path):
    """The live sample for 3 s, nothing, then the spoof sample for 3 s, each person enrolled
    from their own sample; events to a file."""
    photos = {n: cv2.imread(str(shared / "models/antispoof/samples" / f"{n}.jpg"))
              for n in SAMPLES}
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    for photo, name in SAMPLES.items():
        gallery.add(name, analyzer.analyze(photos[photo])[0].encoding[None])
    gallery.save(config.gallery_path)
    clip = tmp_path / "samples.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 30, (480, 640))
    for frames in (noisy_frames(photos["image_T1"], 90, seed=1),
                   noisy_frames(np.full((640, 480, 3), 90, np.uint8), 45),
                   noisy_frames(photos["image_F1"], 90, seed=2)):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return configure(config, {"kiosk.source": f"file://{clip}", "kiosk.output": "file:///dev/null",
                              "kiosk.width": 320, "kiosk.style": "mosaic", "kiosk.faces": True,
                              "kiosk.faces_nice": 0, "liveness.mode": "require",
                              "liveness.need_3d": False,  # photos held still: passive only
                              # each photo its own track, however few frames the face path
                              # analyses in the gap between them on a busy machine
                              "tracker.max_missed": 2,
                              "run.sink": f"jsonl:{tmp_path / 'events.jsonl'}"})


def run_kiosk(config, analyzer):
    """Events, greetings and prompts seen on the screen while the kiosk runs the clip."""
    service = KioskService(config, analyzer, matcher_loader(face_config(config), analyzer))
    service.kiosk.outputs = [Shown()]
    board: FaceBoard = service.faces.board
    greetings, prompts = set(), set()
    greet, prompt = board.greetings, board.prompt
    board.greetings = lambda: greetings.update(greet()) or greet()  # type: ignore[method-assign]
    board.prompt = lambda: prompts.add(prompt()) or prompt()  # type: ignore[method-assign]
    assert service.run() > 30
    return read_jsonl(Path(config.run.sink.split(":", 1)[1])), greetings, prompts - {None}


def test_require_greets_the_live_person_and_not_the_photo(kiosk_config, analyzer):
    events, greetings, prompts = run_kiosk(kiosk_config, analyzer)
    decided = {(e["name"], e["decision"]) for e in events if e["event"] != "end"}
    assert ("live_person", "match") in decided and ("photo_person", "spoof") in decided
    assert ("photo_person", "match") not in decided
    assert greetings == {"Welcome, live_person"} and prompts == set()


def test_turn_challenge_is_asked_on_the_screen_and_withholds_the_greeting(kiosk_config,
                                                                          analyzer):
    kiosk_config.liveness.challenge = "turn"
    events, greetings, prompts = run_kiosk(kiosk_config, analyzer)
    live = [e for e in events if e["name"] == "live_person" and e["event"] != "end"]
    assert live and all(e["decision"] == "not_verified_live" for e in live)  # it never turned
    assert live[0]["live"]["challenge"]["state"] == "asked"
    assert "challenge" in live[0]["live"]["checks"]
    assert prompts and prompts <= {TURN_PROMPT.format(side=s) for s in ("left", "right")}
    assert greetings == set()
    photo = {e["decision"] for e in events if e["name"] == "photo_person"}
    assert photo == {"spoof"}


def test_walk_up_enrollment_takes_no_shot_of_a_photo_under_require(config, analyzer, shared):
    photos = {n: cv2.imread(str(shared / "models/antispoof/samples" / f"{n}.jpg"))
              for n in SAMPLES}
    config.liveness.mode = "require"
    analyze = enrollment_faces(analyzer, config.liveness)
    live, photo = analyze(photos["image_T1"]), analyze(photos["image_F1"])
    assert live[0].encoding is not None and live[0].live > 0.9
    assert photo[0].encoding is None and photo[0].rejected.startswith("not live: live score")
    config.liveness.mode = "report"  # enrollment as before
    assert enrollment_faces(analyzer, config.liveness)(photos["image_F1"])[0].encoding is not None
