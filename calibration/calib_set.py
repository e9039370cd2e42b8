"""Calibration sets: real inputs, preprocessed by the runtime's own code, saved with a manifest.

Items come from image folders, video files and folders of captured frames, are chosen with a
seeded generator and listed in the set's manifest, so a set can be rebuilt exactly. The
model's inputs are captured by running the runtime itself (detector, aligner and encoder, or
the style network) with a recording backend, so calibration sees byte for byte what the
device feeds: aligned face crops for the encoder, scaled and padded frames for the detector,
processing-size frames for style networks.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.core.images import IMAGE_SUFFIXES, load_photo
from jetkiosk.edge.runtime.backend import Backend

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


@dataclass(frozen=True)
class Item:
    """One input picture: a file, and a frame number for videos (-1 for images)."""

    path: str
    frame: int = -1

    def as_dict(self) -> Dict[str, object]:
        return {"path": self.path, "frame": self.frame}


def candidates(sources: Sequence[Path], video_stride: int = 5) -> List[Item]:
    """Every usable picture in ``sources`` (files or folders, searched recursively), in
    a stable order; every ``video_stride``-th frame of each video."""
    items: List[Item] = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise ModelError(f"calibration source {source}: no such file or folder")
        files = sorted(Path(root) / name for root, _, names in os.walk(source, followlinks=True)
                       for name in names) if source.is_dir() else [source]
        for path in files:
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                items.append(Item(str(path)))
            elif suffix in VIDEO_SUFFIXES:
                capture = cv2.VideoCapture(str(path))
                count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                capture.release()
                if count <= 0:
                    raise ModelError(f"calibration source {path}: not a readable video")
                items.extend(Item(str(path), i) for i in range(0, count, video_stride))
    if not items:
        raise ModelError(f"calibration sources {[str(s) for s in sources]}: no images or videos")
    return items


def choose(items: List[Item], count: int, seed: int) -> List[Item]:
    """``count`` items drawn without replacement by a seeded generator (all if fewer)."""
    if count >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(items, count), key=lambda i: (i.path, i.frame))


def frame(item: Item) -> np.ndarray:
    """The item's BGR picture (a photo as the detector needs it, or a video frame)."""
    if item.frame < 0:
        return load_photo(Path(item.path))
    capture = cv2.VideoCapture(item.path)
    capture.set(cv2.CAP_PROP_POS_FRAMES, item.frame)
    ok, image = capture.read()
    capture.release()
    if not ok:
        raise ModelError(f"{item.path}: cannot read frame {item.frame}")
    return image


class RecordingBackend(Backend):
    """Passes every call through to ``inner`` and keeps a copy of what was fed to it."""

    def __init__(self, inner: Backend):
        super().__init__(inner.manifest)
        self.inner = inner
        self.feeds: List[Dict[str, np.ndarray]] = []

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.inner.run(feeds)

    def take(self) -> List[Dict[str, np.ndarray]]:
        feeds, self.feeds = self.feeds, []
        return feeds

    def close(self) -> None:
        self.inner.close()


# A capture function runs the runtime on one picture and returns the model inputs it made,
# one dict per sample (batch dimension 1).
Capture = Callable[[np.ndarray], List[Dict[str, np.ndarray]]]


def split_batches(feeds: List[Dict[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
    """Batched calls (several faces at once) -> one sample per dict."""
    samples: List[Dict[str, np.ndarray]] = []
    for feed in feeds:
        size = len(next(iter(feed.values())))
        samples.extend({k: v[i:i + 1] for k, v in feed.items()} for i in range(size))
    return samples


@dataclass
class CalibrationSet:
    """Samples (input name -> array with batch 1) and the manifest that says where they came
    from."""

    model: str
    samples: List[Dict[str, np.ndarray]]
    info: Dict[str, object]
    source: Optional[Path] = None  # the file it was loaded from

    def save(self, path: Path) -> None:
        """``path``.npz with the arrays and ``path``.json with the manifest."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{i:05d}/{name}": value for i, sample in enumerate(self.samples)
                  for name, value in sample.items()}
        np.savez_compressed(path.with_suffix(".npz"), **arrays)  # type: ignore[arg-type]
        path.with_suffix(".json").write_text(json.dumps(self.info, indent=2) + "\n")

    def batches(self, name: str, batch_size: int) -> Iterator[np.ndarray]:
        """Input ``name`` stacked ``batch_size`` at a time (samples of one shape only)."""
        shapes = {s[name].shape for s in self.samples}
        if len(shapes) != 1:
            raise ModelError(f"calibration set for {self.model}: input {name} has several shapes "
                             f"{sorted(shapes)}; build it with one --frame-size")
        for start in range(0, len(self.samples) - batch_size + 1, batch_size):
            yield np.concatenate([s[name] for s in self.samples[start:start + batch_size]])


def load_set(path: Path) -> CalibrationSet:
    """Read a set written by ``CalibrationSet.save``; ModelError when either file is bad."""
    path = Path(path)
    try:
        info = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz")) as data:
            grouped: Dict[str, Dict[str, np.ndarray]] = {}
            for key in data.files:
                index, name = key.split("/", 1)
                grouped.setdefault(index, {})[name] = data[key]
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: calibration set missing ({exc.filename})") from None
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(f"{path}: calibration set unreadable ({exc})") from exc
    return CalibrationSet(str(info.get("model", "?")), [grouped[k] for k in sorted(grouped)], info,
                          path)


def build_set(model: str, capture: Capture, sources: Sequence[Path], count: int, seed: int,
              frame_size: Optional[Tuple[int, int]] = None,
              progress: Optional[Callable[[int, int], None]] = None) -> CalibrationSet:
    """Draw ``count`` pictures from ``sources`` with ``seed`` and record the model inputs the
    runtime makes from them. ``frame_size`` (w, h): resize each picture to it first, as a
    camera of that resolution would deliver it (one input shape for TensorRT calibration)."""
    chosen = choose(candidates(sources), count, seed)
    samples: List[Dict[str, np.ndarray]] = []
    listed = []
    for n, item in enumerate(chosen):
        image = frame(item)
        if frame_size is not None:
            image = cv2.resize(image, frame_size, interpolation=cv2.INTER_AREA)
        made = split_batches(capture(image))
        samples.extend(made)
        listed.append({**item.as_dict(), "samples": len(made)})
        if progress is not None:
            progress(n + 1, len(chosen))
    if not samples:
        raise ModelError(f"calibration set for {model}: the runtime made no inputs from "
                         f"{len(chosen)} pictures (no faces found?)")
    info = {"model": model, "seed": seed, "count": count, "pictures": len(chosen),
            "samples": len(samples), "frame_size": list(frame_size) if frame_size else None,
            "sources": [str(s) for s in sources], "items": listed}
    return CalibrationSet(model, samples, info)
