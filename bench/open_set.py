"""Open-set identification on real photos: who is given the right name, and how many strangers
are given one, as the gallery grows.

On ../shared/faces/lfw-calib (716 people with 2-4 photos, 600 strangers), for galleries of
K = 10, 100 and all people (random galleries drawn with seeds 0-4 and averaged for K < all;
aliases merged first; the protocol of ``jetkiosk.export.encoder.open_set_eval``), it measures:

- TPIR (a person's other photos get their name) and FPIR (anyone not enrolled gets a name) of
  FaceNet CASIA at the old fixed tau=1.0 and at the target-FPIR rule, of face-reid-0095 at the
  target-FPIR rule (the shipped default, 0.001 and 0.01), at a fixed tau and with a
  best/second-best margin on top of the default rule;
- one mean template against the best of two encodings per person (people with 3+ photos:
  two enrolled, the rest probe), at the default rule's tau;
- face_recognition 1.3.0 (dlib HOG detector + ResNet, its tolerance 0.6) on the same photos;
- TPIR at a measured FPIR of 1e-3 and 1e-2, 1:1 TAR at FAR 1e-3 (all genuine pairs, 20,000
  random impostor pairs), and seconds per photo for detect + embed;
- DET (K=100) and ROC curves as PNG, and every figure in ``open_set.json`` under ``--out``;
- with ``--subject``: how often ``edge/faces/subject.py`` names a subject in photos with several
  faces and how often that is not the known subject (the centre face), for a grid of constants.

Run: python bench/open_set.py [--quick] [--subject] [--out DIR] [--data DIR] [--cache DIR]
``--quick`` runs the same code on 40 people + 40 strangers with K=10 only, timing 10 photos;
it writes nothing into the checkout (figures in a new temporary folder unless ``--out``).
Detections and encodings are cached in build/open-set (face_recognition's in
face_recognition.npz there); ``--quick`` only reads that cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from common import ROOT, analyzer, cpu, have_peer, models_dir, parse, speed_flags
from jetkiosk.edge.core.config import Config, load_config
from jetkiosk.edge.faces.analyzer import model_manifest
from jetkiosk.edge.faces.open_set import ThresholdRule, threshold_rule
from jetkiosk.export.encoder.open_set_eval import (
    STRANGER,
    OpenSetFaces,
    PhotoFaces,
    merge_aliases,
    open_set,
    runtime_faces,
    tpir_at_fpir,
)

FACENET, REID, PEER = "facenet-casia", "face-reid-0095", "face_recognition"
SEEDS = 5
ALL = 10**9  # K: everyone
FIXED_TAU = 1.0
PEER_TOLERANCE = 0.6  # face_recognition's default, on Euclidean distance
TARGETS = (0.001, 0.01)
MARGINS = (0.05, 0.1)
MEASURED_FPIR = (1e-3, 1e-2)
IMPOSTOR_PAIRS = 20_000
FAR = 1e-3
SPEED_PHOTOS = 30
QUICK_PEOPLE = QUICK_STRANGERS = 40
QUICK_SPEED_PHOTOS = 10
SUBJECT_RATIOS = (1.2, 1.5, 2.0, 3.0)  # 1.2: looser than the alternatives, to show the edge
SUBJECT_OFFSETS = (0.05, 0.15, 0.25, 0.35)
Row = Dict[str, float]


# ---------------------------------------------------------------- machine

def header() -> Dict[str, Any]:
    import onnxruntime

    model, flags = cpu()
    present = speed_flags(flags)
    info = {"cpu": model, "flags": present, "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}
    print(f"# CPU: {model}, {info['cores']} cores; "
          + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in present.items()))
    print(f"# python {info['python']}, onnxruntime {info['onnxruntime']}, numpy {np.__version__}")
    return info


# ---------------------------------------------------------------- photos and encodings

def rel(path: str) -> str:
    """A photo's name inside the data folder: people/<Name>/<file> or strangers/<file>."""
    parts = Path(path).parts
    return "/".join(parts[-2:] if parts[-2] == "strangers" else parts[-3:])


def all_photos(data: Path) -> List[str]:
    people = sorted(f"people/{p.parent.name}/{p.name}" for p in data.glob("people/*/*"))
    return people + sorted(f"strangers/{p.name}" for p in data.glob("strangers/*"))


def quick_subset(data: Path, people: int, strangers: int) -> Set[str]:
    """A fixed random set of ``people`` (all their photos) and ``strangers`` photos."""
    rng = np.random.default_rng(0)
    names = sorted(p.name for p in (data / "people").iterdir() if p.is_dir())
    singles = sorted(p.name for p in (data / "strangers").iterdir())
    chosen = rng.choice(names, min(people, len(names)), replace=False)
    out = {f"people/{n}/{p.name}" for n in chosen for p in (data / "people" / n).iterdir()}
    return out | {f"strangers/{s}" for s in rng.choice(singles, min(strangers, len(singles)),
                                                      replace=False)}


@dataclass
class Source:
    """The photos of this run: the whole data folder, or a subset of it (``--quick``)."""

    config: Config
    data: Path
    cache: Path
    subset: Optional[Set[str]]
    scratch: Path  # outside the repo: links to the subset's photos, and their caches
    _root: Optional[Path] = None

    def files(self) -> List[str]:
        return [f for f in all_photos(self.data) if self.subset is None or f in self.subset]

    def cached(self, encoder: str) -> Tuple[Path, Path]:
        """The detections and encodings files ``runtime_faces`` keeps for the whole folder."""
        det = model_manifest(self.config, self.config.models.detector, "face-detector")
        enc = model_manifest(self.config, encoder, "face-encoder")
        tag = f"{self.data.resolve().name}-{det.sha256[:12]}"
        return self.cache / f"{tag}.detections.json", self.cache / f"{tag}-{enc.fingerprint}.npz"

    def subset_root(self) -> Path:
        """A folder of links to the subset's photos (photos are never copied)."""
        if self._root is None:
            self._root = self.scratch / self.data.name
            for name in sorted(self.subset or ()):
                link = self._root / name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((self.data / name).resolve())
        return self._root

    def keep(self, files: Sequence[str]) -> List[int]:
        return [i for i, f in enumerate(files) if self.subset is None or rel(f) in self.subset]


def progress(what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"\r  {what}: {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)
    return report


def encoder_faces(source: Source, encoder: str) -> OpenSetFaces:
    """One encoding per photo; the whole folder's cache is filtered when it exists, else a
    subset is encoded on its own."""
    if source.subset is None or source.cached(encoder)[1].is_file():
        faces = runtime_faces(source.config, source.data, encoder, source.cache,
                              progress(f"{encoder}: detecting"))
        idx = source.keep(faces.files)
        return OpenSetFaces([faces.files[i] for i in idx], faces.labels[idx],
                            faces.encodings[idx])
    return runtime_faces(source.config, source.subset_root(), encoder, source.scratch,
                         progress(f"{encoder}: detecting"))


def photo_faces(source: Source) -> PhotoFaces:
    """Every detected face of every photo (the detections cache, or detected now)."""
    from jetkiosk.edge.faces.analyzer import configured_detector
    from jetkiosk.edge.runtime.backend import load_backend
    from jetkiosk.export.encoder.open_set_eval import detect_photos

    cached = source.cached(REID)[0]
    if cached.is_file():
        photos = PhotoFaces.load(cached)
        idx = source.keep(photos.files)
        return PhotoFaces([photos.files[i] for i in idx], photos.labels[idx],
                          photos.identities, [photos.shapes[i] for i in idx],
                          [photos.faces[i] for i in idx])
    config = source.config
    det = model_manifest(config, config.models.detector, "face-detector")
    detector = configured_detector(config, load_backend(config.models.backend, det, config))
    root = source.data if source.subset is None else source.subset_root()
    return detect_photos(root, detector, progress("detecting"))


# ---------------------------------------------------------------- face_recognition (dlib)

def import_peer() -> Tuple[Any, str]:
    """face_recognition, or None and why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import dlib
            import face_recognition
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the peer
        return None, (f"face_recognition not importable ({exc}); install: pip install dlib-bin "
                      "&& pip install --no-deps face_recognition==1.3.0 "
                      "face_recognition_models==0.3.0 'setuptools<81'")
    from importlib.metadata import version

    return face_recognition, (f"face_recognition {version('face_recognition')}, "
                              f"dlib {dlib.__version__}")


def peer_encode(fr: Any, path: Path) -> Optional[np.ndarray]:
    """The encoding of the face nearest the photo's centre (HOG detector), None without one."""
    image = fr.load_image_file(str(path))
    found = fr.face_locations(image)
    if not found:
        return None
    h, w = image.shape[:2]
    top, right, bottom, left = min(found, key=lambda b: ((b[1] + b[3]) / 2 - w / 2) ** 2
                                   + ((b[0] + b[2]) / 2 - h / 2) ** 2)
    return np.asarray(fr.face_encodings(image, [(top, right, bottom, left)])[0], np.float64)


def _save_peer(path: Path, stored: Dict[str, Optional[np.ndarray]]) -> None:
    names = sorted(stored)
    encodings = np.stack([stored[n] if stored[n] is not None else np.zeros(128)
                          for n in names]) if names else np.zeros((0, 128))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, files=np.array(names), found=np.array([stored[n] is not None for n in names]),
             encodings=encodings)


def peer_encodings(fr: Any, data: Path, files: Sequence[str], cache: Path
                   ) -> Dict[str, Optional[np.ndarray]]:
    """face_recognition's encoding of each photo, cached by name in ``cache``."""
    stored: Dict[str, Optional[np.ndarray]] = {}
    if cache.is_file():
        with np.load(cache) as npz:
            stored = {str(f): (e if ok else None)
                      for f, ok, e in zip(npz["files"], npz["found"], npz["encodings"])}
    todo = [f for f in files if f not in stored]
    report = progress("face_recognition: encoding")
    for n, name in enumerate(todo, 1):
        stored[name] = peer_encode(fr, data / name)
        report(n, len(todo))
        if n % 200 == 0 or n == len(todo):
            _save_peer(cache, stored)
    return {f: stored[f] for f in files}


# ---------------------------------------------------------------- one gallery draw, any metric

@dataclass
class Encoded:
    """An encoder's distances between the reference photos (inf where it found no face)."""

    name: str
    labels: np.ndarray
    found: np.ndarray
    dist: np.ndarray

    @property
    def people(self) -> np.ndarray:
        return OpenSetFaces([], self.labels, np.zeros((0, 1))).people


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(2.0 - 2.0 * a @ b.T, 0.0)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def encoded(name: str, reference: OpenSetFaces, lookup: Dict[str, Optional[np.ndarray]],
            metric: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Encoded:
    names = [rel(f) for f in reference.files]
    found = np.array([lookup.get(n) is not None for n in names])
    dim = next(len(v) for v in lookup.values() if v is not None)
    enc = np.stack([lookup[n] if ok else np.zeros(dim) for n, ok in zip(names, found)])
    dist = metric(enc.astype(np.float64), enc.astype(np.float64))
    dist[~found, :] = np.inf
    dist[:, ~found] = np.inf
    return Encoded(name, reference.labels, found, dist)


@dataclass
class Draw:
    """Nearest enrolled person for every probe of one gallery."""

    genuine_d1: np.ndarray
    genuine_right: np.ndarray
    stranger_d1: np.ndarray

    def tpir(self, tau: float) -> float:
        return float(np.mean(self.genuine_right & (self.genuine_d1 <= tau)))

    def fpir(self, tau: float) -> float:
        return float(np.mean(self.stranger_d1 <= tau))


def chosen_people(people: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The gallery's people, drawn as ``open_set_eval.enrolled_split`` draws them."""
    if k == len(people):
        return people
    return np.random.default_rng(seed).choice(people, k, replace=False)


def gallery_draw(enc: Encoded, k: int, seed: int) -> Draw:
    """Enroll each chosen person's first photo with a face; everyone else's photos are
    strangers; a probe without a face is a miss (or not named)."""
    chosen = chosen_people(enc.people, k, seed)
    enrolled = []
    for person in chosen:
        photos = np.flatnonzero(enc.labels == person)
        with_face = photos[enc.found[photos]]
        enrolled.append(int(with_face[0] if len(with_face) else photos[0]))
    member = np.isin(enc.labels, chosen)
    genuine = np.setdiff1d(np.flatnonzero(member), enrolled)
    strangers = np.flatnonzero(~member)
    to_gallery = enc.dist[np.ix_(genuine, enrolled)]
    best = to_gallery.argmin(1)
    d1 = to_gallery[np.arange(len(genuine)), best]
    right = (enc.labels[np.array(enrolled)][best] == enc.labels[genuine]) & np.isfinite(d1)
    return Draw(d1, right, enc.dist[np.ix_(strangers, enrolled)].min(1))


def seeds_for(k: int, people: int) -> range:
    return range(1 if k >= people else SEEDS)


def peer_row(enc: Encoded, k: int, tau: float) -> Row:
    draws = [gallery_draw(enc, k, s) for s in seeds_for(k, len(enc.people))]
    return {"tpir": float(np.mean([d.tpir(tau) for d in draws])),
            "fpir": float(np.mean([d.fpir(tau) for d in draws])), "tau": tau,
            "genuine": float(np.mean([len(d.genuine_d1) for d in draws])),
            "strangers": float(np.mean([len(d.stranger_d1) for d in draws]))}


def peer_tpir_at_fpir(enc: Encoded, k: int, fpir: float) -> float:
    """As ``open_set_eval.tpir_at_fpir``: tau set from the stranger probes themselves."""
    out = []
    for seed in seeds_for(k, len(enc.people)):
        draw = gallery_draw(enc, k, seed)
        out.append(draw.tpir(float(np.quantile(draw.stranger_d1, fpir))))
    return float(np.mean(out))


# ---------------------------------------------------------------- our rules through open_set

def rule_row(faces: OpenSetFaces, k: int, threshold: Callable[[int], float],
             margin: float = 0.0) -> Row:
    results = [open_set(faces, k, threshold, s, margin)
               for s in seeds_for(k, len(faces.people))]
    return {"tpir": float(np.mean([r.tpir for r in results])),
            "fpir": float(np.mean([r.fpir for r in results])),
            "tau": float(np.mean([r.threshold for r in results])),
            "genuine": float(np.mean([r.genuine for r in results])),
            "strangers": float(np.mean([r.strangers for r in results]))}


def rule_tau(rule: ThresholdRule) -> Callable[[int], float]:
    return lambda k: rule.base(None, k)[0]


def fixed_tau(tau: float) -> Callable[[int], float]:
    return lambda _: tau


@dataclass
class Setup:
    """Everything the tables need: merged faces per encoder, their rules, the peer."""

    faces: Dict[str, OpenSetFaces]
    rules: Dict[str, ThresholdRule]
    ks: List[int]
    encoded: Dict[str, Encoded] = field(default_factory=dict)
    peer_note: str = ""


def rule_rows(setup: Setup) -> Dict[str, Dict[int, Row]]:
    fn, reid = setup.faces[FACENET], setup.faces[REID]
    rule = setup.rules[REID]
    default = rule.target_fpir
    plans: List[Tuple[str, OpenSetFaces, Callable[[int], float], float]] = [
        (f"{FACENET}  fixed tau {FIXED_TAU}", fn, fixed_tau(FIXED_TAU), 0.0),
        (f"{FACENET}  target FPIR {setup.rules[FACENET].target_fpir:g}", fn,
         rule_tau(setup.rules[FACENET]), 0.0),
        (f"{REID} target FPIR {default:g} (default)", reid, rule_tau(rule), 0.0)]
    plans += [(f"{REID} target FPIR {t:g}", reid,
               rule_tau(dataclasses.replace(rule, target_fpir=t)), 0.0) for t in TARGETS]
    plans.append((f"{REID} fixed tau {FIXED_TAU}", reid, fixed_tau(FIXED_TAU), 0.0))
    plans += [(f"{REID} default + margin {m:g}", reid, rule_tau(rule), m) for m in MARGINS]
    table = {label: {k: rule_row(faces, min(k, len(faces.people)), tau, margin)
                     for k in setup.ks} for label, faces, tau, margin in plans}
    if PEER in setup.encoded:
        peer = setup.encoded[PEER]
        table[f"{PEER} tolerance {PEER_TOLERANCE} (Euclid)"] = {
            k: peer_row(peer, min(k, len(peer.people)), PEER_TOLERANCE) for k in setup.ks}
    return table


# ---------------------------------------------------------------- mean template vs best-of

def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def two_photo_draw(faces: OpenSetFaces, chosen: np.ndarray, tau: float, tau2: float
                   ) -> Dict[str, Row]:
    """Two photos enrolled per chosen person, the rest probe; ways to compare, at the
    one-photo tau and (the shipped rule) the mean template at its two-photo tau."""
    photos = [np.flatnonzero(faces.labels == p) for p in chosen]
    first = faces.encodings[[p[0] for p in photos]]
    second = faces.encodings[[p[1] for p in photos]]
    genuine = np.concatenate([p[2:] for p in photos])
    strangers = np.flatnonzero(~np.isin(faces.labels, chosen))
    mean = normalised(first + second)
    ways = {"first photo only": (lambda x: squared_l2(x, first), tau),
            "mean template, one-photo tau": (lambda x: squared_l2(x, mean), tau),
            "best of 2 encodings": (lambda x: np.minimum(squared_l2(x, first),
                                                         squared_l2(x, second)), tau),
            "mean template, 2-photo tau (shipped)": (lambda x: squared_l2(x, mean), tau2)}
    out = {}
    for way, (dist, limit) in ways.items():
        g = dist(faces.encodings[genuine])
        best = g.argmin(1)
        right = (chosen[best] == faces.labels[genuine]) & (g.min(1) <= limit)
        named = dist(faces.encodings[strangers]).min(1) <= limit
        out[way] = {"tpir": float(right.mean()), "fpir": float(named.mean()), "tau": limit,
                    "genuine": float(len(genuine)), "strangers": float(len(strangers))}
    return out


def two_photo_rows(faces: OpenSetFaces, rule: ThresholdRule, ks: Sequence[int]
                   ) -> Tuple[Dict[str, Dict[int, Row]], int]:
    """Mean template vs best-of at the default rule's tau for K; K=all: every person with
    three photos or more."""
    counts = {p: int((faces.labels == p).sum()) for p in faces.people}
    eligible = np.array([p for p in faces.people if counts[p] >= 3])
    table: Dict[str, Dict[int, Row]] = {}
    for k in ks:
        n = min(k, len(eligible))
        tau = rule.base(None, n)[0]
        draws = [two_photo_draw(faces, chosen_people(eligible, n, s), tau,
                                rule.for_photos(None, tau, n, 2))
                 for s in seeds_for(n, len(eligible))]
        for way in draws[0]:
            table.setdefault(way, {})[k] = {key: float(np.mean([d[way][key] for d in draws]))
                                            for key in draws[0][way]}
    return table, len(eligible)


# ---------------------------------------------------------------- 1:1 verification

def impostor_pairs(labels: np.ndarray, n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` distinct random pairs of photos of different people (strangers differ from all)."""
    own = labels.copy()
    strangers = own == STRANGER
    own[strangers] = own.max() + 1 + np.arange(strangers.sum())
    i, j = np.triu_indices(len(own), 1)
    differ = np.flatnonzero(own[i] != own[j])
    pick = np.sort(np.random.default_rng(seed).choice(differ, min(n, len(differ)),
                                                      replace=False))
    return i[pick], j[pick]


def genuine_pairs(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(labels), 1)
    same = (labels[i] == labels[j]) & (labels[i] != STRANGER)
    return i[same], j[same]


def verification(enc: Encoded, genuine: Tuple[np.ndarray, np.ndarray],
                 impostor: Tuple[np.ndarray, np.ndarray]) -> Dict[str, Any]:
    """TAR at FAR 1e-3: accept below the (FAR * n + 1)-th closest impostor pair."""
    gen = np.sort(enc.dist[genuine])
    imp = np.sort(enc.dist[impostor])
    allowed = int(FAR * len(imp))
    threshold = float(imp[allowed]) if allowed < len(imp) else np.inf
    far = np.arange(1, len(imp) + 1) / len(imp)
    tar_curve = np.searchsorted(gen, imp, side="right") / len(gen)
    return {"tar": float(np.mean(gen < threshold)), "threshold": threshold,
            "genuine": len(gen), "impostor": len(imp),
            "curve": {"far": far, "tar": tar_curve}}


# ---------------------------------------------------------------- curves

def det_curve(enc: Encoded, k: int) -> Dict[str, np.ndarray]:
    """FNIR against FPIR over thresholds, averaged over the gallery draws."""
    draws = [gallery_draw(enc, k, s) for s in seeds_for(k, len(enc.people))]
    finite = np.concatenate([d.stranger_d1 for d in draws] + [d.genuine_d1 for d in draws])
    taus = np.linspace(0.0, float(finite[np.isfinite(finite)].max()), 4000)
    fpir = np.mean([[d.fpir(t) for t in taus] for d in draws], axis=0)
    fnir = 1.0 - np.mean([[d.tpir(t) for t in taus] for d in draws], axis=0)
    return {"tau": taus, "fpir": fpir, "fnir": fnir}


def plot_det(curves: Dict[str, Dict[str, np.ndarray]], points: Dict[str, Row], k: int,
             path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for name, c in curves.items():
        keep = c["fpir"] > 0
        line, = ax.plot(c["fpir"][keep], c["fnir"][keep], label=name)
        if name in points:
            p = points[name]
            ax.plot([max(p["fpir"], 1e-4)], [1 - p["tpir"]], "o", color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="FPIR (strangers given a name)",
           ylabel="FNIR (people not given their name)", title=f"DET, lfw-calib, K={k}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="dot: the shipped rule / tolerance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for name, r in results.items():
        ax.plot(r["curve"]["far"], r["curve"]["tar"], label=f"{name} (TAR {r['tar']:.3f})")
    ax.axvline(FAR, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="FAR", ylabel="TAR", ylim=(0, 1),
           title="1:1 verification, lfw-calib (all genuine pairs, 20k impostor pairs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- speed

def speed(source: Source, fr: Any, photos: int) -> Dict[str, float]:
    """Median seconds per photo for detect + embed, engines run in turn on each photo."""
    from jetkiosk.edge.core.images import load_image

    names = [f for f in source.files() if f.startswith("people/")]
    picked = np.random.default_rng(0).choice(names, min(photos, len(names)), replace=False)
    paths = [source.data / p for p in picked]
    engines: Dict[str, Callable[[int], object]] = {}
    for encoder in (REID, FACENET):
        a = analyzer(f"models.encoder={encoder}")
        images = [load_image(p) for p in paths]
        engines[f"jetkiosk {encoder}"] = lambda i, a=a, images=images: a.analyze(images[i])
    if fr is not None:
        rgb = [fr.load_image_file(str(p)) for p in paths]
        engines[PEER] = lambda i: fr.face_encodings(rgb[i], fr.face_locations(rgb[i]))
    times: Dict[str, List[float]] = {name: [] for name in engines}
    for name, run in engines.items():
        run(0)  # warm-up
    for i in range(len(paths)):
        for name, run in engines.items():
            start = time.perf_counter()
            run(i)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# ---------------------------------------------------------------- subject rule

def offsets() -> List[Any]:
    """The centre offsets to try, in the form ``subject`` takes (one share, or x and y)."""
    from jetkiosk.edge.faces import subject as rule

    shipped = rule.MAX_CENTRE_OFFSET
    if isinstance(shipped, (int, float)):
        return sorted(set(SUBJECT_OFFSETS) | {shipped})
    return [(o, o) for o in SUBJECT_OFFSETS] + [tuple(shipped)]


def subject_grid(photos: PhotoFaces) -> Dict[str, Any]:
    """For photos with several faces: how many each (ratio, offset) accepts, and how many of
    those it gives to a face other than the centre face (the known subject)."""
    from jetkiosk.edge.faces import subject as rule

    several = [i for i, f in enumerate(photos.faces) if len(f) > 1]
    shipped = (rule.MIN_AREA_RATIO, rule.MAX_CENTRE_OFFSET)
    grid = []
    for ratio in sorted(set(SUBJECT_RATIOS) | {rule.MIN_AREA_RATIO}):
        for offset in offsets():
            accepted = wrong = 0
            for i in several:
                chosen = rule.subject(photos.faces[i], tuple(photos.shapes[i]), ratio, offset)
                if chosen is not None:
                    accepted += 1
                    wrong += photos.faces[i][chosen] is not photos.centre_face(i)
            grid.append({"min_area_ratio": ratio, "max_centre_offset": offset,
                         "accepted": accepted, "wrong": wrong, "right": accepted - wrong,
                         "shipped": (ratio, offset) == shipped})
    return {"photos": len(photos.files), "several": len(several), "grid": grid}


# ---------------------------------------------------------------- printing

def print_table(title: str, table: Dict[str, Dict[int, Row]], ks: Sequence[int],
                names: Dict[int, str]) -> None:
    print(f"\n## {title}")
    print(f"{'':42s}" + "".join(f"{names[k]:>24s}" for k in ks))
    print(f"{'':42s}" + f"{'TPIR':>9s}{'FPIR':>8s}{'tau':>7s}" * len(ks))
    for label, row in table.items():
        print(f"{label:42s}" + "".join(f"{row[k]['tpir']:9.3f}{row[k]['fpir']:8.4f}"
                                       f"{row[k]['tau']:7.3f}" for k in ks))


def print_probes(rows: Dict[str, Dict[int, Row]], ks: Sequence[int],
                 names: Dict[int, str]) -> None:
    print("\n## probes per gallery (genuine / stranger)")
    print(f"{'':42s}" + "".join(f"{names[k]:>24s}" for k in ks))
    for label, row in rows.items():
        print(f"{label:42s}" + "".join(
            f"{row[k]['genuine']:>15.0f} / {row[k]['strangers']:<6.0f}" for k in ks))


def print_taus(setup: Setup, ks: Sequence[int]) -> None:
    print("\n## the target-FPIR rule's tau(K) and where it comes from")
    for encoder in (FACENET, REID):
        rule = setup.rules[encoder]
        targets = [rule.target_fpir] + (list(TARGETS) if encoder == REID else [])
        for t in targets:
            r = dataclasses.replace(rule, target_fpir=t)
            for k in ks:
                n = min(k, len(setup.faces[encoder].people))
                tau, how = r.base(None, n)
                print(f"{encoder:15s} target {t:<6g} K={n:<4d} tau={tau:.4f}  {how}")


def print_speed(seconds: Dict[str, float], n: int) -> None:
    print(f"\n## detect + embed per photo (median of {n} lfw-calib photos, engines in turn)")
    for name, s in seconds.items():
        print(f"{name:42s}{s * 1000:9.1f} ms")
    if PEER in seconds:
        ours = seconds[f"jetkiosk {REID}"]
        print(f"ratio face_recognition / jetkiosk {REID}: {seconds[PEER] / ours:.1f}x")


def offset_text(offset: Any) -> str:
    return f"x{offset[0]:g} y{offset[1]:g}" if isinstance(offset, tuple) else f"{offset:g}"


def print_subject(result: Dict[str, Any]) -> None:
    print(f"\n## subject rule: {result['several']} of {result['photos']} photos have several "
          "faces (subject = centre face); cells: accepted photos / wrong faces among them")
    grid = result["grid"]
    columns = list(dict.fromkeys(offset_text(g["max_centre_offset"]) for g in grid))
    print(f"{'MIN_AREA_RATIO  MAX_CENTRE_OFFSET':34s}" + "".join(f"{c:>13s}" for c in columns))
    for ratio in dict.fromkeys(g["min_area_ratio"] for g in grid):
        cells = [g for g in grid if g["min_area_ratio"] == ratio]
        print(f"{ratio:<34g}" + "".join(
            f"{'*' if g['shipped'] else '':>3s}{g['accepted']:5d} /{g['wrong']:3d}" for g in cells))
    shipped = next((g for g in grid if g["shipped"]), None)
    if shipped:
        print(f"shipped (*): recovers {shipped['right']} photos, admits {shipped['wrong']} wrong "
              f"faces; refuses {result['several'] - shipped['accepted']}")


# ---------------------------------------------------------------- main

def prepare_setup(source: Source, ks: List[int], info: Dict[str, Any]) -> Setup:
    raw = {e: encoder_faces(source, e) for e in (FACENET, REID)}
    total = len(source.files())
    faces, rules = {}, {}
    for encoder, f in raw.items():
        faces[encoder], merged = merge_aliases(f)
        rules[encoder] = threshold_rule(source.config.gallery,
                                        model_manifest(source.config, encoder, "face-encoder"))
        info[encoder] = {"photos": total, "no_face": total - len(f.files),
                         "aliases": len(merged), "people": len(faces[encoder].people)}
        print(f"# {encoder}: {len(f.files)} of {total} photos with a face, {len(merged)} alias "
              f"pairs merged, {len(faces[encoder].people)} people")
    setup = Setup(faces, rules, ks)
    reference = faces[REID]
    for encoder in (FACENET, REID):
        lookup = {rel(n): e for n, e in zip(raw[encoder].files, raw[encoder].encodings)}
        setup.encoded[encoder] = encoded(encoder, reference, lookup, squared_l2)
    return setup


def add_peer(setup: Setup, source: Source, fr: Any, info: Dict[str, Any]) -> None:
    reference = setup.faces[REID]
    names = [rel(f) for f in reference.files]
    cache = source.cache / "face_recognition.npz"
    if source.subset is not None:  # --quick: read the cache, write only to the scratch folder
        scratch = source.scratch / cache.name
        if cache.is_file():
            shutil.copyfile(cache, scratch)
        cache = scratch
    lookup = peer_encodings(fr, source.data, names, cache)
    peer = encoded(PEER, reference, lookup, euclidean)
    setup.encoded[PEER] = peer
    missing = ~peer.found
    info[PEER] = {"photos": len(names), "no_face": int(missing.sum()),
                  "no_face_people": int((missing & (peer.labels != STRANGER)).sum()),
                  "no_face_strangers": int((missing & (peer.labels == STRANGER)).sum())}
    print(f"# {PEER}: no face found in {missing.sum()} of {len(names)} photos "
          f"({info[PEER]['no_face_people']} of people, {info[PEER]['no_face_strangers']} "
          "strangers): misses as genuine probes, not named as strangers")


def measured_rows(setup: Setup) -> Dict[str, Dict[str, float]]:
    out = {}
    for encoder in (FACENET, REID):
        faces = setup.faces[encoder]
        ks = [min(k, len(faces.people)) for k in setup.ks]
        for fpir in MEASURED_FPIR:
            got = tpir_at_fpir(faces, ks, fpir, SEEDS)
            out.setdefault(encoder, {}).update(
                {f"K={k} FPIR={fpir:g}": got[n] for k, n in zip(setup.ks, ks)})
    if PEER in setup.encoded:
        peer = setup.encoded[PEER]
        out[PEER] = {f"K={k} FPIR={fpir:g}": peer_tpir_at_fpir(peer, min(k, len(peer.people)),
                                                              fpir)
                     for k in setup.ks for fpir in MEASURED_FPIR}
    return out


def print_measured(rows: Dict[str, Dict[str, float]], ks: Sequence[int],
                   names: Dict[int, str]) -> None:
    print("\n## TPIR at a measured FPIR (tau set from the stranger probes themselves)")
    print(f"{'':42s}" + "".join(f"{names[k]:>20s}" for k in ks))
    print(f"{'':42s}" + "".join(f"{f'@{f:g}':>10s}" for _ in ks for f in MEASURED_FPIR))
    for name, row in rows.items():
        print(f"{name:42s}" + "".join(f"{row[f'K={k} FPIR={f:g}']:10.3f}"
                                      for k in ks for f in MEASURED_FPIR))


def run_verification(setup: Setup, out: Path) -> Dict[str, Dict[str, Any]]:
    labels = setup.faces[REID].labels
    genuine, impostor = genuine_pairs(labels), impostor_pairs(labels, IMPOSTOR_PAIRS, 0)
    results = {name: verification(enc, genuine, impostor) for name, enc in setup.encoded.items()}
    print(f"\n## 1:1 verification: TAR at FAR {FAR:g} ({len(genuine[0])} genuine pairs, "
          f"{len(impostor[0])} random impostor pairs, seed 0)")
    for name, r in results.items():
        print(f"{name:42s}TAR {r['tar']:.3f}  (accept distance < {r['threshold']:.4f})")
    plot_roc(results, out / "roc.png")
    return results


def run_det(setup: Setup, k: int, table: Dict[str, Dict[int, Row]], out: Path
            ) -> Dict[str, Any]:
    points = {FACENET: table[f"{FACENET}  target FPIR {setup.rules[FACENET].target_fpir:g}"],
              REID: table[f"{REID} target FPIR {setup.rules[REID].target_fpir:g} (default)"]}
    points = {name: rows[k] for name, rows in points.items() if k in rows}
    peer_label = f"{PEER} tolerance {PEER_TOLERANCE} (Euclid)"
    if peer_label in table and k in table[peer_label]:
        points[PEER] = table[peer_label][k]
    curves = {name: det_curve(enc, min(k, len(enc.people))) for name, enc in setup.encoded.items()}
    plot_det(curves, points, k, out / f"det-k{k}.png")
    return curves


def by_k(table: Dict[str, Dict[int, Row]], names: Dict[int, str]) -> Dict[str, Dict[str, Row]]:
    return {label: {names[k]: row for k, row in rows.items()} for label, rows in table.items()}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", action="store_true",
                        help="also evaluate the subject rule on photos with several faces")
    parser.add_argument("--out", type=Path,
                        help="figures (default: build/bench-open-set; --quick: a temporary folder)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "faces" / "lfw-calib")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "open-set")
    args = parse(parser, f"{QUICK_PEOPLE} people + {QUICK_STRANGERS} strangers, K=10 only, "
                 f"{QUICK_SPEED_PHOTOS} photos timed")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="open-set-quick-")) if args.quick else \
            ROOT / "build" / "bench-open-set"
    return args


def main() -> None:
    args = arguments()
    started = time.perf_counter()
    if not (args.data / "people").is_dir():
        sys.exit(f"{args.data}: no lfw-calib photos (people/<Name>/) there")
    args.out.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {"machine": header(), "quick": args.quick}
    config = load_config(overrides=[f"models.dir={models_dir()}"])
    subset = quick_subset(args.data, QUICK_PEOPLE, QUICK_STRANGERS) if args.quick else None
    with tempfile.TemporaryDirectory(prefix="open-set-bench-") as scratch:
        source = Source(config, args.data, args.cache, subset, Path(scratch))
        run_all(args, source, report)
    report["seconds"] = time.perf_counter() - started
    (args.out / "open_set.json").write_text(json.dumps(jsonable(report), indent=1))
    print(f"\n# {report['seconds']:.0f} s; figures in {args.out}")


def run_all(args: argparse.Namespace, source: Source, report: Dict[str, Any]) -> None:
    fr, note = import_peer() if have_peer("face_recognition", PEER) else (None, "not installed")
    print(f"# peer: {note}")
    report["data"] = {}
    setup = prepare_setup(source, [10] if args.quick else [10, 100, ALL], report["data"])
    if fr is not None:
        add_peer(setup, source, fr, report["data"])
    people = len(setup.faces[REID].people)
    names = {k: f"K={k}" if k < people else f"K=all ({people})" for k in setup.ks}
    print_taus(setup, setup.ks)
    table = rule_rows(setup)
    print_table("open-set identification (mean of 5 galleries for K < all)", table, setup.ks,
                names)
    two, eligible = two_photo_rows(setup.faces[REID], setup.rules[REID], setup.ks)
    two_names = {k: f"K={min(k, eligible)}" + (" (all)" if k >= eligible else "")
                 for k in setup.ks}
    print_table(f"{REID}, 2 photos enrolled per person ({eligible} people with 3+ photos), "
                "default rule's tau(K)", two, setup.ks, two_names)
    probes = {FACENET: table[f"{FACENET}  fixed tau {FIXED_TAU}"],
              REID: table[f"{REID} fixed tau {FIXED_TAU}"],
              f"{REID}, 2-photo variant": two["mean template, 2-photo tau (shipped)"]}
    probes.update({k: v for k, v in table.items() if k.startswith(PEER)})
    print_probes(probes, setup.ks, names)
    measured = measured_rows(setup)
    print_measured(measured, setup.ks, names)
    report.update(open_set=by_k(table, names), two_photos=by_k(two, two_names),
                  tpir_at_fpir=measured,
                  verification=run_verification(setup, args.out),
                  det=run_det(setup, 10 if args.quick else 100, table, args.out))
    photos = QUICK_SPEED_PHOTOS if args.quick else SPEED_PHOTOS
    report["speed"] = speed(source, fr, photos)
    print_speed(report["speed"], photos)
    if args.subject:
        report["subject"] = subject_grid(photo_faces(source))
        print_subject(report["subject"])


if __name__ == "__main__":
    main()
