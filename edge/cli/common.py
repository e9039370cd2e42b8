"""What every command shares: the common flags and the configuration keys they set, the
configuration a command runs with, and its output (text, or JSON lines with ``--json``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..core.config import Config, load_config

DEFAULT_CONFIG = Path("/etc/jetkiosk/config.toml")  # the service's file (`config check`)
Common = Callable[..., None]  # common(parser, keys=None): add the common flags to a parser

# Flags every command has, and the configuration keys they set.
COMMON_KEYS: Dict[str, Tuple[str, ...]] = {
    "models": ("models.dir",), "gallery": ("gallery.path",), "backend": ("models.backend",),
    "precision": ("models.precision",)}


def common(parser: argparse.ArgumentParser,
            keys: Optional[Dict[str, Tuple[str, ...]]] = None) -> None:
    """The flags every command has. ``keys``: this command's own flags that set
    configuration keys (``flag -> keys``; an entry ``key=value`` is set as written when the
    flag is given)."""
    parser.set_defaults(config_keys={**COMMON_KEYS, **(keys or {})})
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key (repeatable)")
    parser.add_argument("--models", help="models directory (models.dir)")
    parser.add_argument("--gallery", help="gallery file (gallery.path)")
    parser.add_argument("--backend", help="inference backend: onnxruntime | tensorrt | auto")
    parser.add_argument("--precision",
                        help="auto | fp32 | fp16 (tensorrt) | int8 (models.precision)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log quality rejections")


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration file, then ``--set``, then the flags this command maps to keys."""
    overrides = list(getattr(args, "set", []))
    for flag, keys in getattr(args, "config_keys", COMMON_KEYS).items():
        value = getattr(args, flag, None)
        if value:
            overrides.extend(key if "=" in key else f"{key}={value}" for key in keys)
    path = getattr(args, "config", None) or os.environ.get("JETKIOSK_CONFIG") or (
        DEFAULT_CONFIG if getattr(args, "action", "") == "check" else None)
    args.config_path = path or "defaults"
    return load_config(path, overrides)


def emit(args: argparse.Namespace, record: Dict[str, Any], text: str) -> None:
    print(json.dumps(record, sort_keys=True) if args.json else text, flush=True)
