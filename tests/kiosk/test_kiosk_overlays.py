"""Overlays are drawn on the final frame, after every filter: the FPS text, shown and then
changed or gone, leaves nothing behind in later frames or in the
flicker filter's history (the filter smooths static areas over time, so anything fed back
into it would linger as a smeared copy); and the FPS text's outline stays under its letters
(the smeared dark copy beside the text was its outline drifting: see ``outlined_text``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from conftest import noisy_frames
from jetkiosk.edge.core.config import KioskConfig
from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
from jetkiosk.edge.kiosk.flicker import FlickerFilter
from jetkiosk.edge.kiosk.loop import Kiosk
from jetkiosk.edge.kiosk.stylizer import Stylizer

ASTRONAUT = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
FRAMES = list(noisy_frames(ASTRONAUT, 12))


@pytest.fixture(scope="module")
def catalog():
    catalog = StyleCatalog([BUNDLED])
    yield catalog
    catalog.close()


def run(catalog, overlay_on, display_width=0):
    """The frames a kiosk with flicker control shows for FRAMES, the FPS overlay on for the
    frame numbers in ``overlay_on``; and the flicker filter's history at the end."""
    config = KioskConfig(flicker=0.6, display_width=display_width)
    stylizer = Stylizer(catalog, "mosaic", 640, flicker=FlickerFilter(config.flicker))
    kiosk = Kiosk(config, stylizer, [], ["mosaic"])
    shown = []
    for i, frame in enumerate(FRAMES):
        kiosk.overlay = i in overlay_on
        kiosk.meter.times = [0.0, 1.0 / (3 + 7 * i)]  # the FPS text changes on every frame
        final = kiosk.compose(stylizer(frame))
        shown.append(final.astype(np.int16))
    assert stylizer.flicker is not None and stylizer.flicker._previous_out is not None
    return shown, stylizer.flicker._previous_out.copy()


@pytest.mark.parametrize("display_width", [0, 960])
def test_overlays_that_change_or_go_leave_no_residue(catalog, display_width):
    plain, plain_history = run(catalog, (), display_width=display_width)
    drawn, drawn_history = run(catalog, range(8), display_width=display_width)
    # Where the text was on each frame it was drawn.
    text = [np.abs(d - p).max(axis=-1) > 40 for d, p in zip(drawn, plain)]
    assert all(t[:60].sum() > 100 for t in text[:8])  # the text was there
    assert not any(t.any() for t in text[8:])  # then gone: nothing differs anywhere
    for i in range(8, len(FRAMES)):
        assert np.abs(drawn[i] - plain[i]).max() <= 1, i
    # The text changed from frame to frame: where the old text was and the new is not, the
    # frame is the plain one (no ghost of the old text).
    for i in range(1, 8):
        old_only = text[i - 1] & ~cv2.dilate(text[i].astype(np.uint8), np.ones((5, 5))) \
            .astype(bool)
        assert np.abs(drawn[i] - plain[i])[old_only].max(initial=0) <= 1, i
    # The filter's history never saw an overlay.
    assert np.abs(drawn_history - plain_history).max() <= 1e-3


@pytest.mark.parametrize("display_width", [0, 1280])
def test_the_fps_texts_outline_stays_under_its_letters(catalog, display_width):
    """The FPS text's dark outline lies right around its white letters: no dark copy of the
    text beside it (a thick black putText under a thin white one drifts right along the
    line: OpenCV advances each glyph by its stroke thickness)."""
    plain, _ = run(catalog, (), display_width=display_width)
    drawn, _ = run(catalog, range(len(FRAMES)), display_width=display_width)
    for d, p in zip(drawn, plain):
        changed = np.abs(d - p).max(axis=-1) > 30
        light = changed & (d.min(axis=-1) > 150)
        dark = changed & (d.max(axis=-1) < 60)
        assert light.sum() > 100 and dark.sum() > 100
        radius = max(1, round(1.5 * max(0.5, d.shape[0] / 720))) + 2  # the outline's, and 2
        near = cv2.dilate(light.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8))
        assert not (dark & ~near.astype(bool)).any(), np.argwhere(dark & ~near.astype(bool))[:5]
        columns = np.nonzero(light.any(axis=0))[0]
        assert np.nonzero(dark.any(axis=0))[0].max() <= columns.max() + radius
