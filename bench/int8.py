"""INT8 against FP32 on this CPU through ONNX Runtime, per model: the accuracy gate's figures
and the speed ratio, for both QDQ forms (int8 for TensorRT, int8-cpu for ONNX Runtime).

Data (all offline): encoder calibrated on ORL subjects 1-20, gated on subjects 21-40 and the
people gallery of ../shared/faces; detector calibrated on frames of the demo clip, gated on
the people probes; style network calibrated on demo-clip frames, gated on scikit-image photos.
Goal: the encoder >= 2x faster in INT8 with identification unchanged.

Usage: python bench/int8.py [--workdir DIR] [--models encoder,detector,style] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from common import machine, models_dir, parse
from jetkiosk.calibration.accuracy_gate import make_int8
from jetkiosk.calibration.calib_set import build_set
from jetkiosk.calibration.commands import find_manifest
from jetkiosk.calibration.model_kinds import capture, comparison
from jetkiosk.edge.cli import demo
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.runtime.manifest import Manifest, load_manifest, variant_path
from jetkiosk.edge.runtime.onnx_runtime import OnnxRuntimeBackend
from jetkiosk.export.models.prepare import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"
ENCODER = "facenet-casia"  # configured too: the runtime's crops must be this encoder's


def linked(folder: Path, targets: List[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        link = folder / target.name
        if not link.is_symlink():  # a --workdir used before has them
            link.symlink_to(target)
    return folder


def speed(fp32: Manifest, int8: Manifest, feeds: List[Dict[str, np.ndarray]],
          rounds: int = 20) -> float:
    """FP32 time / INT8 time, runs interleaved on the same inputs."""
    a, b = OnnxRuntimeBackend(fp32), OnnxRuntimeBackend(int8)
    for backend in (a, b):
        backend.run(feeds[0])
    spent = [0.0, 0.0]
    for i in range(rounds):
        for k, backend in enumerate((a, b)):
            start = time.perf_counter()
            backend.run(feeds[i % len(feeds)])
            spent[k] += time.perf_counter() - start
    return spent[0] / spent[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--models", default="encoder,detector,style")
    args = parse(parser, "a few calibration samples and held-out photos, the int8-cpu form "
                 "only, 2 timing rounds")
    logging.basicConfig(level=logging.WARNING)
    # ORL subjects calibrated on / gated on; calibration samples per model; timing rounds
    cal, held = (range(1, 3), range(21, 23)) if args.quick else (range(1, 21), range(21, 41))
    counts = {"encoder": 10, "detector": 4, "style": 4} if args.quick else \
        {"encoder": 100, "detector": 60, "style": 40}
    rounds = 2 if args.quick else 20
    forms = ("int8-cpu",) if args.quick else ("int8-cpu", "int8")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="int8-bench-"))
    try:
        run(work, args.models.split(","), cal, held, counts, forms, rounds)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, keys: List[str], cal: range, held: range, counts: Dict[str, int],
        forms: Tuple[str, ...], rounds: int) -> None:
    """Calibrate, gate and time each of ``keys`` in ``forms``, all files under ``work``."""
    models = work / "models"
    # The benches' prepared models, copied (the variants are written beside them); prepare()
    # checks the copies.
    shutil.copytree(models_dir(), models, dirs_exist_ok=True)
    prepare(models, progress=lambda _: None)
    config = load_config(overrides=[f"models.dir={models}", "models.backend=onnxruntime",
                                    f"models.encoder={ENCODER}"])
    clip = work / "clip.mp4"
    demo.make_clip(clip, demo.sample_photos())
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(photos / f"{name}.png"), getattr(data, name)()[..., ::-1])
    orl = SHARED / "orl"
    plans = {
        "encoder": (ENCODER,
                    [linked(work / "orl-cal", [orl / f"s{i}" for i in cal])],
                    [linked(work / "orl-held", [orl / f"s{i}" for i in held]),
                     SHARED / "people/gallery"], counts["encoder"], None),
        "detector": ("retinaface-mnet025", [clip, SHARED / "people/gallery"],
                     [SHARED / "people/probes"], counts["detector"], None),
        "style": ("mosaic", [clip], [photos], counts["style"], None),
    }
    print(f"# INT8 ({', '.join(forms)}) vs FP32 through ONNX Runtime on {machine()}")
    for key in keys:
        name, sources, heldout, count, size = plans[key]
        manifest = load_manifest(find_manifest(config, name))
        started = time.perf_counter()
        data_set = build_set(manifest.name, capture(config, manifest), sources, count, 0, size)
        compare = comparison(config, manifest, heldout)
        print(f"\n## {manifest.name}: {len(data_set.samples)} calibration samples from "
              f"{data_set.info['pictures']} pictures")
        for form in forms:
            result = make_int8(manifest, form, data_set.samples, compare, data_set.info,
                               progress=lambda _: None)
            print(result.report())
            if result.passed:
                variant = load_manifest(variant_path(manifest.path, form))
                print(f"  speed INT8 / FP32: "
                      f"{speed(manifest, variant, data_set.samples, rounds):.2f}x "
                      f"(batch 1, calibration inputs)")
                if key == "encoder":
                    batch = {k: np.concatenate([s[k] for s in data_set.samples[:8]])
                             for k in data_set.samples[0]}
                    print(f"  speed INT8 / FP32 at batch 8: "
                          f"{speed(manifest, variant, [batch], rounds):.2f}x")
        print(f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
