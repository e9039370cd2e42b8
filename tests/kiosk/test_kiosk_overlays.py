"""Overlays are drawn on the final frame, after every filter: the FPS text and a snapshot's
QR code, shown and then gone or changed, leave nothing behind in later frames or in the
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
from jetkiosk.edge.kiosk.snapshots import draw_qr, qr_modules
from jetkiosk.edge.kiosk.stylizer import Stylizer

ASTRONAUT = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
FRAMES = list(noisy_frames(ASTRONAUT, 12))


@pytest.fixture(scope="module")
def catalog():
    catalog = StyleCatalog([BUNDLED])
    yield catalog
    catalog.close()


def run(catalog, overlay_on, qr_on=(), display_width=0):
    """The frames a kiosk with flicker control shows for FRAMES; the FPS overlay on for the
    frame numbers in ``overlay_on``, a QR code for those in ``qr_on``; and the flicker
    filter's history at the end."""
    config = KioskConfig(flicker=0.6, display_width=display_width)
    stylizer = Stylizer(catalog, "mosaic", 640, flicker=FlickerFilter(config.flicker))
    kiosk = Kiosk(config, stylizer, [], ["mosaic"])
    shown = []
    for i, frame in enumerate(FRAMES):
        kiosk.overlay = i in overlay_on
        if i in qr_on:
            kiosk.qr.show(f"http://192.0.2.7:8080/snapshots/{'x' * (32 + i)}.jpg", float("inf"))
        else:
            kiosk.qr.clear()
        kiosk.meter.times = [0.0, 1.0 / (3 + 7 * i)]  # the FPS text changes on every frame
        final = kiosk.compose(stylizer(frame))
        shown.append(kiosk.with_qr(final).astype(np.int16))
    assert stylizer.flicker is not None and stylizer.flicker._previous_out is not None
    return shown, stylizer.flicker._previous_out.copy()


@pytest.mark.parametrize("display_width", [0, 960])
def test_overlays_that_change_or_go_leave_no_residue(catalog, display_width):
    plain, plain_history = run(catalog, (), display_width=display_width)
    drawn, drawn_history = run(catalog, range(8), qr_on=(3, 4, 5),
                               display_width=display_width)
    # Where the text was on each frame it was drawn, and where the QR code was.
    text = [np.abs(d - p).max(axis=-1) > 40 for d, p in zip(drawn, plain)]
    qr = np.abs(drawn[4] - plain[4]).max(axis=-1) > 40
    assert all(t[:60].sum() > 100 for t in text[:8])  # the text was there
    assert qr[-150:, -150:].sum() > 2000  # the QR code was there
    assert not any(t.any() for t in text[8:])  # then gone: nothing differs anywhere
    for i in range(8, len(FRAMES)):
        assert np.abs(drawn[i] - plain[i]).max() <= 1, i
    # The QR code gone, the text still there: no trace of the code's modules.
    for i in (6, 7):
        assert np.abs(drawn[i] - plain[i])[-150:, -150:].max() <= 1, i
    # The text changed from frame to frame: where the old text was and the new is not, the
    # frame is the plain one (no ghost of the old text).
    for i in range(1, 8):
        old_only = text[i - 1] & ~cv2.dilate(text[i].astype(np.uint8), np.ones((5, 5))) \
            .astype(bool)
        assert np.abs(drawn[i] - plain[i])[old_only].max(initial=0) <= 1, i
    # The filter's history never saw an overlay.
    assert np.abs(drawn_history - plain_history).max() <= 1e-3


def test_the_shown_qr_code_reads_back_and_the_final_frame_has_none(catalog):
    stylizer = Stylizer(catalog, "mosaic", 640, flicker=FlickerFilter())
    kiosk = Kiosk(KioskConfig(), stylizer, [], ["mosaic"])
    url = "http://192.0.2.7:8080/snapshots/AbCdEfGhIjKlMnOpQrStUvWxYz012345.jpg"
    kiosk.qr.show(url, float("inf"))
    final = kiosk.compose(stylizer(FRAMES[0]))
    shown = kiosk.with_qr(final)
    assert cv2.QRCodeDetector().detectAndDecode(shown)[0] == url
    assert cv2.QRCodeDetector().detectAndDecode(final)[0] == ""
    modules = qr_modules(url)
    assert modules.dtype == bool and modules.shape[0] == modules.shape[1]
    small = draw_qr(np.zeros((90, 160, 3), np.uint8), modules)  # fits a small frame too
    assert cv2.QRCodeDetector().detectAndDecode(
        cv2.resize(small, (640, 360), interpolation=cv2.INTER_NEAREST))[0] == url


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
