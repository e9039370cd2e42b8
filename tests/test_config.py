"""Configuration: defaults, TOML file, overrides; errors name the key path."""

from __future__ import annotations

import pytest

from jetkiosk.edge.config import load_config
from jetkiosk.edge.errors import ConfigError


def test_file_and_overrides_apply_over_defaults(tmp_path):
    path = tmp_path / "jetkiosk.toml"
    path.write_text('[detector]\nscore_threshold = 0.6\n[gallery]\nthreshold = 0.9\n')
    config = load_config(path, ["detector.max_side=480", "encoder.flip=true"])
    assert config.detector.score_threshold == 0.6 and config.detector.max_side == 480
    assert config.gallery.threshold == 0.9 and config.encoder.flip is True
    assert config.tracker.votes == 3  # default kept


@pytest.mark.parametrize("text, message", [
    ("[detector]\nscore_treshold = 0.6\n", "detector.score_treshold: unknown key"),
    ("[detector]\nmax_side = 'big'\n", "detector.max_side: expected int, got 'big'"),
    ("[encoder]\nflip = 3\n", "encoder.flip: expected bool"),
    ("detector = 4\n", "detector: expected a table"),
    ("[detector\n", "invalid TOML"),
])
def test_bad_files_name_the_key_path(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config("/nonexistent/jetkiosk.toml")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(overrides=["detector.max_side"])
    with pytest.raises(ConfigError, match="tracker.votes: expected int"):
        load_config(overrides=["tracker.votes=many"])
