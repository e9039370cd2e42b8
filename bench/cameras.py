"""Two cameras: one node with both against two separate processes, one camera each.

Two 1280x720 clips with 3 moving faces each (other people in each, from
../shared/faces/lfw-calib, half of them enrolled), read as fast as they are processed.
``jetkiosk run`` with two cameras reads both in one process (each tick: the newest frame of
each camera in one detector batch, every face due in one encoder batch); the peer is what one
did before, two processes with one camera each, started together. Figure: frames of both
cameras per second (aggregate), and every track decided.

Run: python bench/cameras.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import warnings
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from common import analyzer, collecting_sink, crowd_frames, default_rule, lfw_faces, machine, parse

warnings.filterwarnings("ignore")
FACES = 3  # per camera


def clips(length: int) -> List[List[np.ndarray]]:
    """Both cameras' frames: 3 people each, other people in each."""
    return [crowd_frames(lfw_faces(FACES, skip=k * FACES), FACES, length) for k in range(2)]


def run_loop(frames: Sequence[List[np.ndarray]], names: Sequence[str]
             ) -> Tuple[int, float, float, int]:
    """One CaptureLoop over ``frames`` (one clip per camera): frames processed, start and end
    (time.monotonic, comparable across processes), and tracks decided."""
    from jetkiosk.edge.capture.sources import Source
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import Gallery
    from jetkiosk.edge.node.loop import CaptureLoop

    a = analyzer()
    gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
    for k, photo in enumerate(lfw_faces(2 * FACES)[::2]):
        found = [f.encoding for f in a.analyze(photo) if f.encoding is not None]
        if found:
            gallery.add(f"person {k}", found[0][None])

    class Clip(Source):
        def __init__(self, clip: List[np.ndarray]):
            self.uri, self.clip = "memory://clip", clip

        def frames(self) -> Iterator:
            for frame in self.clip:
                yield frame, time.monotonic()

    sink = collecting_sink()
    loop = CaptureLoop(load_config(), a, Matcher(gallery, default_rule(a)), sink,
                       cameras=list(names))
    loop.process([(camera, frames[0][0]) for camera in loop.cameras])  # models warm
    loop.frames = 0
    start = time.monotonic()
    processed = loop.run(*(Clip(clip) for clip in frames))
    decided = {(e["camera"], e["track_id"]) for e in sink.events if e["event"] == "new"}
    return processed, start, time.monotonic(), len(decided)


def one_camera(k: int, length: int, ready, results) -> None:
    frames = clips(length)[k]
    ready.wait()
    results.put(run_loop([frames], [f"cam{k}"]))


def separate(length: int) -> Tuple[float, int]:
    """Two processes, one camera each, started together: aggregate fps and tracks decided."""
    spawn = multiprocessing.get_context("spawn")
    ready, results = spawn.Barrier(2), spawn.Queue()
    workers = [spawn.Process(target=one_camera, args=(k, length, ready, results))
               for k in range(2)]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    frames = sum(g[0] for g in got)
    return frames / (max(g[2] for g in got) - min(g[1] for g in got)), sum(g[3] for g in got)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args = parse(parser, "12 frames per camera")
    length = 12 if args.quick else 150
    a = analyzer()
    print(f"# two 1280x720 cameras, {FACES} faces each, {length} frames each, encoder "
          f"{a.encoder_manifest.name} {a.encoder.backend.precision}, {machine()}")
    frames, start, end, decided = run_loop(clips(length), ["cam0", "cam1"])
    together = frames / (end - start)
    print(f"one process, two cameras : {together:5.1f} fps aggregate, {decided} tracks decided")
    apart, decided = separate(length)
    print(f"two processes, one each  : {apart:5.1f} fps aggregate, {decided} tracks decided")
    print(f"ratio (one process / two processes): {together / apart:.2f}x")


if __name__ == "__main__":
    main()
