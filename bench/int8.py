"""INT8 against FP32 on this CPU through ONNX Runtime, per model: the accuracy gate's figures
and the speed ratio, for both QDQ forms (int8 for TensorRT, int8-cpu for ONNX Runtime).

Data (all offline): both encoders (face-reid-0095, the default, and facenet-casia) are
calibrated on real faces, the first photo of the first 150 people of ../shared/faces/lfw-calib
(sorted by name), and gated on people 567-716, whom calibration never saw (first photo
enrolled, the others probed); the detector is calibrated on frames of the demo clip and
lfw-calib photos of the calibration people, gated on photos of the held-out people; the style
network is calibrated on demo-clip frames, gated on scikit-image photos; the two liveness
models (minifasnet-v2, minifasnet-v1se) like the encoders: calibrated on the crops
LivenessCheck makes of the faces the detector finds in the calibration people's first photos,
gated on each model's own live score of every face in the held-out people's photos.
Goal: the encoder >= 2x faster in INT8 with identification unchanged.

``--ship`` writes each passing variant's calibration into calibration/int8/ (the records
`jetkiosk models prepare` rebuilds the variants from, with the figures printed here).

Usage: python bench/int8.py [--workdir DIR]
                            [--models encoder,facenet,detector,style,liveness-v2,liveness-v1se]
                            [--ship] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from common import machine, models_dir, parse
from jetkiosk.calibration.accuracy_gate import make_int8, ranges_file
from jetkiosk.calibration.calib_set import build_set
from jetkiosk.calibration.commands import find_manifest
from jetkiosk.calibration.model_kinds import capture, comparison
from jetkiosk.calibration.shipped_int8 import SHIPPED, ShippedInt8, first_photos
from jetkiosk.edge.cli import demo
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.runtime.manifest import Manifest, load_manifest, variant_path
from jetkiosk.edge.runtime.onnx_runtime import OnnxRuntimeBackend
from jetkiosk.export.models.prepare import prepare

LFW = Path(__file__).resolve().parents[2] / "shared" / "faces" / "lfw-calib" / "people"
CALIBRATION_PEOPLE = 150  # the first, by name: calibration sees their first photo
HELD_OUT_PEOPLE = 150  # the last: the gate enrols their first photo and probes the others
# face-reid-0095 loses its encodings to INT8 unless these stay in float: the input scaling
# and the first two convolutions (whose errors the depthwise convolution after them
# multiplies), and the three convolutions that make the embedding from the last feature map
# (noise of 20 dB there costs 0.16 of cosine; found with the per-tensor errors of
# onnxruntime.quantization.qdq_loss_debug). Percentile ranges keep resolution on the rest.
FACE_REID_FLOAT = ["ScaleShift_1_mul", "ScaleShift_1_add", "Convolution_2", "Convolution_4",
                   "Convolution_183", "Convolution_185", "Convolution_186"]


PLANS = ("encoder", "facenet", "detector", "style", "liveness-v2", "liveness-v1se")
BATCHED = ("face-encoder", "face-liveness")  # run on all of a frame's faces at once

# The liveness models (51 and 57 convolutions on 80x80 crops) lose their live scores to INT8:
# with 5 layers in float (a tenth) minifasnet-v2's largest score change was 0.23-0.38 and 3-4
# clear decisions changed (minmax or percentile ranges). The gate may keep up to a quarter in
# float for them; with 12-14 both models still failed in both forms (percentile ranges), on
# an AVX2 CPU without VNNI, where ONNX Runtime's u8s8 kernels saturate: the same all-int8 QDQ
# models run without graph optimisation (exact arithmetic, as TensorRT computes) moved live
# scores by 0.05-0.06 on average, against 0.10-0.34 through the optimised kernels.
LIVENESS_FLOAT = 0.25


@dataclass
class Plan:
    """One model's calibration and gate data, and how it is quantized."""

    model: str
    sources: List[Path]
    heldout: List[Path]
    count: int
    method: str = "minmax"
    exclude: List[str] = field(default_factory=list)
    max_float: float = 0.1  # the share of layers the gate may keep in float


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
    parser.add_argument("--models", default=",".join(PLANS))
    parser.add_argument("--ship", action="store_true",
                        help="write the passing variants' calibrations into calibration/int8/")
    args = parse(parser, "a few calibration samples and held-out people, the int8-cpu form "
                 "only, 2 timing rounds")
    logging.basicConfig(level=logging.WARNING)
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    cal, held = (people[:8], people[-8:]) if args.quick else \
        (people[:CALIBRATION_PEOPLE], people[-HELD_OUT_PEOPLE:])
    counts = {"encoder": 10, "detector": 4, "style": 4} if args.quick else \
        {"encoder": 300, "detector": 60, "style": 40}
    rounds = 2 if args.quick else 20
    forms = ("int8-cpu",) if args.quick else ("int8-cpu", "int8")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="int8-bench-"))
    try:
        run(work, args.models.split(","), cal, held, counts, forms, rounds,
            SHIPPED if args.ship else None)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, keys: List[str], cal: List[Path], held: List[Path], counts: Dict[str, int],
        forms: Tuple[str, ...], rounds: int, ship: Optional[Path]) -> None:
    """Calibrate, gate and time each of ``keys`` in ``forms``, all files under ``work``;
    with ``ship``, write the calibration records of the variants that pass there."""
    models = work / "models"
    # The benches' prepared models, copied (the variants are written beside them); prepare()
    # checks the copies. Shipped variants are removed: this bench makes its own.
    shutil.copytree(models_dir(), models, dirs_exist_ok=True)
    prepare(models, progress=lambda _: None)
    for stale in list(models.glob("*.int8*")):
        stale.unlink()
    clip = work / "clip.mp4"
    demo.make_clip(clip, demo.sample_photos())
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(photos / f"{name}.png"), getattr(data, name)()[..., ::-1])
    cal_faces = first_photos(cal, work / "lfw-cal")
    held_people = linked(work / "lfw-held", held)
    held_photos = first_photos(held, work / "lfw-held-photos")
    plans = {
        "encoder": Plan("face-reid-0095", [cal_faces], [held_people], counts["encoder"],
                        "percentile", FACE_REID_FLOAT),
        "facenet": Plan("facenet-casia", [cal_faces], [held_people], counts["encoder"]),
        "detector": Plan("retinaface-mnet025", [clip, cal_faces], [held_photos],
                         counts["detector"]),
        "style": Plan("mosaic", [clip], [photos], counts["style"]),
        **{f"liveness-{v}": Plan(f"minifasnet-{v}", [cal_faces], [held_people],
                                 counts["encoder"], "percentile", max_float=LIVENESS_FLOAT)
           for v in ("v2", "v1se")},
    }
    print(f"# INT8 ({', '.join(forms)}) vs FP32 through ONNX Runtime on {machine()}")
    print(f"# calibration: {len(cal)} lfw-calib people; gate: {len(held)} other people")
    for key in keys:
        plan = plans[key]
        config = load_config(overrides=[f"models.dir={models}", "models.backend=onnxruntime",
                                        "models.precision=fp32"])
        manifest = load_manifest(find_manifest(config, plan.model))
        if manifest.task == "face-encoder":  # the runtime's crops must be this encoder's
            config.models.encoder = plan.model
        started = time.perf_counter()
        data_set = build_set(manifest.name, capture(config, manifest), plan.sources, plan.count,
                             0, None)
        compare = comparison(config, manifest, plan.heldout)
        print(f"\n## {manifest.name}: {len(data_set.samples)} calibration samples from "
              f"{data_set.info['pictures']} pictures, {plan.method} ranges, "
              f"{len(plan.exclude)} layers in float from the start")
        for form in forms:
            result = make_int8(manifest, form, data_set.samples, compare, data_set.info,
                               plan.method, plan.max_float, plan.exclude,
                               progress=lambda _: None)
            print(result.report())
            if not result.passed:
                continue
            variant = load_manifest(variant_path(manifest.path, form))
            ratios = {"batch1": speed(manifest, variant, data_set.samples, rounds)}
            print(f"  speed INT8 / FP32: {ratios['batch1']:.2f}x (batch 1, calibration inputs)")
            if manifest.task in BATCHED:
                batch = {k: np.concatenate([s[k] for s in data_set.samples[:8]])
                         for k in data_set.samples[0]}
                ratios["batch8"] = speed(manifest, variant, [batch], rounds)
                print(f"  speed INT8 / FP32 at batch 8: {ratios['batch8']:.2f}x")
            if ship is not None:
                where = ship_record(manifest, variant, result.metrics, ratios,
                                    [p.name for p in cal], [p.name for p in held], ship)
                print(f"  shipped: {where}")
        print(f"  ({time.perf_counter() - started:.0f} s)")


def ship_record(manifest: Manifest, variant: Manifest, metrics: Dict[str, float],
                ratios: Dict[str, float], cal: List[str], held: List[str], folder: Path) -> Path:
    """The calibration record of ``variant`` (which passed its gate), for `models prepare`."""
    assert variant.path is not None
    source = variant.source
    form = source["form"]
    where = "../shared/faces/lfw-calib/people (sorted by name)"
    record = ShippedInt8(
        model=manifest.name, form=form, fingerprint=manifest.fingerprint,
        method=source["method"], excluded=source["gate"]["excluded"],
        ranges=json.loads(ranges_file(variant.path).read_text()),
        calibrated_on={"data": where, "people": f"{cal[0]} .. {cal[-1]} ({len(cal)})",
                       "pictures": source["calibration"]["pictures"],
                       "samples": source["calibration"]["samples"], "seed": 0},
        gate={"metrics": metrics, "budget": source["gate"]["budget"],
              "heldout": {"data": where, "people": f"{held[0]} .. {held[-1]} ({len(held)})"}},
        speed={"cpu": machine(), **{k: round(v, 2) for k, v in ratios.items()}})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{manifest.name}.{form}.json"
    record.save(path)
    return path


if __name__ == "__main__":
    main()
