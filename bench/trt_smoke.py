"""TensorRT smoke test for a real Jetson (or any machine with TensorRT and pycuda): builds
every engine at each precision, compares its outputs with ONNX Runtime's FP32 outputs on the
same inputs, and prints latency per model and precision.

    python bench/trt_smoke.py [--precisions fp32,fp16,int8] [--runs 50] [--quick]

INT8 uses the gated QDQ variants (`jetkiosk quantize MODEL` first); a model without one is
built FP16, as the runtime would. Engines go to the configured engine cache (built once).
``--quick`` (3 runs) takes the benches' prepared models and builds its engines in a temporary
folder; without TensorRT it can run against tests/fakes (PYTHONPATH=tests/fakes).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import List, Optional

import numpy as np

from common import machine, models_dir, parse
from jetkiosk.calibration.commands import models_to_build
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.runtime.backend import load_backend
from jetkiosk.edge.runtime.manifest import Manifest, load_manifest


def example_feeds(manifest: Manifest) -> dict:
    """Deterministic inputs of the runtime's usual size for each dynamic axis."""
    rng = np.random.default_rng(0)
    sizes = {"face-detector": (384, 640), "style-transfer": (360, 640)}
    feeds = {}
    for spec in manifest.inputs:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                shape.append(dim)
            else:
                shape.append(1 if axis == 0 else sizes.get(manifest.task, (160, 160))[axis - 2])
        feeds[spec.name] = rng.uniform(0, 1, shape).astype(np.float32)
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--config", help="TOML configuration file")
    args = parse(parser, "3 runs per engine, engines built in a temporary folder")
    import tensorrt

    print(f"# TensorRT {tensorrt.__version__} ({tensorrt.__file__}) against ONNX Runtime FP32 "
          f"on {machine()}")
    with tempfile.TemporaryDirectory(prefix="trt-smoke-") as tmp:
        if args.quick:
            args.runs = 3
            where = [f"models.dir={models_dir()}", f"models.engine_dir={tmp}"]
        else:
            where = []
        smoke(args.config, args.precisions.split(","), args.runs, where)


def smoke(config_file: Optional[str], precisions: List[str], runs: int, where: List[str]
          ) -> None:
    """Every model at each precision; ``where`` overrides the models and engine folders."""
    print(f"{'model':24s} {'precision':9s} {'max |diff|':>10s} {'cosine':>8s} {'ms':>8s}")
    for precision in precisions:
        config = load_config(config_file, [*where, f"models.precision={precision}",
                                           "models.backend=tensorrt"])
        for manifest in models_to_build(config, []):
            feeds = example_feeds(manifest)
            base = manifest.path.with_name(manifest.path.name.replace(".int8.json", ".json")) \
                if manifest.path else None
            fp32 = load_config(config_file, [*where, "models.backend=onnxruntime"])
            want = load_backend("onnxruntime", load_manifest(base) if base else manifest,
                                fp32).run(feeds)
            engine = load_backend("tensorrt", manifest, config)
            got = engine.run(feeds)
            start = time.perf_counter()
            for _ in range(runs):
                engine.run(feeds)
            ms = (time.perf_counter() - start) / runs * 1000
            name = next(iter(want))
            a, b = want[name].ravel(), got[name].ravel()
            cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
            print(f"{manifest.name:24s} {precision:9s} {np.abs(a - b).max():10.4f} "
                  f"{cosine:8.5f} {ms:8.2f}")
            engine.close()


if __name__ == "__main__":
    main()
