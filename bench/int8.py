"""INT8 against FP32 on this CPU through ONNX Runtime, per model: the accuracy gate's figures
and the speed ratio, for both QDQ forms (int8 for TensorRT, int8-cpu for ONNX Runtime).

Data (all offline): encoder calibrated on ORL subjects 1-20, gated on subjects 21-40 and the
people gallery of ../shared/faces; detector calibrated on frames of the demo clip, gated on
the people probes; style network calibrated on demo-clip frames, gated on scikit-image photos.
Goal: the encoder >= 2x faster in INT8 with identification unchanged.

Usage: python bench/int8.py [--workdir DIR] [--models encoder,detector,style]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from common import machine
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


def linked(folder: Path, targets: List[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        (folder / target.name).symlink_to(target)
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--models", default="encoder,detector,style")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="int8-bench-"))
    models = work / "models"
    prepare(models, progress=lambda _: None)
    config = load_config(overrides=[f"models.dir={models}", "models.backend=onnxruntime"])
    clip = work / "clip.mp4"
    demo.make_clip(clip, demo.sample_photos())
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(photos / f"{name}.png"), getattr(data, name)()[..., ::-1])
    orl = SHARED / "orl"
    plans = {
        "encoder": ("facenet-casia",
                    [linked(work / "orl-cal", [orl / f"s{i}" for i in range(1, 21)])],
                    [linked(work / "orl-held", [orl / f"s{i}" for i in range(21, 41)]),
                     SHARED / "people/gallery"], 100, None),
        "detector": ("retinaface-mnet025", [clip, SHARED / "people/gallery"],
                     [SHARED / "people/probes"], 60, None),
        "style": ("mosaic", [clip], [photos], 40, None),
    }
    print(f"# INT8 vs FP32 through ONNX Runtime on {machine()}")
    for key in args.models.split(","):
        name, sources, heldout, count, size = plans[key]
        manifest = load_manifest(find_manifest(config, name))
        started = time.perf_counter()
        data_set = build_set(manifest.name, capture(config, manifest), sources, count, 0, size)
        compare = comparison(config, manifest, heldout)
        print(f"\n## {manifest.name}: {len(data_set.samples)} calibration samples from "
              f"{data_set.info['pictures']} pictures")
        for form in ("int8-cpu", "int8"):
            result = make_int8(manifest, form, data_set.samples, compare, data_set.info,
                               progress=lambda _: None)
            print(result.report())
            if result.passed:
                variant = load_manifest(variant_path(manifest.path, form))
                print(f"  speed INT8 / FP32: {speed(manifest, variant, data_set.samples):.2f}x "
                      f"(batch 1, calibration inputs)")
                if key == "encoder":
                    batch = {k: np.concatenate([s[k] for s in data_set.samples[:8]])
                             for k in data_set.samples[0]}
                    print(f"  speed INT8 / FP32 at batch 8: "
                          f"{speed(manifest, variant, [batch]):.2f}x")
        print(f"  ({time.perf_counter() - started:.0f} s)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
