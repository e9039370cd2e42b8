"""Loading and saving a gallery sealed with AES-256-GCM against the same gallery in plaintext.

10,000 people with 3 encodings each (256-d, face-reid-0095's width), alternated run by run so
that machine noise falls on both alike; the figure that matters is the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from common import machine, parse


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "1,000 people, 3 rounds")
    from jetkiosk.edge.core.config import GalleryConfig
    from jetkiosk.edge.faces.gallery import Gallery, load_gallery

    people, rounds = (1000, 3) if args.quick else (10_000, 7)
    rng = np.random.default_rng(0)
    gallery = Gallery("face-reid-0095", "bench", 256)
    for i in range(people):
        rows = rng.normal(size=(3, 256)).astype(np.float32)
        gallery.add(f"person {i:05d}", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    print(f"# gallery of {people} people x 3 encodings (256-d), {rounds} rounds, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        forms = {"plaintext": GalleryConfig(encrypt=False), "sealed": GalleryConfig()}
        paths = {form: Path(tmp) / form / "gallery.npz" for form in forms}
        times: Dict[str, Dict[str, List[float]]] = {f: {"save": [], "load": []} for f in forms}
        for _ in range(rounds):
            for form, limits in forms.items():
                gallery.limits = limits
                path = paths[form]
                times[form]["save"].append(timed(lambda p=path: gallery.save(p)))
                times[form]["load"].append(timed(lambda p=path, lim=limits: load_gallery(
                    p, limits=lim)))
        size = {form: path.stat().st_size for form, path in paths.items()}
    median = {f: {op: statistics.median(t) * 1000 for op, t in ops.items()}
              for f, ops in times.items()}
    for form in forms:
        print(f"{form:10s} save {median[form]['save']:7.1f} ms   load "
              f"{median[form]['load']:7.1f} ms   {size[form] / 1e6:6.2f} MB")
    for op in ("save", "load"):
        print(f"ratio sealed / plaintext, {op}: "
              f"{median['sealed'][op] / median['plaintext'][op]:.2f}x")


if __name__ == "__main__":
    main()
