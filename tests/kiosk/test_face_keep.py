"""The face-aware blend (``kiosk.face_keep``): inside a tracked face's box the stylized frame
comes back towards the camera's face, outside its feathered ellipse nothing changes; it
runs in the kiosk's compose path, before the overlays, only with the face path."""

from __future__ import annotations

from typing import Iterator, List, Optional

import cv2
import numpy as np
import pytest
from skimage import data

from jetkiosk.edge.capture.sources import Frame, Source
from jetkiosk.edge.core.config import KioskConfig
from jetkiosk.edge.core.errors import ConfigError
from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
from jetkiosk.edge.kiosk.face_keep import AXES, FEATHER, keep_faces
from jetkiosk.edge.kiosk.loop import Kiosk
from jetkiosk.edge.kiosk.overlay import COLOURS, Label, draw_labels
from jetkiosk.edge.kiosk.stylizer import Stylizer

FRAME = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1280, 720))
BOX = (500.0, 100.0, 700.0, 340.0)  # in FRAME's coordinates (1280x720)


def luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)


def painted(size=(640, 360)) -> np.ndarray:
    """A stand-in for a stylized frame: flat stripes, nothing of the face."""
    styled = np.zeros((size[1], size[0], 3), np.uint8)
    styled[:, :, 0] = 40
    styled[::8, :, 2] = 220
    return styled


def small(frame: np.ndarray, size=(640, 360)) -> np.ndarray:
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def inside(box, scale=0.5, shrink=0.3):
    """The central part of ``box`` scaled to the stylized frame, as slices."""
    x1, y1, x2, y2 = (v * scale for v in box)
    dx, dy = (x2 - x1) * shrink, (y2 - y1) * shrink
    return slice(int(y1 + dy), int(y2 - dy)), slice(int(x1 + dx), int(x2 - dx))


def untouched_mask(box, shape, scale=0.5) -> np.ndarray:
    """Pixels of a ``shape`` frame beyond the box's ellipse and its feather (a pixel spare)."""
    x1, y1, x2, y2 = (v * scale for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ax, ay = AXES[0] * (x2 - x1) * (1 + FEATHER) + 1, AXES[1] * (y2 - y1) * (1 + FEATHER) + 1
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return ((xx + 0.5 - cx) / ax) ** 2 + ((yy + 0.5 - cy) / ay) ** 2 > 1


@pytest.mark.parametrize("mode", ["luma", "alpha"])
def test_inside_the_box_the_face_comes_back_outside_nothing_changes(mode):
    styled = painted()
    out = keep_faces(styled.copy(), FRAME, [BOX], (1280, 720), 0.75, mode)
    original = small(FRAME)
    rows, cols = inside(BOX)
    before = np.abs(luma(styled)[rows, cols] - luma(original)[rows, cols]).mean()
    after = np.abs(luma(out)[rows, cols] - luma(original)[rows, cols]).mean()
    assert after < 0.35 * before, (before, after)
    # The face's structure is back: its luminance follows the original's.
    corr = np.corrcoef(luma(out)[rows, cols].ravel(), luma(original)[rows, cols].ravel())[0, 1]
    assert corr > 0.9
    far = untouched_mask(BOX, styled.shape)
    assert np.array_equal(out[far], styled[far])
    if mode == "luma":  # the colours stay the style's: the chroma is the stylized frame's
        ycc_out = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[rows, cols, 1:].astype(int)
        ycc_styled = cv2.cvtColor(styled, cv2.COLOR_BGR2YCrCb)[rows, cols, 1:].astype(int)
        assert np.abs(ycc_out - ycc_styled).mean() < 6


def test_strength_sets_how_much_comes_back_and_zero_is_a_no_op():
    styled = painted()
    original = small(FRAME)
    rows, cols = inside(BOX)
    gaps = []
    for strength in (0.25, 0.5, 1.0):
        out = keep_faces(styled.copy(), FRAME, [BOX], (1280, 720), strength)
        gaps.append(np.abs(luma(out)[rows, cols] - luma(original)[rows, cols]).mean())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 4.0  # BGR clips some saturated colours
    same = styled.copy()
    assert keep_faces(same, FRAME, [BOX], (1280, 720), 0.0) is same
    assert np.array_equal(same, styled)
    assert np.array_equal(keep_faces(styled.copy(), FRAME, [], (1280, 720), 1.0), styled)
    with pytest.raises(ValueError, match="mode"):
        keep_faces(styled.copy(), FRAME, [BOX], (1280, 720), 0.5, "hue")


@pytest.mark.parametrize("box", [(-60.0, 200.0, 140.0, 440.0), (1180.0, 560.0, 1340.0, 760.0),
                                 (-30.0, -40.0, 90.0, 100.0), (1279.0, 0.0, 1400.0, 50.0)])
def test_boxes_at_and_over_the_frame_edge(box):
    styled = painted()
    out = keep_faces(styled.copy(), FRAME, [box], (1280, 720), 0.75)
    assert out.shape == styled.shape and out.dtype == np.uint8
    far = untouched_mask(box, styled.shape)
    assert np.array_equal(out[far], styled[far])
    x1, y1, x2, y2 = (int(np.clip(v * 0.5, 0, lim)) for v, lim in zip(box, (640, 360) * 2))
    if x2 - x1 > 20 and y2 - y1 > 20:  # enough of the box is in the frame
        original = small(FRAME)
        part = (slice(y1 + 5, y2 - 5), slice(x1 + 5, x2 - 5))
        assert (np.abs(luma(out)[part] - luma(original)[part]).mean()
                < np.abs(luma(styled)[part] - luma(original)[part]).mean())


def test_boxes_from_a_frame_size_other_than_the_camera_frame():
    """The face path's boxes are in its frames' size; the camera frame may differ (here the
    same picture at 1920x1080) and the stylized frame is smaller again."""
    big = cv2.resize(FRAME, (1920, 1080))
    box_big = tuple(v * 1.5 for v in BOX)
    a = keep_faces(painted(), FRAME, [BOX], (1280, 720), 0.75)
    b = keep_faces(painted(), big, [box_big], (1920, 1080), 0.75)
    rows, cols = inside(BOX)
    assert np.abs(a[rows, cols].astype(int) - b[rows, cols]).mean() < 3


class FakeBoard:
    def __init__(self, labels: List[Label]):
        self._labels = labels

    def labels(self):
        return self._labels, (1280, 720)

    def boxes(self):
        return [(label.box, label.decision) for label in self._labels], (1280, 720)


class FakeFaces:
    """The parts of the face path the kiosk's display loop uses."""

    def __init__(self, labels: List[Label], blur: bool = False):
        self.board = FakeBoard(labels)
        self.blur = blur
        self.posted = 0

    def post(self, frame: np.ndarray) -> None:
        self.posted += 1

    def main_style(self) -> Optional[str]:
        return None

    def draw(self, shown: np.ndarray) -> None:
        draw_labels(shown, self.board.labels()[0], (1280, 720), self.blur)


class Frames(Source):
    uri = "test://frames"

    def __init__(self, frames: List[np.ndarray]):
        self._frames = frames

    def frames(self) -> Iterator[Frame]:
        for i, frame in enumerate(self._frames):
            yield frame, float(i)


@pytest.fixture(scope="module")
def catalog():
    catalog = StyleCatalog([BUNDLED])
    yield catalog
    catalog.close()


def shown_by(catalog, faces: Optional[FakeFaces], face_keep: float = 0.75) -> np.ndarray:
    """The final frame a kiosk (halftone, processing width 640) shows for FRAME."""
    kiosk = Kiosk(KioskConfig(face_keep=face_keep, flicker=0.0), Stylizer(catalog, "halftone", 640),
                  [], ["halftone"], faces)  # type: ignore[arg-type]
    assert kiosk.run(Frames([FRAME])) == 1 and kiosk.final is not None
    return kiosk.final


def test_the_kiosk_blends_tracked_faces_before_drawing_the_overlays(catalog):
    label = Label(1, BOX, "eileen", "match")
    plain = shown_by(catalog, None)  # no face path: no blend
    faces = FakeFaces([label])
    kept = shown_by(catalog, faces)
    assert faces.posted == 1
    original = small(FRAME)
    rows, cols = inside(BOX)
    assert (np.abs(luma(kept)[rows, cols] - luma(original)[rows, cols]).mean()
            < 0.4 * np.abs(luma(plain)[rows, cols] - luma(original)[rows, cols]).mean())
    # The box is drawn after the blend: its line has the overlay's colour, unblended.
    x1, y1 = int(BOX[0] * 0.5), int(BOX[1] * 0.5)
    assert np.abs(kept[y1 + 40, x1].astype(int) - COLOURS["match"]).max() <= 2
    # Far from the face the frame is the plain kiosk's (the label and box aside).
    far = untouched_mask(BOX, plain.shape)
    far[: int(BOX[3] * 0.5) + 5, : int(BOX[2] * 0.5) + 5] = False  # the label's area
    assert np.array_equal(kept[far], plain[far])
    # face_keep 0: the frame is exactly what the kiosk shows without the blend.
    off = shown_by(catalog, FakeFaces([label]), face_keep=0.0)
    assert np.array_equal(off[rows, cols], plain[rows, cols])
    assert np.array_equal(off[far], plain[far])


def test_with_blur_unknown_only_recognised_faces_are_blended(catalog):
    """A stranger's face is pixelated on the screen: the blend must not restore the parts of
    it the pixelation does not cover."""
    stranger = Label(2, BOX, "unknown", "unknown")
    kept = shown_by(catalog, FakeFaces([stranger], blur=True))
    plain = shown_by(catalog, FakeFaces([stranger], blur=True), face_keep=0.0)
    assert np.array_equal(kept, plain)


def test_face_keep_outside_0_to_1_is_a_config_error(catalog):
    with pytest.raises(ConfigError, match="kiosk.face_keep"):
        Kiosk(KioskConfig(face_keep=1.5), Stylizer(catalog, "halftone", 640), [], ["halftone"])
