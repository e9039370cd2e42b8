"""Hostile configuration: numbers of any size, NaN and inf, huge files, fuzzed TOML. Every
input ends in a Config or a ConfigError naming the key, never another exception."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetkiosk.edge.core.config import LARGEST, MAX_FILE_BYTES, Config, load_config
from jetkiosk.edge.core.errors import ConfigError

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")
HUGE = "9" * 5000
FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def numeric_keys():
    """Every numeric setting as ``section.key``."""
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory())  # type: ignore[misc]
            if f.type in ("int", "float")]


@pytest.mark.parametrize("key, value, message", [
    ("mqtt.keepalive", HUGE, "99999999999999999999...(5000 characters) is out of range"),
    ("mqtt.keepalive", "-" + HUGE, "-9999999999999999999...(5001 characters) is out of range"),
    ("mqtt.keepalive", str(LARGEST * 2), f"{LARGEST * 2} is out of range"),
    ("mqtt.keepalive", "nan", "expected int, got nan"),
    ("run.max_fps", HUGE, "99999999999999999999...(5000 characters) is out of range"),
    ("run.max_fps", "nan", "nan is out of range"), ("run.max_fps", "inf", "inf is out of range"),
    ("run.max_fps", "-inf", "-inf is out of range"), ("run.max_fps", "1e400", "inf is out"),
    ("kiosk.blend", "1.0000001", "1.0000001 is out of range .expected between 0 and 1")])
def test_numbers_beyond_a_settings_range_are_range_errors(tmp_path, key, value, message):
    section, name = key.split(".")
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    pattern = message.replace("(", "\\(").replace(")", "\\)").replace("...", "\\.\\.\\.")
    with pytest.raises(ConfigError, match=f"c.toml: {key}: {pattern}"):
        load_config(path)
    with pytest.raises(ConfigError, match=f"{key}: "):
        load_config(None, [f"{key}={value}"])


def test_a_5000_digit_integer_is_one_line_on_the_command_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f"[mqtt]\nkeepalive = {HUGE}\n")
    for args in (["--config", str(path)], ["--config", "/dev/null", "--set",
                                            f"mqtt.keepalive={HUGE}"]):
        result = subprocess.run([JETKIOSK, "config", "check", *args], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        line, = result.stderr.splitlines()
        assert "mqtt.keepalive" in line and "out of range" in line and len(line) < 300


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_config(path)


def test_deeply_nested_toml_is_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="c.toml: "):
        load_config(path)


@FUZZ
@given(key=st.sampled_from(numeric_keys()), value=st.one_of(
    st.integers(), st.floats(), st.text(max_size=30), st.booleans(),
    st.integers(min_value=10 ** 20, max_value=10 ** 400)))
def test_fuzzed_values_end_in_a_config_or_a_config_error(key, value):
    try:
        config = load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert key in str(exc)
        return
    section, name = key.split(".")
    number = getattr(getattr(config, section), name)
    assert -LARGEST <= number <= LARGEST


def toml_documents() -> st.SearchStrategy[str]:
    """Text that is mostly TOML of the right shape: known and unknown sections and keys,
    values of every TOML type and size; plus plain random text."""
    sections = st.sampled_from([f.name for f in dataclasses.fields(Config)] + ["nope"])
    keys = st.sampled_from(sorted({k.split(".")[1] for k in numeric_keys()}
                                  | {"source", "broker", "camera", "nope"}))
    values = st.one_of(st.integers().map(str), st.floats().map(repr).map(
        lambda v: v.replace("inf", "inf").replace("nan", "nan")), st.booleans().map(
        lambda b: str(b).lower()), st.text(max_size=20).map(json.dumps),
        st.just("[1, [2, [3]]]"), st.just("{ a = 1 }"), st.just(HUGE))
    line = st.tuples(keys, values).map(lambda kv: f"{kv[0]} = {kv[1]}")
    table = st.tuples(sections, st.lists(line, max_size=4)).map(
        lambda t: "\n".join([f"[{t[0]}]", *t[1]]))
    return st.one_of(st.lists(table, max_size=3).map("\n".join), st.text(max_size=300))


@FUZZ
@given(text=toml_documents())
def test_fuzzed_files_end_in_a_config_or_a_config_error(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")
