"""One validated configuration: defaults here, a TOML file over them, ``--set`` over that.

Every error names the key path (``detector.score_threshold``) and what was wrong.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 5 / 6 Pythons
    import tomli as tomllib


def data_dir() -> Path:
    """Where models and the gallery live: $JETKIOSK_DATA, else ~/.local/share/jetkiosk."""
    return Path(os.environ.get("JETKIOSK_DATA", Path.home() / ".local/share/jetkiosk"))


@dataclass
class ModelsConfig:
    dir: str = ""  # empty: <data dir>/models
    backend: str = "auto"  # onnxruntime | tensorrt | auto (TensorRT when it imports)
    precision: str = "fp32"  # fp32 | fp16 (TensorRT) | int8 (a variant made by `jetkiosk quantize`)
    detector: str = "retinaface-mnet025"
    encoder: str = "facenet-casia"
    engine_dir: str = ""  # TensorRT engine cache; empty: <data dir>/engines
    build_engines: bool = True  # TensorRT: build a missing or stale engine at load (minutes)
    dla_core: int = -1  # TensorRT on Xavier/Orin: DLA core with GPU fallback; -1: GPU
    workspace_mb: int = 1024  # TensorRT builder workspace limit

    @property
    def engines(self) -> Path:
        return Path(self.engine_dir) if self.engine_dir else data_dir() / "engines"


@dataclass
class DetectorConfig:
    score_threshold: float = 0.8
    nms_threshold: float = 0.4
    max_side: int = 640  # frames are scaled so the long side is at most this


@dataclass
class QualityConfig:
    min_face: int = 40  # px, shorter side of the face box
    min_sharpness: float = 10.0  # variance of the Laplacian of the aligned crop
    max_roll: float = 40.0  # degrees between the eyes' line and the horizontal


@dataclass
class EncoderConfig:
    flip: bool = False  # flip test-time augmentation (bench/flip_tta.py measures it)
    max_batch: int = 16


@dataclass
class GalleryConfig:
    path: str = ""  # empty: <data dir>/gallery.npz
    # Squared L2 distance threshold; bench/threshold.py measured it (README).
    threshold: float = 1.0
    uncertain_margin: float = 0.05  # |distance - threshold| below this: decision "uncertain"


@dataclass
class TrackerConfig:
    iou: float = 0.3  # minimum IoU to continue a track
    max_missed: int = 10  # frames a track survives without a detection
    votes: int = 3  # agreeing frames before a track announces a decision
    window: int = 7  # frames in the voting window
    reembed_every: int = 5  # once decided, encode a track's face only every Nth frame


@dataclass
class RunConfig:
    source: str = ""
    sink: str = "jsonl:-"  # comma-separated: jsonl:- (stdout), jsonl:/path/file.jsonl, mqtt
    camera: str = "cam0"
    max_fps: float = 0.0  # 0: as fast as frames come


@dataclass
class MqttConfig:
    broker: str = "mqtt://localhost:1883"  # mqtt://[user[:password]@]host[:port], mqtts://...
    protocol: str = "3.1.1"  # 3.1.1 | 5
    username: str = ""
    password: str = ""
    password_file: str = ""  # read the password from this file (first line)
    ca: str = ""  # CA bundle for mqtts:// (empty: the system's)
    cert: str = ""  # client certificate (PEM) for mutual TLS
    key: str = ""  # its private key (PEM)
    tls_insecure: bool = False  # skip the broker host name check (never in production)
    node: str = ""  # empty: this host's name
    prefix: str = "jetkiosk/{node}"
    client_id: str = ""  # empty: jetkiosk-<node>
    keepalive: int = 30  # seconds
    connect_timeout: float = 10.0  # seconds `run` waits for the first connection at start
    reconnect_min: float = 0.5  # reconnect backoff, seconds: doubles up to reconnect_max
    reconnect_max: float = 30.0
    outbox: str = ""  # empty: <data dir>/outbox.db
    outbox_capacity: int = 100_000  # events; when full the oldest is dropped (counted)
    flush_timeout: float = 5.0  # seconds a clean shutdown waits for the outbox to drain
    stats_interval: float = 10.0  # seconds between `stats` messages
    face_crops: bool = False  # JPEG face crop on <camera>/faces/crop (opt-in)
    presence_refresh: float = 30.0  # seconds between person state refreshes while present
    max_command_bytes: int = 4096
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    presence_expire_after: int = 120  # Home Assistant marks a presence sensor stale after this


@dataclass
class KioskConfig:
    source: str = ""
    output: str = "display://0"  # comma-separated: display://0, http://0.0.0.0:8080/, file://out.mp4
    style: str = "starry_night"
    rotation: str = ""  # comma-separated styles for rotation and keys (empty: every style)
    rotate_every: float = 0.0  # seconds between style changes (0: no timer rotation)
    width: int = 640  # processing width; the height follows the frame's aspect ratio
    display_width: int = 0  # output size (0: the processing size)
    display_height: int = 0
    blend: float = 1.0  # 1: only the stylized frame, 0: only the original
    keep_colors: bool = False  # the stylized luminance with the original colours
    flicker: float = 0.6  # temporal smoothing of static areas (0: off), bench/stylize.py
    flicker_motion: float = 12.0  # input change (0..255) above which a pixel is not smoothed
    fps_overlay: bool = False
    fullscreen: bool = True  # display:// windows
    jpeg_quality: int = 80  # http:// MJPEG output
    mqtt: bool = False  # style commands on <prefix>/style/set ([mqtt] settings)


@dataclass
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)

    @property
    def models_dir(self) -> Path:
        return Path(self.models.dir) if self.models.dir else data_dir() / "models"

    @property
    def gallery_path(self) -> Path:
        return Path(self.gallery.path) if self.gallery.path else data_dir() / "gallery.npz"

    @property
    def outbox_path(self) -> Path:
        return Path(self.mqtt.outbox) if self.mqtt.outbox else data_dir() / "outbox.db"


def _coerce(value: Any, kind: Any, key: str) -> Any:
    kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    elif isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")


def _apply(target: Any, data: Dict[str, Any], prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(fields))})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table, got {value!r}")
            _apply(current, value, f"{path}.")
        else:
            setattr(target, key, _coerce(value, fields[key].type, path))


def _override(text: str) -> Dict[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    node: Dict[str, Any] = {}
    parts = key.strip().split(".")
    cursor = node
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return node


def load_config(path: Optional[Union[str, Path]] = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``key=value`` overrides."""
    config = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
        _apply(config, data, "")
    for text in overrides:
        _apply(config, _override(text), "")
    return config
