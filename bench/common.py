"""Helpers shared by the benchmarks: models, the shared photos, timing."""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "faces"
MODELS = ROOT / "build" / "bench-models"


def models_dir() -> Path:
    from jetkiosk.export.prepare import prepare

    prepare(MODELS, progress=lambda _: None)
    return MODELS


def analyzer(*overrides: str):
    from jetkiosk.edge.config import load_config
    from jetkiosk.edge.faces import FaceAnalyzer

    return FaceAnalyzer(load_config(overrides=[f"models.dir={models_dir()}", *overrides]))


def people() -> Tuple[Dict[str, List[Path]], Dict[Path, Set[str]]]:
    """Gallery photos per person, and each probe photo with the enrolled people in it."""
    base = SHARED / "people"
    gallery = {p.name: sorted(p.iterdir()) for p in sorted((base / "gallery").iterdir())}
    with open(base / "probes/labels.csv") as fh:
        probes = {base / "probes" / r["file"]: set(r["people"].split(";"))
                  for r in csv.DictReader(fh)}
    return gallery, probes


def median_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    return f"{os.cpu_count()} CPU cores ({os.uname().machine})"
