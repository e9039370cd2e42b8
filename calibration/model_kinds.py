"""What calibration and the accuracy gate need from each kind of model, through the runtime's
own classes: how to record its inputs from a picture, and how to compare a quantized model
with the FP32 one on held-out pictures."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import numpy as np

from jetkiosk.calibration.calib_set import Capture, Item, RecordingBackend, candidates, frame
from jetkiosk.edge.core.config import Config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.faces.analyzer import FaceAnalyzer, configured_detector
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.detector import FaceDetector
from jetkiosk.edge.faces.encoder import FaceEncoder
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.faces.liveness import LivenessCheck
from jetkiosk.edge.faces.open_set import ThresholdRule, threshold_rule
from jetkiosk.edge.kiosk.catalog import StyleCatalog
from jetkiosk.edge.kiosk.model import StyleModel
from jetkiosk.edge.kiosk.stylizer import Stylizer
from jetkiosk.edge.runtime.backend import Backend, load_backend
from jetkiosk.edge.runtime.manifest import Manifest, load_precision, manifest_path


def _lenient(config: Config) -> Config:
    """The runtime as calibration and the gate run it: FP32 on ONNX Runtime, and every face
    the detector finds, blurry ones too."""
    config = copy.deepcopy(config)
    config.models.backend, config.models.precision = "onnxruntime", "fp32"
    config.quality.min_sharpness = 0.0
    config.quality.min_face = 16
    return config


def _ort(manifest: Manifest) -> Backend:
    return load_backend("onnxruntime", manifest)


def _detector(config: Config) -> FaceDetector:
    """The configured detector at FP32 on ONNX Runtime: the faces liveness is asked about."""
    path = manifest_path(config.models_dir, config.models.detector)
    return configured_detector(config, _ort(load_precision(path, "fp32", "onnxruntime")))


def _stylizer(config: Config, manifest: Manifest, backend: Backend) -> Stylizer:
    """The kiosk's transform (processing width from ``kiosk.width``) around ``backend``."""
    model = StyleModel(manifest, backend)
    catalog = StyleCatalog([])
    catalog.add(model)
    return Stylizer(catalog, model.name, config.kiosk.width)


def capture(config: Config, manifest: Manifest) -> Capture:
    """picture -> the model inputs the runtime makes from it."""
    recorder = RecordingBackend(_ort(manifest))
    if manifest.task == "face-detector":
        detector = configured_detector(config, recorder)
        return lambda image: (detector.detect(image), recorder.take())[1]
    if manifest.task == "face-encoder":
        analyzer = FaceAnalyzer(_lenient(config))
        analyzer.encoder = FaceEncoder(recorder, max_batch=config.encoder.max_batch)
        return lambda image: (analyzer.analyze(image), recorder.take())[1]
    if manifest.task == "face-liveness":
        detector, check = _detector(config), LivenessCheck([recorder])
        return lambda image: (check.scores(image, detector.detect(image)), recorder.take())[1]
    if manifest.task == "style-transfer":
        stylizer = _stylizer(config, manifest, recorder)
        return lambda image: (stylizer(image), recorder.take())[1]
    raise ModelError(f"{manifest.name}: cannot calibrate a {manifest.task!r} model")


# ------------------------------------------------------------------ held-out comparisons
def _iou(a: Detection, b: Detection) -> float:
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def compare_detector(config: Config, fp32: Backend, quantized: Backend,
                     pictures: Sequence[np.ndarray]) -> Dict[str, float]:
    """Recall of the FP32 detections (IoU >= 0.5), mean IoU of the matches, extra boxes."""
    reference = configured_detector(config, fp32)
    candidate = configured_detector(config, quantized)
    found = matched = extra = 0
    ious: List[float] = []
    for image in pictures:
        want, got = reference.detect(image), candidate.detect(image)
        found += len(want)
        used = set()
        for w in want:
            scores = [(_iou(w, g), j) for j, g in enumerate(got) if j not in used]
            best = max(scores, default=(0.0, -1))
            if best[0] >= 0.5:
                matched += 1
                used.add(best[1])
                ious.append(best[0])
        extra += len(got) - len(used)
    if found == 0:
        raise ModelError("detector gate: the FP32 detector found no face in the held-out pictures")
    return {"faces": float(found), "recall": matched / found,
            "iou_mean": float(np.mean(ious)) if ious else 0.0, "extra_boxes": float(extra)}


def identity_folders(root: Path) -> Dict[str, List[Item]]:
    """One subfolder per identity -> its pictures (sorted)."""
    people = {p.name: candidates([p]) for p in sorted(Path(root).iterdir()) if p.is_dir()}
    if not people:
        raise ModelError(f"{root}: expected one subfolder per identity")
    return people


def aligned_faces(config: Config, people: Dict[str, List[Item]]
                  ) -> List[Tuple[str, bool, np.ndarray]]:
    """(identity, enrolled?, aligned crop) for every held-out picture with exactly one face;
    each identity's first usable photo is the enrolled one."""
    analyzer = FaceAnalyzer(_lenient(config))
    faces: List[Tuple[str, bool, np.ndarray]] = []
    for name, items in people.items():
        enrolled = False
        for item in items:
            found = [f.crop for f in analyzer.analyze(frame(item)) if f.crop is not None]
            if len(found) == 1:
                faces.append((name, not enrolled, found[0]))
                enrolled = True
    return faces


# Distances closer than this (squared L2) to a decision boundary (tau - margin, tau + margin)
# are "at the edge": a shift of that size, which an INT8 encoder's noise makes, may move them
# across. The gate lets those change and no other.
EDGE = 0.02
Decided = Tuple[str, str, float]  # owner, published decision, distance to the nearest boundary


def identify(encoder: FaceEncoder, faces: List[Tuple[str, bool, np.ndarray]],
             threshold: Union[float, ThresholdRule], margin: float
             ) -> Tuple[np.ndarray, List[Decided]]:
    """Encodings of every face, and for every probe in 1:K identification its owner, the
    decision a node would publish (the name, ``unknown``, or ``uncertain`` within ``margin``
    of the threshold: ``gallery.uncertain_margin``) and how far that is from changing."""
    encodings = encoder.encode([crop for _, _, crop in faces])
    gallery = Gallery("gate", "gate", encoder.dim)
    for (name, enrolled, _), encoding in zip(faces, encodings):
        if enrolled:
            gallery.add(name, encoding[None])
    probes = [i for i, (_, enrolled, _) in enumerate(faces) if not enrolled]
    if not probes:
        raise ModelError("encoder gate: no held-out identity had two usable photos")
    decided: List[Decided] = []
    for i, d in zip(probes, Matcher(gallery, threshold).identify(encodings[probes])):
        offset = d.distance - d.threshold
        label = "uncertain" if abs(offset) < margin else d.name or "unknown"
        decided.append((faces[i][0], label, abs(abs(offset) - margin)))
    return encodings, decided


def compare_encoder(reference: Tuple[np.ndarray, List[Decided]],
                    candidate: Tuple[np.ndarray, List[Decided]]) -> Dict[str, float]:
    """Cosine of FP32 and quantized encodings of the same aligned crops; 1:K identification
    at the configured threshold rule (first photo of each identity enrolled, the rest probed):
    published decisions that changed (all; those not at the edge of a boundary), names given
    to the wrong person that FP32 did not give, and the share each model names correctly."""
    (ref_enc, ref_dec), (q_enc, q_dec) = reference, candidate
    cosine = (ref_enc * q_enc).sum(1)
    correct = np.mean([owner == label for owner, label, _ in ref_dec])
    q_correct = np.mean([owner == label for owner, label, _ in q_dec])
    changed = [(r, q) for r, q in zip(ref_dec, q_dec) if r[1] != q[1]]
    wrong = [q for _, q in changed if q[1] not in (q[0], "unknown", "uncertain")]
    return {"faces": float(len(ref_enc)), "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()), "probes": float(len(ref_dec)),
            "identified_fp32": float(correct), "identified": float(q_correct),
            "identification_delta": float(q_correct - correct),
            "decisions_changed": float(len(changed)),
            "clear_decisions_changed": float(sum(r[2] >= EDGE for r, _ in changed)),
            "wrong_names_added": float(len(wrong))}


# Live scores closer than this to ``liveness.threshold`` are "at the edge": INT8 noise may move
# them across, and the gate lets those decisions change and no other.
LIVE_EDGE = 0.05
Shot = Tuple[np.ndarray, List[Detection]]


def live_scores(backend: Backend, shots: Sequence[Shot]) -> np.ndarray:
    """One model's live score (its softmax live-class probability) for every face: the
    runtime's check over that model alone (its crops, one batch per picture)."""
    check = LivenessCheck([backend])
    return np.asarray([s for image, found in shots for s in check.scores(image, found)],
                      np.float64)


def compare_liveness(reference: np.ndarray, candidate: np.ndarray, threshold: float
                     ) -> Dict[str, float]:
    """FP32 and quantized live scores of the same faces: mean and largest difference, and the
    live/spoof decisions at ``threshold`` that changed (all; those whose FP32 score lies
    LIVE_EDGE or more from the threshold)."""
    if len(reference) == 0:
        raise ModelError("liveness gate: the detector found no face in the held-out pictures")
    delta = np.abs(candidate - reference)
    changed = (reference >= threshold) != (candidate >= threshold)
    clear = changed & (np.abs(reference - threshold) >= LIVE_EDGE)
    return {"faces": float(len(reference)), "live_fp32": float(np.mean(reference >= threshold)),
            "live_delta_mean": float(delta.mean()), "live_delta_max": float(delta.max()),
            "decisions_changed": float(changed.sum()),
            "clear_decisions_changed": float(clear.sum())}


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def compare_style(config: Config, manifest: Manifest, fp32: Backend, quantized: Backend,
                  pictures: Sequence[np.ndarray]) -> Dict[str, float]:
    """PSNR (dB) and SSIM of the quantized network's frames against the FP32 network's."""
    reference = _stylizer(config, manifest, fp32)
    candidate = _stylizer(config, manifest, quantized)
    psnr, ssim = [], []
    for image in pictures:
        want, got = reference(image), candidate(image)
        mse = float(np.mean((want.astype(np.float64) - got.astype(np.float64)) ** 2))
        psnr.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
        ssim.append(_ssim(want, got))
    return {"frames": float(len(pictures)), "psnr": float(np.mean(psnr)),
            "psnr_min": float(np.min(psnr)), "ssim": float(np.mean(ssim))}


Comparison = Callable[[Backend, Backend], Dict[str, float]]


def comparison(config: Config, manifest: Manifest, heldout: Sequence[Path]) -> Comparison:
    """(fp32 backend, quantized backend) -> the gate's metrics on ``heldout``. Held-out
    pictures are read (and, for the encoder, faces aligned; for liveness, faces detected)
    once for every attempt."""
    if manifest.task == "face-encoder":
        people: Dict[str, List[Item]] = {}
        for root in heldout:
            people.update(identity_folders(root))
        faces = aligned_faces(config, people)
        tau, margin = threshold_rule(config.gallery, manifest), config.gallery.uncertain_margin
        return lambda ref, q: compare_encoder(identify(FaceEncoder(ref), faces, tau, margin),
                                              identify(FaceEncoder(q), faces, tau, margin))
    pictures = [frame(item) for item in candidates(heldout)]
    if manifest.task == "face-liveness":
        detector, threshold = _detector(config), config.liveness.threshold
        shots = [(image, detector.detect(image)) for image in pictures]
        return lambda ref, q: compare_liveness(live_scores(ref, shots), live_scores(q, shots),
                                               threshold)
    if manifest.task == "face-detector":
        return lambda ref, q: compare_detector(config, ref, q, pictures)
    return lambda ref, q: compare_style(config, manifest, ref, q, pictures)
