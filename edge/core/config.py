"""One validated configuration: defaults here, a TOML file over them, ``--set`` over that.

Every error names the key path (``detector.score_threshold``) and what was wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 5 / 6 Pythons
    import tomli as tomllib


def data_dir() -> Path:
    """Where models, the gallery and the outbox live: $JETKIOSK_DATA, else systemd's
    $STATE_DIRECTORY (the unit's StateDirectory=), else ~/.local/share/jetkiosk."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    default = Path(state) if state else Path.home() / ".local/share/jetkiosk"
    return Path(os.environ.get("JETKIOSK_DATA", default))


def cache_dir() -> Path:
    """Where TensorRT engines are cached: systemd's $CACHE_DIRECTORY, else the data dir."""
    cache = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(cache) if cache and "JETKIOSK_DATA" not in os.environ else data_dir()


def setting(default: Any, doc: str, choices: Sequence[str] = (), low: Optional[float] = None,
            high: Optional[float] = None) -> Any:
    """A configuration field: its default, its meaning, and the values it accepts."""
    return field(default=default, metadata={"doc": doc, "choices": tuple(choices),
                                            "low": low, "high": high})


@dataclass
class ModelsConfig:
    """Which models run, and how."""

    dir: str = setting("", "ONNX models and manifests (empty: <data dir>/models)")
    backend: str = setting("auto", "inference backend; auto: TensorRT when it imports, else "
                           "ONNX Runtime", ("auto", "onnxruntime", "tensorrt"))
    precision: str = setting("auto", "auto: per model, int8 where a gated variant pays (a CPU "
                             "with VNNI/AMX, TensorRT), else fp16 under TensorRT and fp32 on "
                             "the CPU; int8: a gated variant (`models prepare` or `quantize`); "
                             "fp16 needs TensorRT", ("auto", "fp32", "fp16", "int8"))
    detector: str = setting("retinaface-mnet025", "face detector model name")
    encoder: str = setting("face-reid-0095", "face encoder model name (facenet-casia: the "
                           "earlier default)")
    engine_dir: str = setting("", "TensorRT engine cache (empty: <cache dir>/engines)")
    build_engines: bool = setting(True, "TensorRT: build a missing or stale engine at load "
                                  "(minutes)")
    fallback: bool = setting(True, "TensorRT: when an engine can be neither loaded nor rebuilt, "
                             "run the model with ONNX Runtime (logged as an error)")
    dla_core: int = setting(-1, "TensorRT on Xavier/Orin: DLA core with GPU fallback; -1: GPU",
                            low=-1)
    workspace_mb: int = setting(1024, "TensorRT builder workspace limit, MiB", low=1)
    threads: int = setting(0, "ONNX Runtime intra-op threads per model (0: its default, one "
                           "per core)", low=0)

    @property
    def engines(self) -> Path:
        return Path(self.engine_dir) if self.engine_dir else cache_dir() / "engines"


@dataclass
class ImagesConfig:
    """Photo files (identify, enroll, calibration, training): refused before read or decode."""

    max_bytes: int = setting(64 << 20, "larger files are refused before they are read (bytes)",
                             low=1024, high=1 << 34)
    max_pixels: int = setting(40_000_000, "images whose header claims more pixels are refused "
                              "before decoding (40 MP: 120 MB decoded, safe on a 4 GB Jetson "
                              "Nano)", low=1024, high=1 << 32)


@dataclass
class DetectorConfig:
    """Face detection."""

    score_threshold: float = setting(0.8, "minimum detector confidence", low=0, high=1)
    nms_threshold: float = setting(0.4, "IoU above which overlapping boxes are merged",
                                   low=0, high=1)
    max_side: int = setting(640, "frames are scaled so the long side is at most this, px",
                            low=32)


@dataclass
class QualityConfig:
    """Faces that are not encoded (too small, blurred, tilted)."""

    min_face: int = setting(40, "px, shorter side of the face box", low=0)
    min_sharpness: float = setting(10.0, "variance of the Laplacian of the aligned crop", low=0)
    max_roll: float = setting(40.0, "degrees between the eyes' line and the horizontal",
                              low=0, high=180)


@dataclass
class EncoderConfig:
    """Face encoding."""

    flip: bool = setting(False, "flip test-time augmentation (encodes every crop twice; no "
                         "gain for face-reid-0095 on lfw-calib)")
    max_batch: int = setting(16, "faces encoded in one batch", low=1)


@dataclass
class GalleryConfig:
    """Enrolled people and the decision threshold."""

    path: str = setting("", "gallery file (empty: <data dir>/gallery.npz)")
    threshold: float = setting(0.0, "fixed squared L2 distance threshold when the gallery file "
                               "sets none; 0: from target_fpir and the gallery's size", low=0)
    target_fpir: float = setting(0.003, "share of strangers allowed a name, whatever the number "
                                 "of people enrolled (needs the encoder's score calibration)",
                                 low=1e-9, high=0.5)
    uncertain_margin: float = setting(0.05, "|distance - threshold| below this: decision "
                                      "\"uncertain\"", low=0)
    max_people: int = setting(100_000, "a gallery file with more people is refused", low=1,
                              high=10_000_000)
    max_encodings: int = setting(100, "encodings per person at most (enrollment refuses more; "
                                 "a gallery file with more is refused)", low=1, high=100_000)
    audit_log: str = setting("", "the audit trail (empty: audit.jsonl beside the gallery file)")
    audit_max_bytes: int = setting(10 << 20, "the audit trail is rotated past this size",
                                   low=4096)
    expire_after: float = setting(0.0, "days without a match after which a person is removed "
                                  "by a running node or `gallery expire` (0: never; "
                                  "`gallery expire-after NAME DAYS` for one person)", low=0,
                                  high=1e6)
    encrypt: bool = setting(True, "seal the gallery file with AES-256-GCM (a plaintext one is "
                            "sealed the first time it is read)")
    key_file: str = setting("", "the gallery key (empty: gallery.key beside the gallery file); "
                            "a systemd credential gallery.key or $JETKIOSK_GALLERY_KEY wins")


@dataclass
class TrackerConfig:
    """Face tracks across frames and their votes."""

    iou: float = setting(0.3, "minimum IoU to continue a track", low=0, high=1)
    max_missed: int = setting(10, "frames a track survives without a detection", low=0)
    votes: int = setting(3, "agreeing frames before a track announces a decision", low=1)
    window: int = setting(7, "frames in the voting window", low=1)
    reembed_every: int = setting(5, "once decided, encode a track's face only every Nth frame",
                                 low=1)


def tables(item: type, doc: str) -> Any:
    """A configuration field holding a list of tables (``[[section.key]]``) of ``item``."""
    return field(default=(), metadata={"doc": doc, "choices": (), "low": None, "high": None,
                                       "item": item})


@dataclass
class CameraConfig:
    """One camera of `jetkiosk run` (a ``[[run.cameras]]`` table)."""

    name: str = setting("", "camera name in events and MQTT topics (one topic level)")
    source: str = setting("", "its URI, as run.source")


@dataclass
class RunConfig:
    """The capture loop (`jetkiosk run`)."""

    source: str = setting("", "file://clip.mp4, file:///dir/, v4l2:///dev/video0, rtsp://..., "
                          "rtsps://..., csi://0")
    sink: str = setting("jsonl:-", "comma-separated: jsonl:- (stdout), jsonl:/path/file.jsonl, "
                        "mqtt")
    camera: str = setting("cam0", "camera name in events and MQTT topics")
    max_fps: float = setting(0.0, "frames analysed per second at most (0: as fast as they come)",
                             low=0)
    reconnect_min: float = setting(1.0, "a live source that fails or ends is reopened after "
                                   "this many seconds, doubling up to reconnect_max", low=0.01)
    reconnect_max: float = setting(30.0, "longest wait between reopenings, seconds", low=0.01)
    frame_timeout: float = setting(10.0, "a live source with no frame for this long is lost "
                                   "(seconds; 0: wait for ever)", low=0)
    retries: int = setting(0, "reopenings of a lost live source before `run` gives up and "
                           "exits 1 (0: for ever)", low=0)
    cameras: Tuple[CameraConfig, ...] = tables(
        CameraConfig, "several cameras in one node, instead of source and camera: one "
        "[[run.cameras]] table each, with name and source")


@dataclass
class MqttConfig:
    """The broker, topics and delivery."""

    broker: str = setting("mqtt://localhost:1883", "mqtt://[user[:password]@]host[:port] or "
                          "mqtts://...")
    protocol: str = setting("3.1.1", "MQTT protocol version", ("3.1.1", "5"))
    username: str = setting("", "user name (overrides the broker URI's)")
    password: str = setting("", "password (prefer password_file)")
    password_file: str = setting("", "read the password from this file (first line)")
    ca: str = setting("", "CA bundle for mqtts:// (empty: the system's)")
    cert: str = setting("", "client certificate (PEM) for mutual TLS")
    key: str = setting("", "its private key (PEM)")
    tls_insecure: bool = setting(False, "skip the broker host name check (never in production)")
    node: str = setting("", "node name in topics (empty: this host's name)")
    prefix: str = setting("jetkiosk/{node}", "topic prefix")
    client_id: str = setting("", "MQTT client id (empty: jetkiosk-<node>)")
    keepalive: int = setting(30, "seconds", low=5)
    connect_timeout: float = setting(10.0, "seconds `run` waits for the first connection at "
                                     "start", low=0)
    reconnect_min: float = setting(0.5, "reconnect backoff, seconds: doubles up to "
                                   "reconnect_max", low=0.01)
    reconnect_max: float = setting(30.0, "longest wait between reconnections, seconds",
                                   low=0.01)
    outbox: str = setting("", "events kept until the broker has them (empty: "
                          "<data dir>/outbox.db)")
    outbox_capacity: int = setting(100_000, "events; when full the oldest is dropped (counted)",
                                   low=1)
    flush_timeout: float = setting(5.0, "seconds a clean shutdown waits for the outbox to "
                                   "drain", low=0)
    stats_interval: float = setting(10.0, "seconds between `stats` messages (0: none)", low=0)
    face_crops: bool = setting(False, "JPEG face crop on <camera>/faces/crop (opt-in)")
    presence_refresh: float = setting(30.0, "seconds between person state refreshes while "
                                      "present", low=0)
    max_command_bytes: int = setting(4096, "larger commands are refused", low=64,
                                     high=1 << 20)
    response_prefixes: str = setting("{prefix}/response, +/response", "comma-separated topic "
                                     "filters an MQTT 5 command's response topic must match "
                                     "({prefix}: this node's prefix; +/response: a client's "
                                     "own inbox)")
    discovery: bool = setting(True, "Home Assistant MQTT discovery")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix")
    presence_expire_after: int = setting(120, "Home Assistant marks a presence sensor stale "
                                         "after this, seconds", low=0)


@dataclass
class KioskConfig:
    """The stylized display (`jetkiosk kiosk`)."""

    source: str = setting("", "camera or clip URI, as run.source")
    output: str = setting("display://0", "comma-separated: display://0, http://0.0.0.0:8080/, "
                          "file://out.mp4")
    style: str = setting("starry_night", "style shown first")
    rotation: str = setting("", "comma-separated styles for rotation and keys (empty: every "
                            "style)")
    rotate_every: float = setting(0.0, "seconds between style changes (0: no timer rotation)",
                                  low=0)
    width: int = setting(640, "processing width; the height follows the frame's aspect ratio",
                         low=16)
    display_width: int = setting(0, "output width (0: the processing size)", low=0)
    display_height: int = setting(0, "output height (0: the processing size)", low=0)
    blend: float = setting(1.0, "1: only the stylized frame, 0: only the original", low=0, high=1)
    keep_colors: bool = setting(False, "the stylized luminance with the original colours")
    flicker: float = setting(0.6, "temporal smoothing of static areas (0: off), bench/stylize.py",
                             low=0, high=1)
    flicker_motion: float = setting(12.0, "input change (0..255) above which a pixel is not "
                                    "smoothed", low=0, high=255)
    canvas: float = setting(2.0, "grey levels of a fixed paper grain added to the network's "
                            "input, so smooth walls are painted as texture, not as streaks "
                            "along the gradient (0: off)", low=0, high=32)
    face_keep: float = setting(1.0, "kiosk.faces: how much of each tracked face's luminance is "
                               "blended back into the stylized frame under a feathered "
                               "ellipse (the colours stay the style's), so faces stay "
                               "recognisable (0: off; 1 keeps the nearest person right for "
                               "90-100% of faces in every style, bench/style_faces.py)",
                               low=0, high=1)
    fps_overlay: bool = setting(False, "draw the frame rate on the output")
    fullscreen: bool = setting(True, "display:// windows")
    jpeg_quality: int = setting(80, "http:// MJPEG output", low=1, high=100)
    http_max_clients: int = setting(8, "http:// clients served at once; more get 503", low=1,
                                    high=1024)
    http_header_timeout: float = setting(5.0, "http:// seconds a client has to send its request "
                                         "headers", low=0.1, high=300)
    http_send_timeout: float = setting(10.0, "http:// seconds a frame may take to reach a "
                                       "client that does not read before it is dropped",
                                       low=0.1, high=300)
    mqtt: bool = setting(False, "style commands on <prefix>/style/set ([mqtt] settings)")
    faces: bool = setting(False, "the face path on the kiosk's own frames, in a thread: events "
                          "as `jetkiosk run` sends them to run.sink (and to MQTT when "
                          "kiosk.mqtt is on), boxes and names drawn on the screen")
    faces_threads: int = setting(1, "ONNX Runtime intra-op threads of each face model when "
                                 "kiosk.faces is on (the style network keeps models.threads)",
                                 low=1)
    faces_nice: int = setting(10, "nice value added to the face path's thread (Linux), so the "
                              "display keeps its frame rate", low=0, high=19)
    faces_fps: float = setting(0.0, "frames the face path analyses per second at most when "
                               "kiosk.faces is on (0: as many as it can); fewer leave more of "
                               "the CPU to the display", low=0)
    greeting: str = setting("Welcome, {name}", "kiosk.faces: shown once per decision that "
                            "names someone ({name}: the name; empty: no greeting)")
    greeting_seconds: float = setting(4.0, "how long a greeting stays on the screen", low=0)
    blur_unknown: bool = setting(False, "kiosk.faces: pixelate every face not recognised "
                                 "(unknown, uncertain, not decided yet) in all that is shown "
                                 "or served")
    enroll_consent: str = setting(
        "This kiosk will keep a numeric description of your face (never a photo) to "
        "recognise you here. Press Y to agree, N to decline.",
        "walk-up enrollment: the consent text; enrollment goes on only after an explicit "
        "accept (the Y key or an accept command)")
    enroll_name: str = setting("visitor-{time}", "walk-up enrollment started by the E key: "
                               "the name saved ({time}: YYYYMMDD-HHMMSS; rename it later with "
                               "`jetkiosk gallery rename`)")
    enroll_shots: int = setting(5, "walk-up enrollment: varied shots kept (straight ahead, "
                                "then small turns each way)", low=1, high=15)
    enroll_turn: float = setting(0.25, "walk-up enrollment: the widest head turn asked for, as "
                                 "the nose's offset from between the eyes over the eye "
                                 "distance (0.25: about 25 degrees)", low=0.05, high=0.6)
    enroll_timeout: float = setting(30.0, "walk-up enrollment: seconds for the consent and "
                                    "again for the capture before it stops, saving nothing",
                                    low=1, high=600)
    snapshots: bool = setting(False, "the S key, the page's button or <prefix>/snapshot/set "
                              "take the frame as shown (stylized, kiosk.blur_unknown applied) "
                              "as a JPEG kept in memory only, served at an unguessable URL of "
                              "the http:// output and shown on the screen as a QR code")
    snapshot_ttl: float = setting(600.0, "seconds a snapshot's URL serves it; then it is gone "
                                  "(404)", low=1, high=86400)
    snapshot_qr_seconds: float = setting(60.0, "seconds a snapshot's QR code stays on the "
                                         "screen (at most kiosk.snapshot_ttl; 0: as long as "
                                         "the snapshot lives)", low=0)


@dataclass
class LivenessConfig:
    """Is a face a live person or a photo or screen of one? Three layers: the passive check
    on each encoded face, the geometry of a track's landmarks, and a turn challenge."""

    mode: str = setting("report", "off: no checks; report: every event says what the checks "
                        "found, decisions unchanged; require: a match needs a live decision, "
                        "else the decision is spoof or not_verified_live, and a missing or "
                        "corrupt liveness model is a startup error", ("off", "report", "require"))
    threshold: float = setting(0.5, "passive live score at or above which a face looks live",
                               low=0, high=1)
    frames: int = setting(3, "passive scores a track needs before it can be live", low=1)
    rescore_every: int = setting(3, "once a track has liveness.frames passive scores, only "
                                 "every Nth of its encoded faces is scored (1: every one)",
                                 low=1)
    max_flips: int = setting(1, "times a track's passive verdict may cross the threshold "
                             "(in its last liveness.window scores) and still be live", low=0)
    window: int = setting(30, "frames of a track kept for the passive scores and the "
                          "landmark geometry", low=2, high=1000)
    need_3d: bool = setting(True, "require: a match also needs the track to have moved as a "
                            "3-D head (a small turn of the head); false: the passive check "
                            "alone decides and the geometry only reports")
    parallax: float = setting(0.16, "geometry: the nose's offset from where the plane of the "
                              "eyes and mouth corners puts it, in eye distances, above which "
                              "the face moved as a 3-D head (bench/liveness.py)", low=0, high=1)
    motion: float = setting(0.05, "geometry: how far the eyes and mouth corners moved as a "
                            "turned plane (their departure from a similarity transform, in eye "
                            "distances) before a face with no parallax is reported planar",
                            low=0, high=1)
    challenge: str = setting("none", "turn: a kiosk greets a match only after the head turns "
                             "to a random side, as the screen asks, and moves as a 3-D head",
                             ("none", "turn"))
    challenge_turn: float = setting(0.2, "turn challenge: the yaw asked for, as the nose's "
                                    "offset from between the eyes over the eye distance "
                                    "(0.2: about 17 degrees)", low=0.05, high=0.6)
    challenge_seconds: float = setting(6.0, "turn challenge: seconds to turn before the "
                                       "decision is not_verified_live", low=1, high=120)


@dataclass
class LogConfig:
    """Logging on stderr (the journal under systemd)."""

    level: str = setting("warning", "least severe level logged",
                         ("debug", "info", "warning", "error"))
    format: str = setting("auto", "text; json (one object per line); journal (text with "
                          "<N> priority prefixes); auto: journal under systemd, else text",
                          ("auto", "text", "json", "journal"))


@dataclass
class MetricsConfig:
    """Prometheus metrics of `run`."""

    listen: str = setting("", "host:port of a Prometheus text endpoint at /metrics (empty: "
                          "off), e.g. 127.0.0.1:9108")


@dataclass
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def models_dir(self) -> Path:
        return Path(self.models.dir) if self.models.dir else data_dir() / "models"

    @property
    def gallery_path(self) -> Path:
        return Path(self.gallery.path) if self.gallery.path else data_dir() / "gallery.npz"

    @property
    def audit_path(self) -> Path:
        return Path(self.gallery.audit_log) if self.gallery.audit_log else \
            self.gallery_path.parent / "audit.jsonl"

    @property
    def outbox_path(self) -> Path:
        return Path(self.mqtt.outbox) if self.mqtt.outbox else data_dir() / "outbox.db"


LARGEST = 2 ** 53  # no setting means more; a number beyond it (or NaN, inf) is out of range
MAX_FILE_BYTES = 1 << 20  # a configuration file larger than this is refused unread


def _short(value: Any) -> str:
    """``repr(value)``, cut short for the 5000-digit number in a hostile file."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


@contextlib.contextmanager
def _any_digits() -> Iterator[None]:
    """Python 3.11 refuses to parse integers of over 4300 digits (ValueError); a huge number
    must be a range error naming its key instead. The file size bound keeps this cheap."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: None)()
    set_limit = getattr(sys, "set_int_max_str_digits", lambda digits: None)  # Python >= 3.11
    if limit is not None:
        set_limit(0)
    try:
        yield
    finally:
        if limit is not None:
            set_limit(limit)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if abs(value) <= LARGEST else value  # too large: a range error
    elif (kind is int and isinstance(value, int) and not isinstance(value, bool)
          or kind is str and isinstance(value, str)):
        return value
    elif isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {kind.__name__}, got {_short(value)}")


def _apply(target: Any, data: Dict[str, Any], prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(fields))})")
        current = getattr(target, key)
        item = fields[key].metadata.get("item")
        if item is not None:
            setattr(target, key, _tables(value, item, path))
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table, got {value!r}")
            _apply(current, value, f"{path}.")
        else:
            setattr(target, key, _check(_coerce(value, fields[key].type, path), fields[key], path))


def _tables(value: Any, item: type, key: str) -> Tuple[Any, ...]:
    """A list of tables, each applied over ``item``'s defaults; ``--set`` gives it as a TOML
    array of inline tables (``[{name = "a", source = "..."}]``)."""
    if isinstance(value, str):
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            raise ConfigError(f"{key}: expected an array of tables, got {_short(value)}") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{key}: expected an array of tables, got {_short(value)}")
    made = []
    for index, table in enumerate(value):
        made.append(item())
        _apply(made[-1], table, f"{key}[{index}].")
    return tuple(made)


def _check(value: Any, spec: dataclasses.Field, key: str) -> Any:
    choices, low, high = (spec.metadata.get(k) for k in ("choices", "low", "high"))
    if choices and value not in choices:
        raise ConfigError(f"{key}: {_short(value)} is not one of {', '.join(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        top = LARGEST if high is None else high
        nan = isinstance(value, float) and math.isnan(value)
        if nan or low is not None and value < low or not -LARGEST <= value <= top:
            bounds = f"between {low} and {high}" if high is not None and low is not None \
                else f"at most {top}" if low is None else f"at least {low}, at most {top}"
            raise ConfigError(f"{key}: {_short(value)} is out of range (expected {bounds})")
    return value


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
    """Defaults, then the TOML file at ``path`` (if any), then ``key=value`` overrides.

    Errors name the file or ``--set`` and the key path: ``config.toml: detector.nms: ...``.
    """
    with _any_digits():
        return _load(path, overrides)


def _load(path: Optional[Union[str, Path]], overrides: Iterable[str]) -> Config:
    config = Config()
    if path is not None:
        try:
            if Path(path).stat().st_size > MAX_FILE_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 10} KiB; not a "
                                  "configuration file")
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc})") from None
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        try:
            _apply(config, data, "")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        try:
            _apply(config, _override(text), "")
        except ConfigError as exc:
            message = str(exc)
            shown = text if len(text) <= 60 else text[:40] + "..."
            raise ConfigError(message if message.startswith("--set") else
                              f"--set {shown}: {message}") from None
    return config


def settings(section: Any) -> List[Tuple[dataclasses.Field, Any]]:
    """``(field, value)`` for each setting of a section (a Config member)."""
    return [(f, getattr(section, f.name)) for f in dataclasses.fields(section)]

