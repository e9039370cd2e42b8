"""Open-set evaluation and score calibration on a folder of real photos.

The folder holds ``people/<name>/<photo>`` (two photos or more per person) and optionally
``strangers/<photo>`` (one photo each of people who appear nowhere else), like
``../shared/faces/lfw-calib``. Faces are found by the runtime's detector and encoded by the
runtime's encoder; the subject of each photo is the face nearest its centre (the set's
photos are centred on their subject).

Protocol (``open_set``): enroll the first photo of each of K people, probe with their other
photos (TPIR: the right name) and with the photos of everyone not enrolled (FPIR: any name).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jetkiosk.edge.core.errors import ImageError, JetkioskError
from jetkiosk.edge.core.images import IMAGE_SUFFIXES, load_photo
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.detector import FaceDetector

log = logging.getLogger(__name__)
STRANGER = -1
MIN_TAIL_PAIRS = 50  # impostor pairs below a threshold before its rate counts as measured
TAIL_DECADES = 1.5  # the log-linear tail is fitted over this many decades above that


@dataclass
class PhotoFaces:
    """Every detected face of every photo, and the photo's label (``STRANGER`` or a person)."""

    files: List[str]
    labels: np.ndarray
    identities: List[str]
    shapes: List[List[int]]
    faces: List[List[Detection]]

    def centre_face(self, i: int) -> Optional[Detection]:
        """The face nearest the centre of photo ``i`` (its subject in a centred set)."""
        h, w = self.shapes[i][:2]
        return min(self.faces[i], default=None, key=lambda d: float(
            ((d.box[0] + d.box[2]) / 2 - w / 2) ** 2 + ((d.box[1] + d.box[3]) / 2 - h / 2) ** 2))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({
            "files": self.files, "labels": self.labels.tolist(), "identities": self.identities,
            "shapes": self.shapes, "faces": [[{"box": d.box.tolist(), "score": d.score,
                                               "landmarks": d.landmarks.tolist()} for d in f]
                                             for f in self.faces]}))

    @classmethod
    def load(cls, path: Path) -> PhotoFaces:
        data = json.loads(Path(path).read_text())
        faces = [[Detection(np.array(d["box"], np.float32), d["score"],
                            np.array(d["landmarks"], np.float32)) for d in f]
                 for f in data["faces"]]
        return cls(data["files"], np.array(data["labels"], np.int64), data["identities"],
                   data["shapes"], faces)


def _photos(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def detect_photos(root: Path, detector: FaceDetector,
                  progress: Optional[Callable[[int, int], None]] = None) -> PhotoFaces:
    """Detect every face in ``root/people/*/*`` and ``root/strangers/*``."""
    root = Path(root)
    people = root / "people"
    if not people.is_dir():
        raise JetkioskError(f"{root}: expected people/<name>/<photo> (and strangers/)")
    items = [(p, n) for n, d in enumerate(sorted(x for x in people.iterdir() if x.is_dir()))
             for p in _photos(d)]
    identities = sorted(x.name for x in people.iterdir() if x.is_dir())
    if (root / "strangers").is_dir():
        items += [(p, STRANGER) for p in _photos(root / "strangers")]
    files, labels, shapes, faces = [], [], [], []
    for done, (photo, label) in enumerate(items, 1):
        try:
            image = load_photo(photo)
        except ImageError as exc:
            log.warning("skipped %s", exc)
            continue
        files.append(str(photo))
        labels.append(label)
        shapes.append(list(image.shape))
        faces.append(detector.detect(image))
        if progress:
            progress(done, len(items))
    return PhotoFaces(files, np.array(labels, np.int64), identities, shapes, faces)


@dataclass
class OpenSetFaces:
    """One encoding per photo whose subject was found: the subject's encoding and label."""

    files: List[str]
    labels: np.ndarray  # person index, or STRANGER
    encodings: np.ndarray  # N x D, unit length

    @property
    def people(self) -> np.ndarray:
        """Person labels in the order they first appear."""
        known = self.labels[self.labels != STRANGER]
        _, first = np.unique(known, return_index=True)
        return known[np.sort(first)]


def encode_subjects(photos: PhotoFaces, align: Callable[[np.ndarray, Detection], np.ndarray],
                    encode: Callable[[List[np.ndarray]], np.ndarray], batch: int = 64
                    ) -> OpenSetFaces:
    """Align and encode the centre face of every photo that has one."""
    kept = [i for i in range(len(photos.files)) if photos.faces[i]]
    out = []
    for start in range(0, len(kept), batch):
        chunk = kept[start:start + batch]
        crops = []
        for i in chunk:
            face = photos.centre_face(i)
            assert face is not None
            crops.append(align(load_photo(Path(photos.files[i])), face))
        out.append(encode(crops))
    encodings = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    return OpenSetFaces([photos.files[i] for i in kept], photos.labels[kept], encodings)


ALIAS_QUANTILE = 0.25  # impostor pairs closer than this share of genuine pairs are aliases


def _identities(faces: OpenSetFaces) -> np.ndarray:
    """Labels with every stranger an identity of their own."""
    labels = faces.labels.copy()
    strangers = labels == STRANGER
    labels[strangers] = labels.max() + 1 + np.arange(strangers.sum())
    return labels


def merge_aliases(faces: OpenSetFaces) -> Tuple[OpenSetFaces, List[Tuple[str, str]]]:
    """One person under two names (LFW has a few) is label noise, not a false accept: two
    identities with a pair of photos closer than all but ``ALIAS_QUANTILE`` of genuine pairs
    become one. Returns the relabelled faces and the photo pairs that merged them."""
    labels = _identities(faces)
    strangers = faces.labels == STRANGER
    limit = float(np.quantile(distance_pairs(faces)["genuine"], ALIAS_QUANTILE))
    dist = 2.0 - 2.0 * faces.encodings @ faces.encodings.T
    close = np.argwhere(np.triu(dist < limit, 1) & (labels[:, None] != labels[None, :]))
    merged, dropped = [], set()
    for i, j in close.tolist():
        if labels[i] == labels[j]:
            continue
        merged.append((Path(faces.files[i]).name, Path(faces.files[j]).name))
        if strangers[i] and strangers[j]:  # two single photos of one stranger: keep one
            dropped.add(j)
            continue
        keep, drop = sorted((labels[i], labels[j]))
        labels[labels == drop] = keep
    labels[strangers & (labels > faces.labels.max())] = STRANGER
    kept = np.array([i for i in range(len(labels)) if i not in dropped], np.int64)
    return OpenSetFaces([faces.files[i] for i in kept], labels[kept],
                        faces.encodings[kept]), merged


def distance_pairs(faces: OpenSetFaces) -> Dict[str, np.ndarray]:
    """Squared L2 distances of every genuine pair and every impostor pair."""
    sims = faces.encodings @ faces.encodings.T
    upper = np.triu(np.ones(sims.shape, bool), 1)
    labels = faces.labels
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] != STRANGER)
    dist = np.maximum(2.0 - 2.0 * sims, 0.0)
    return {"genuine": np.sort(dist[upper & same]), "impostor": np.sort(dist[upper & ~same])}


K_GRID = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000)
FPIR_LEVELS = np.round(np.arange(-4.0, -0.95, 0.1), 2)  # log10 FPIR from 1e-4 to 1e-1
TAU_GRID = np.round(np.arange(0.3, 2.0, 0.0025), 4)


def _templates(faces: OpenSetFaces, labels: np.ndarray, photos: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    """The mean template (renormalised) of the first ``photos`` photos of every identity
    that has that many, and their identities."""
    owners = [i for i in np.unique(labels) if (labels == i).sum() >= photos]
    rows = np.stack([faces.encodings[np.flatnonzero(labels == i)[:photos]].mean(0)
                     for i in owners])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.array(owners)


def open_set_curves(faces: OpenSetFaces, taus: np.ndarray, photos: int = 1) -> Dict[str, Any]:
    """Measured FPIR(K, tau) for galleries of ``photos``-photo mean templates: every photo
    probes the templates of every other identity that has that many photos; a gallery is K
    of those templates drawn at random. The expectation over galleries is exact: a probe
    with m of the N candidate templates within tau is given a name with probability
    1 - C(N - m, K) / C(N, K)."""
    labels = _identities(faces)
    templates, owners = _templates(faces, labels, photos)
    n = len(owners) - 1  # candidates per probe (its own identity's template left out)
    dist = np.maximum(2.0 - 2.0 * faces.encodings @ templates.T, 0.0)
    dist[labels[:, None] == owners[None, :]] = np.inf
    own = np.isin(labels, owners)
    dist.sort(axis=1)
    within = np.stack([np.searchsorted(row, taus, side="right") for row in dist])  # probe x tau
    ks = [k for k in K_GRID if k < n] + [n]
    table = []
    for k in ks:
        size = np.where(own, n, n + 1)  # a probe whose identity has no template sees them all
        fpir = np.zeros(len(taus))
        for total in np.unique(size):
            rows = size == total
            log_choose = np.array([math.lgamma(total - m + 1) - math.lgamma(total - m + 1 - k)
                                   if total - m >= k else -np.inf for m in range(total + 1)])
            fpir += (1.0 - np.exp(log_choose[within[rows]] - log_choose[0])).sum(0)
        fpir /= len(labels)
        table.append([_tau_at(taus, fpir, 10.0 ** level) for level in FPIR_LEVELS])
    return {"k": ks, "log10_fpir": [float(v) for v in FPIR_LEVELS],
            "tau": [[None if t is None else round(t, 5) for t in row] for row in table],
            "probes": len(labels), "templates": int(n + 1)}


def _tau_at(taus: np.ndarray, rate: np.ndarray, level: float) -> Optional[float]:
    """The largest grid threshold whose rate stays at or below ``level``; None when even the
    smallest one does not (near-duplicate photos under two names set a floor)."""
    ok = np.flatnonzero(rate <= level)
    return float(taus[ok[-1]]) if len(ok) and ok[-1] > 0 else None


def rate_curve(impostor: np.ndarray, step: float = 0.05) -> Dict[str, Any]:
    """The false-accept rate of sorted impostor distances on a grid of log10 rates (measured
    where at least ``MIN_TAIL_PAIRS`` pairs lie below), with a log-linear tail fitted on the
    lowest ``TAIL_DECADES`` measured decades (``jetkiosk.edge.faces.open_set.RateCurve``)."""
    n = len(impostor)
    if n < 100 * MIN_TAIL_PAIRS:
        raise JetkioskError(f"too few impostor pairs to calibrate ({n})")
    lowest = np.log10(MIN_TAIL_PAIRS / n)
    levels = np.arange(lowest, 0.0, step)
    tau = np.array([impostor[int(10.0 ** lv * n + 0.5) - 1] for lv in levels], np.float64)
    tau, unique = np.unique(tau, return_index=True)
    levels = levels[unique]
    fit = levels <= lowest + TAIL_DECADES
    slope = float(np.polyfit(tau[fit], levels[fit], 1)[0])
    return {"tau": [round(float(t), 5) for t in tau],
            "log10_far": [round(float(v), 4) for v in levels],
            "tail": {"tau": round(float(tau[0]), 5), "slope": round(slope, 4),
                     "fitted_decades": TAIL_DECADES}}


def template_families(faces: OpenSetFaces, taus: np.ndarray, most: int = 4
                      ) -> List[Dict[str, Any]]:
    """For templates of n = 2..``most`` photos (people with that many): the per-comparison
    impostor rate and the measured open-set curves. A mean of several photos sits nearer to
    everyone, so it needs its own, tighter thresholds."""
    labels = _identities(faces)
    out = []
    for n in range(2, most + 1):
        templates, owners = _templates(faces, labels, n)
        if len(owners) < 50:
            break
        dist = 2.0 - 2.0 * faces.encodings @ templates.T
        impostor = np.sort(dist[labels[:, None] != owners[None, :]])
        out.append({"photos": n, "people": len(owners), **rate_curve(impostor),
                    "curves": open_set_curves(faces, taus, n)})
    return out


def score_calibration(faces: OpenSetFaces, encoder: str, fingerprint: str, dataset: str
                      ) -> Dict[str, Any]:
    """The ``open_set`` manifest entry that ``jetkiosk.edge.faces.open_set`` reads: the impostor
    false-accept rate per comparison (``rate_curve``), the genuine accept rate on the same
    thresholds, the measured open-set curves FPIR(K, tau) (``open_set_curves``), and both
    again for templates of several photos (``template_families``)."""
    faces, aliases = merge_aliases(faces)
    pairs = distance_pairs(faces)
    impostor, genuine = pairs["impostor"], pairs["genuine"]
    if len(genuine) < 10:
        raise JetkioskError(f"too few genuine pairs to calibrate ({len(genuine)})")
    curve = rate_curve(impostor)
    tar = np.searchsorted(genuine, curve["tau"], side="right") / len(genuine)
    return {
        "encoder": encoder, "fingerprint": fingerprint, "dataset": dataset,
        "score": "squared L2 distance between unit-length encodings",
        "pairs": {"genuine": len(genuine), "impostor": len(impostor)},
        "aliases": [list(pair) for pair in aliases],
        **curve,
        "tar": [round(float(v), 5) for v in tar],
        "curves": open_set_curves(faces, TAU_GRID),
        "templates": template_families(faces, TAU_GRID),
    }


@dataclass
class OpenSetResult:
    """One draw of the protocol at one threshold rule."""

    k: int
    tpir: float
    fpir: float
    genuine: int
    strangers: int
    threshold: float


def enrolled_split(faces: OpenSetFaces, k: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Indices of the enrolled photo of each of ``k`` people (drawn with ``seed``; all people
    when ``k`` is their number), their other photos, and every photo of anyone else."""
    people = faces.people
    if k > len(people):
        raise JetkioskError(f"K={k} but only {len(people)} people")
    chosen = people if k == len(people) else np.random.default_rng(seed).choice(
        people, k, replace=False)
    enrolled = np.array([int(np.flatnonzero(faces.labels == p)[0]) for p in chosen], np.int64)
    member = np.isin(faces.labels, chosen)
    genuine = np.setdiff1d(np.flatnonzero(member), enrolled)
    return {"enrolled": enrolled, "genuine": genuine, "strangers": np.flatnonzero(~member)}


def nearest(gallery: np.ndarray, probes: np.ndarray) -> Dict[str, np.ndarray]:
    """Best and second-best template per probe: index and squared distance."""
    sims = probes @ gallery.T
    order = np.argsort(-sims, axis=1)[:, :2]
    rows = np.arange(len(probes))[:, None]
    dist = np.maximum(2.0 - 2.0 * sims[rows, order], 0.0)
    return {"best": order[:, 0], "d1": dist[:, 0],
            "d2": dist[:, 1] if dist.shape[1] > 1 else np.full(len(probes), 4.0)}


def open_set(faces: OpenSetFaces, k: int, threshold: Callable[[int], float], seed: int = 0,
             margin: float = 0.0) -> OpenSetResult:
    """TPIR and FPIR for K enrolled people at ``threshold(K)``; with ``margin``, a name is
    given only when the second-best person is at least ``margin`` farther than the best."""
    split = enrolled_split(faces, k, seed)
    gallery = faces.encodings[split["enrolled"]]
    owner = faces.labels[split["enrolled"]]
    tau = float(threshold(k))

    def named(idx: np.ndarray) -> Dict[str, np.ndarray]:
        found = nearest(gallery, faces.encodings[idx])
        found["named"] = (found["d1"] <= tau) & (found["d2"] - found["d1"] >= margin)
        return found

    gen = named(split["genuine"])
    right = gen["named"] & (owner[gen["best"]] == faces.labels[split["genuine"]])
    imp = named(split["strangers"])
    return OpenSetResult(k, float(right.mean()), float(imp["named"].mean()),
                         len(split["genuine"]), len(split["strangers"]), tau)


def tau_at_fpir(faces: OpenSetFaces, k: int, fpir: float, seed: int = 0) -> float:
    """The threshold at which the measured FPIR is ``fpir`` (the open-set curve, directly)."""
    split = enrolled_split(faces, k, seed)
    found = nearest(faces.encodings[split["enrolled"]], faces.encodings[split["strangers"]])
    return float(np.quantile(found["d1"], fpir))


def tpir_at_fpir(faces: OpenSetFaces, ks: Sequence[int], fpir: float, seeds: int = 5
                 ) -> Dict[int, float]:
    """TPIR at a measured FPIR (the threshold set from the stranger probes themselves)."""
    out = {}
    for k in ks:
        draws = 1 if k == len(faces.people) else seeds
        taus = [tau_at_fpir(faces, k, fpir, s) for s in range(draws)]
        out[k] = float(np.mean([open_set(faces, k, lambda _, t=t: t, s).tpir
                                for s, t in enumerate(taus)]))
    return out


def runtime_faces(config: Any, root: Path, encoder: str, cache: Optional[Path] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> OpenSetFaces:
    """``root``'s subjects encoded by the runtime's ``encoder`` (through the configured
    backend). With ``cache``, detections and encodings are kept there, keyed by the
    detector's and the encoder's fingerprints, and reused."""
    from jetkiosk.edge.faces.align import Aligner
    from jetkiosk.edge.faces.analyzer import configured_detector, model_manifest
    from jetkiosk.edge.faces.encoder import FaceEncoder
    from jetkiosk.edge.runtime.backend import load_backend

    det_manifest = model_manifest(config, config.models.detector, "face-detector")
    manifest = model_manifest(config, encoder, "face-encoder")
    tag = f"{Path(root).resolve().name}-{det_manifest.sha256[:12]}"
    detections = cache / f"{tag}.detections.json" if cache else None
    stored = cache / f"{tag}-{manifest.fingerprint}.npz" if cache else None
    if stored is not None and stored.is_file():
        with np.load(stored) as data:
            return OpenSetFaces([str(f) for f in data["files"]], data["labels"],
                                data["encodings"])
    if detections is not None and detections.is_file():
        photos = PhotoFaces.load(detections)
    else:
        detector = configured_detector(config, load_backend(config.models.backend, det_manifest,
                                                            config))
        photos = detect_photos(root, detector, progress)
        if detections is not None:
            detections.parent.mkdir(parents=True, exist_ok=True)
            photos.save(detections)
    runner = FaceEncoder(load_backend(config.models.backend, manifest, config),
                         max_batch=config.encoder.max_batch)
    faces = encode_subjects(photos, Aligner(manifest.preprocess), runner.encode)
    if stored is not None:
        np.savez(stored, files=np.array(faces.files), labels=faces.labels,
                 encodings=faces.encodings)
    return faces
