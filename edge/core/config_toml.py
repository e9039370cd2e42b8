"""The configuration as TOML: the documented template of every setting (`jetkiosk config
defaults`, /etc/jetkiosk/config.toml) and the effective values (`jetkiosk config check`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

from .config import Config, settings


def toml_value(value: Any) -> str:
    """A value as TOML (JSON's string escapes are TOML's basic-string escapes); a list of
    tables (``run.cameras``) as an array of inline tables."""
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(toml_value(v) for v in value)}]"
    if dataclasses.is_dataclass(value):
        pairs = (f"{f.name} = {toml_value(v)}" for f, v in settings(value))
        return f"{{{', '.join(pairs)}}}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _describe(spec: dataclasses.Field) -> str:
    doc = spec.metadata["doc"]
    low, high, choices = (spec.metadata[k] for k in ("low", "high", "choices"))
    if choices:
        doc += f" (one of: {', '.join(choices)})"
    elif low is not None:
        doc += f" (at least {low})" if high is None else f" ({low} to {high})"
    return doc


def template(values: Optional[Mapping[str, Any]] = None) -> str:
    """Every setting, its meaning and its default, commented out; ``values`` (key path ->
    value) are written as settings instead."""
    lines = ["# jetkiosk configuration. Every setting is shown with its default, commented",
             "# out; uncomment to change one. `jetkiosk config check` validates this file.", ""]
    for section in dataclasses.fields(Config):
        group = getattr(Config(), section.name)
        doc = " ".join((type(group).__doc__ or "").split())  # one comment line, however wrapped
        lines += [f"[{section.name}]", f"# {doc}"]
        for spec, default in settings(group):
            key = f"{section.name}.{spec.name}"
            lines.append(f"# {_describe(spec)}")
            if values and key in values:
                lines.append(f"{spec.name} = {toml_value(values[key])}  "
                             f"# default: {toml_value(default)}")
            else:
                lines.append(f"# {spec.name} = {toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def effective(config: Config) -> str:
    """Every setting's value in use, marking those that differ from the default."""
    lines: List[str] = []
    defaults = Config()
    for section in dataclasses.fields(Config):
        lines.append(f"[{section.name}]")
        default_values: Dict[str, Any] = {f.name: v for f, v in
                                              settings(getattr(defaults, section.name))}
        for spec, value in settings(getattr(config, section.name)):
            note = ("" if value == default_values[spec.name] else
                    f"  # default: {toml_value(default_values[spec.name])}")
            lines.append(f"{spec.name} = {toml_value(value)}{note}")
        lines.append("")
    return "\n".join(lines)
