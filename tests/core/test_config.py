"""Configuration: defaults, TOML file, overrides; errors name the key path."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import Config, load_config, settings
from jetkiosk.edge.core.config_toml import template, toml_value
from jetkiosk.edge.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


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
    ("[models]\nbackend = 'cuda'\n", "models.backend: 'cuda' is not one of auto, onnxruntime"),
    ("[detector]\nnms_threshold = 1.5\n",
     r"detector.nms_threshold: 1.5 is out of range \(expected between 0 and 1\)"),
    ("[run]\nreconnect_min = 0\n", r"run.reconnect_min: 0.0 is out of range \(expected at least"),
    ("[log]\nformat = 'xml'\n", "log.format: 'xml' is not one of auto, text, json, journal"),
])
def test_bad_files_name_the_file_and_key_path(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: .*{message}"):
        load_config(path)


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config("/nonexistent/jetkiosk.toml")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(overrides=["detector.max_side"])
    with pytest.raises(ConfigError, match="tracker.votes: expected int"):
        load_config(overrides=["tracker.votes=many"])


def test_the_template_documents_every_setting_and_reads_back_as_the_defaults(tmp_path):
    text = template()
    for section in dataclasses.fields(Config):
        for spec, default in settings(getattr(Config(), section.name)):
            assert spec.metadata["doc"], f"{section.name}.{spec.name} has no description"
            assert f"# {spec.name} = {toml_value(default)}" in text
    path = tmp_path / "all.toml"
    path.write_text(text.replace("\n# ", "\n"))  # every setting uncommented, at its default
    lines = [line for line in path.read_text().splitlines() if " = " in line or
             line.startswith("[")]
    path.write_text("\n".join(lines))
    assert load_config(path) == Config()
    installed = load_config_text(tmp_path, template({"run.sink": "mqtt", "mqtt.keepalive": 60}))
    assert installed.run.sink == "mqtt" and installed.mqtt.keepalive == 60


def load_config_text(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_config_check_prints_the_effective_settings_or_the_error(tmp_path, capsys,
                                                                 monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[run]\nsink = "jsonl:-,mqtt"\nmax_fps = 5\n[mqtt]\nnode = "door"\n')
    assert main(["config", "check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    effective = tomllib.loads(out)
    assert effective["run"]["max_fps"] == 5.0 and effective["tracker"]["votes"] == 3
    assert "max_fps = 5.0  # default: 0.0" in out and f"{path}: OK" in err
    monkeypatch.setenv("JETKIOSK_CONFIG", str(path))  # the default file for every command
    assert main(["config", "check"]) == 0 and capsys.readouterr().out == out
    for text, message in [
        ('[mqtt]\nbroker = "http://broker"\n[run]\nsink = "mqtt"\n',
         "mqtt.broker: 'http://broker': scheme must be mqtt:// or mqtts://"),
        ('[run]\nsource = "usb://0"\n', "run.source: usb://0: unknown source scheme"),
        ('[mqtt]\nprefix = "a/#"\n[run]\nsink = "mqtt"\n', "mqtt.prefix"),
        ('[metrics]\nlisten = "localhost"\n', "metrics.listen: 'localhost': expected host:port"),
        ('[tracker]\nvotes = "three"\n', "tracker.votes: expected int, got 'three'"),
    ]:
        path.write_text(text)
        assert main(["config", "check", "--config", str(path)]) == 2
        assert f"jetkiosk: error: {path}: {message}" in capsys.readouterr().err, text
    assert main(["config", "check", "--config", str(tmp_path / "gone.toml")]) == 2
    assert "gone.toml: configuration file not found" in capsys.readouterr().err
