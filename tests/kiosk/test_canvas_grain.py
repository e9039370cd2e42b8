"""kiosk.canvas: a smooth wall is painted as texture, not as streaks along its gradient."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import BUNDLED_STYLES
from jetkiosk.edge.core.errors import ConfigError
from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
from jetkiosk.edge.kiosk.stylizer import Stylizer, canvas_grain

# A wall lit from one side, as the demo clip's background: grey levels change only along x.
WALL = np.repeat(np.linspace(40, 110, 640, dtype=np.float32)[None, :, None], 360, 0)
WALL = np.repeat(WALL, 3, 2).astype(np.uint8)


def streakiness(bgr: np.ndarray) -> float:
    """Mean |d/dx| over mean |d/dy| at a quarter of the size (above the networks' 2 px
    sub-pixel pattern): about 1 for texture, far above 1 for vertical streaks."""
    grey = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32), None,
                      fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)[4:-4, 4:-4]
    return float(np.abs(np.diff(grey, axis=1)).mean() / max(np.abs(np.diff(grey, axis=0)).mean(),
                                                             1e-3))


@pytest.fixture(scope="module")
def catalog():
    catalog = StyleCatalog([BUNDLED])
    yield catalog
    catalog.close()


@pytest.mark.parametrize("style", BUNDLED_STYLES)
def test_grain_turns_streaks_into_texture(catalog, style):
    plain = Stylizer(catalog, style, 640)(WALL)
    grained = Stylizer(catalog, style, 640, canvas=2.0)(WALL)
    assert streakiness(plain) > 4.0
    assert 0.5 < streakiness(grained) < 2.0


def test_grain_is_fixed_so_it_adds_no_flicker(catalog):
    stylizer = Stylizer(catalog, "starry_night", 640, canvas=2.0)
    first, second = stylizer(WALL), stylizer(WALL)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, Stylizer(catalog, "starry_night", 640)(WALL))


def test_grain_has_its_amplitude_and_a_bad_one_is_refused(catalog):
    grain = canvas_grain(360, 640, 2.0)
    assert grain.shape == (360, 640, 1) and abs(float(grain.std()) - 2.0) < 1e-3
    with pytest.raises(ConfigError, match="kiosk.canvas: must be 0 or more"):
        Stylizer(catalog, "mosaic", 640, canvas=-1.0)
