"""The face path for one image: detect -> quality gate -> align -> embed (-> live score)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.config import Config
from ..core.errors import ModelError
from ..runtime.backend import Backend, load_backend, resolve
from ..runtime.manifest import Manifest, load_precision, manifest_path
from .align import Aligner
from .detection import Detection
from .detector import FaceDetector
from .encoder import FaceEncoder
from .liveness import LivenessCheck
from .quality import QualityGate

log = logging.getLogger(__name__)


@dataclass
class Face:
    """A detected face; ``encoding`` is None when the quality gate rejected it."""

    detection: Detection
    encoding: Optional[np.ndarray] = None
    rejected: Optional[str] = None
    crop: Optional[np.ndarray] = None  # the aligned encoder input (BGR uint8)
    live: Optional[float] = None  # the passive live score, when asked for and loaded


def model_manifest(config: Config, name: str, task: str) -> Manifest:
    """The manifest of model ``name`` at the configured precision; it must do ``task``."""
    manifest = load_precision(manifest_path(config.models_dir, name), config.models.precision,
                              resolve(config.models.backend))
    if manifest.task != task:
        raise ModelError(f"{manifest.path}: is a {manifest.task}, expected a {task}")
    return manifest


def configured_detector(config: Config, backend: Backend) -> FaceDetector:
    """A detector over ``backend`` with the ``[detector]`` settings."""
    return FaceDetector(backend, config.detector.score_threshold, config.detector.nms_threshold,
                        config.detector.max_side)


def load_liveness(config: Config) -> Optional[LivenessCheck]:
    """The passive liveness check, unless ``liveness.mode`` is off. A model that cannot be
    loaded fails the start under ``require``; under ``report`` it is logged and the events
    say the passive check did not run."""
    if config.liveness.mode == "off":
        return None
    try:
        return LivenessCheck.load(config)
    except ModelError as exc:
        if config.liveness.mode == "require":
            raise ModelError(f"liveness.mode is require and the liveness check cannot load: "
                             f"{exc}") from exc
        log.error("liveness check not loaded (events say so): %s", exc)
        return None


class FaceAnalyzer:
    """Loads detector, encoder and liveness check from the models directory and runs the
    face path."""

    def __init__(self, config: Config):
        models = config.models_dir
        if not models.is_dir():
            raise ModelError(f"{models}: models directory missing (run `jetkiosk models prepare`)")
        det_manifest = model_manifest(config, config.models.detector, "face-detector")
        self.encoder_manifest: Manifest = model_manifest(config, config.models.encoder,
                                                         "face-encoder")
        self.detector = configured_detector(
            config, load_backend(config.models.backend, det_manifest, config))
        self.aligner = Aligner(self.encoder_manifest.preprocess)
        self.encoder = FaceEncoder(load_backend(config.models.backend, self.encoder_manifest,
                                                config),
                                   flip=config.encoder.flip, max_batch=config.encoder.max_batch)
        self.gate = QualityGate(config.quality)
        self.liveness = load_liveness(config)

    @property
    def fingerprint(self) -> str:
        return self.encoder_manifest.fingerprint

    def analyze(self, frame: np.ndarray, detections: Optional[List[Detection]] = None,
                live: bool = False) -> List[Face]:
        """Detect (unless given), gate, align and embed every face in a BGR frame."""
        if detections is None:
            detections = self.detector.detect(frame)
        return self.analyze_many([(frame, detections)], live)[0]

    def analyze_many(self, shots: Sequence[Tuple[np.ndarray, List[Detection]]],
                     live: bool = False) -> List[List[Face]]:
        """Gate and align the given faces of several BGR frames, then embed them all in one
        call to the encoder (batches of ``encoder.max_batch``); ``live``: and the passive live
        score of every face embedded (``score_live``)."""
        per_frame = [[self._aligned(frame, d) for d in detections] for frame, detections in shots]
        kept = [(face, crop) for faces in per_frame for face in faces
                if (crop := face.crop) is not None]
        for (face, _), encoding in zip(kept, self.encoder.encode([c for _, c in kept])):
            face.encoding = encoding
        if live:
            self.score_live([(frame, [f for f in faces if f.encoding is not None])
                             for (frame, _), faces in zip(shots, per_frame)])
        return per_frame

    def score_live(self, shots: Sequence[Tuple[np.ndarray, List[Face]]]) -> None:
        """The passive live score of the given faces of several BGR frames (one liveness run
        per frame with faces); nothing when the check is not loaded."""
        if self.liveness is None:
            return
        for frame, faces in shots:
            for face, score in zip(faces, self.liveness.scores(frame,
                                                               [f.detection for f in faces])):
                face.live = score

    def _aligned(self, frame: np.ndarray, detection: Detection) -> Face:
        """The face with its aligned crop, or the reason the quality gate rejected it."""
        face = Face(detection, rejected=self.gate.check_detection(detection))
        if face.rejected is None:
            crop = self.aligner(frame, detection)
            face.rejected = self.gate.check_crop(crop)
            if face.rejected is None:
                face.crop = crop
        if face.rejected is not None:
            log.info("face at %s rejected: %s", detection.as_dict()["box"], face.rejected)
        return face
