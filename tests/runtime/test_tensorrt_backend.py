"""The TensorRT adapter, engine cache and backend against fakes of tensorrt (8.6 and 10.3 API)
and pycuda that enforce the documented contract and run the real models with ONNX Runtime."""

from __future__ import annotations

import importlib
import json
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.core.images import load_image
from jetkiosk.edge.faces.analyzer import FaceAnalyzer
from jetkiosk.edge.runtime.backend import resolve

FAKES = ROOT / "tests" / "fakes"
FAKE_MODULES = ("tensorrt", "pycuda", "pycuda.driver", "jetkiosk.edge.runtime.tensorrt.adapter",
                "jetkiosk.edge.runtime.tensorrt.backend")


def _forget() -> None:
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)
    resolve.cache_clear()


@pytest.fixture(params=["8.6.1", "10.3.0"])
def fake_trt(request, monkeypatch):
    """(fake tensorrt, fake pycuda.driver, the adapter imported against them)."""
    _forget()
    monkeypatch.syspath_prepend(str(FAKES))
    trt = importlib.import_module("tensorrt")
    trt.configure(request.param, dla_cores=2)
    cuda = importlib.import_module("pycuda.driver")
    cuda.reset()
    adapter = importlib.import_module("jetkiosk.edge.runtime.tensorrt.adapter")
    yield trt, cuda, adapter
    _forget()


def trt_config(models_dir, tmp_path, *extra):
    return load_config(overrides=[f"models.dir={models_dir}", "models.backend=tensorrt",
                                  "models.precision=fp32",
                                  f"models.engine_dir={tmp_path / 'engines'}", *extra])


def test_auto_under_tensorrt_builds_int8_from_a_gated_variant_else_fp16(fake_trt, models_dir,
                                                                        tmp_path):
    analyzer = FaceAnalyzer(trt_config(models_dir, tmp_path, "models.precision=auto"))
    # face-reid-0095 ships a gated TensorRT calibration; the detector has none
    assert analyzer.encoder.backend.precision == "int8"
    assert analyzer.encoder_manifest.file == "face-reid-0095.int8.onnx"
    assert analyzer.detector.backend.precision == "fp16"
    assert "there is no int8 variant" in analyzer.detector.backend.manifest.why
    # the liveness models have no gated calibration either
    assert [b.precision for b in analyzer.liveness.backends] == ["fp16", "fp16"]
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "engines").glob("*.json")]
    assert sorted(s["key"]["precision"] for s in sidecars) == ["fp16", "fp16", "fp16", "int8"]


def test_auto_picks_tensorrt_when_it_imports_and_onnxruntime_otherwise(fake_trt, monkeypatch):
    assert resolve("auto") == "tensorrt"
    _forget()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as on a PC
    assert resolve("auto") == "onnxruntime"


def test_face_path_on_tensorrt_matches_onnx_runtime(fake_trt, models_dir, tmp_path, shared):
    trt, cuda, _adapter = fake_trt
    photo = load_image(shared / "faces/people/probes/obama_and_biden.jpg")
    reference = FaceAnalyzer(load_config(overrides=[f"models.dir={models_dir}",
                                                    "models.backend=onnxruntime"])).analyze(photo)
    analyzer = FaceAnalyzer(trt_config(models_dir, tmp_path))
    faces = analyzer.analyze(photo)
    assert len(faces) == len(reference) == 3
    for got, want in zip(faces, reference):
        np.testing.assert_allclose(got.detection.box, want.detection.box, atol=1e-3)
        if want.encoding is not None:
            np.testing.assert_allclose(got.encoding, want.encoding, atol=1e-5)
    assert analyzer.encoder.backend.describe().startswith("tensorrt")
    # one build per model (detector, encoder, two liveness models), with the flags this
    # TensorRT version needs
    assert len(trt.BUILDS) == 4
    major = int(trt.__version__.split(".")[0])
    assert all(b["flags"] == (0 if major >= 10 else 1) for b in trt.BUILDS)
    profiles = sorted(b["profiles"]["input"] for b in trt.BUILDS)
    assert profiles == [[[1, 3, 32, 32], [1, 3, 384, 640], [1, 3, 640, 640]],  # detector
                        [[1, 3, 80, 80], [4, 3, 80, 80], [16, 3, 80, 80]],  # liveness
                        [[1, 3, 80, 80], [4, 3, 80, 80], [16, 3, 80, 80]],
                        [[1, 3, 128, 128], [4, 3, 128, 128], [16, 3, 128, 128]]]  # encoder
    # the second start uses the cached engines
    FaceAnalyzer(trt_config(models_dir, tmp_path)).analyze(photo)
    assert len(trt.BUILDS) == 4
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "engines").glob("*.json")]
    assert {s["key"]["model"] for s in sidecars} == {"retinaface-mnet025", "face-reid-0095",
                                                     "minifasnet-v2", "minifasnet-v1se"}
    assert all(s["key"]["trt_version"] == trt.__version__ and
               s["key"]["device"] == "Fake Orin sm87" for s in sidecars)
    # orderly teardown: every buffer freed, no context left pushed
    for backend in (analyzer.encoder.backend, analyzer.detector.backend,
                    *analyzer.liveness.backends):
        backend.close()
    assert cuda.current_context() is None


def test_runs_from_other_threads_and_frees_everything(fake_trt, models_dir, tmp_path):
    _trt, cuda, _adapter = fake_trt
    from jetkiosk.edge.runtime.backend import load_backend
    from jetkiosk.edge.runtime.manifest import load_manifest

    config = trt_config(models_dir, tmp_path)
    backend = load_backend("tensorrt", load_manifest(models_dir / "facenet-casia.json"), config)
    before = cuda.live_allocations()
    results = {}

    def work(batch: int) -> None:
        x = np.random.default_rng(batch).normal(size=(batch, 3, 160, 160)).astype(np.float32)
        results[batch] = (x, backend.run({"input": x})["embeddings"])

    threads = [threading.Thread(target=work, args=(b,)) for b in (1, 3, 16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    import onnxruntime as ort

    session = ort.InferenceSession(str(models_dir / "facenet-casia.onnx"))
    for x, out in results.values():
        np.testing.assert_allclose(out, session.run(None, {"input": x})[0], atol=1e-5)
    with pytest.raises(ModelError, match="outside the engine's optimisation profile"):
        backend.run({"input": np.zeros((17, 3, 160, 160), np.float32)})
    assert cuda.live_allocations() > before
    backend.close()
    assert cuda.live_allocations() == 0
    assert cuda.current_context() is None


def test_stale_or_corrupt_engines_are_rebuilt(fake_trt, models_dir, tmp_path):
    trt, _cuda, _adapter = fake_trt
    from jetkiosk.edge.runtime.backend import load_backend
    from jetkiosk.edge.runtime.manifest import load_manifest

    config = trt_config(models_dir, tmp_path)
    manifest = load_manifest(models_dir / "retinaface-mnet025.json")
    load_backend("tensorrt", manifest, config).close()
    (engine,) = (tmp_path / "engines").glob("*.engine")
    engine.write_bytes(b"garbage")  # sidecar sha no longer matches: rebuilt
    load_backend("tensorrt", manifest, config).close()
    assert len(trt.BUILDS) == 2
    sidecar = engine.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    engine.write_bytes(b"FAKETRT\nbroken")  # undeserializable but "matching": rebuilt on load
    meta["engine_sha256"] = __import__("hashlib").sha256(b"FAKETRT\nbroken").hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="no CUDA context"):
        trt.Runtime(None).deserialize_cuda_engine(b"FAKETRT\nbroken")  # no context: refused
    load_backend("tensorrt", manifest, config).close()
    assert len(trt.BUILDS) == 3
    off = trt_config(models_dir, tmp_path, "models.build_engines=false", "models.workspace_mb=64",
                     "models.fallback=false")
    with pytest.raises(ModelError, match="build_engines is off"):
        load_backend("tensorrt", manifest, off)


def test_an_engine_that_cannot_be_loaded_or_rebuilt_falls_back_to_onnx_runtime(
        fake_trt, models_dir, tmp_path, monkeypatch, caplog):
    trt, _cuda, _adapter = fake_trt
    from jetkiosk.edge.runtime.backend import load_backend
    from jetkiosk.edge.runtime.manifest import load_manifest

    manifest = load_manifest(models_dir / "facenet-casia.json")
    config = trt_config(models_dir, tmp_path, "models.precision=fp16")
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, blob: None)
    backend = load_backend("tensorrt", manifest, config)  # built, refused, rebuilt, refused
    assert len(trt.BUILDS) == 2
    assert backend.describe().startswith("onnxruntime") and "fallback from tensorrt" in \
        backend.describe() and "deserialize" in backend.fallback
    assert "FALLING BACK TO ONNX RUNTIME" in caplog.text
    crop = np.random.default_rng(0).random((1, 3, 160, 160), np.float32)
    assert backend.run({"input": crop})["embeddings"].shape == (1, 512)
    with pytest.raises(RuntimeError, match="cannot deserialize"):  # fallback=false: fatal
        load_backend("tensorrt", manifest, trt_config(models_dir, tmp_path,
                                                      "models.fallback=false"))


def test_implicit_int8_calibrates_through_device_memory_and_reuses_the_cache(
        fake_trt, models_dir, tmp_path, shared):
    trt, cuda, _adapter = fake_trt
    from jetkiosk.calibration.calib_set import build_set, load_set
    from jetkiosk.calibration.model_kinds import capture
    from jetkiosk.edge.runtime.manifest import load_manifest
    from jetkiosk.edge.runtime.tensorrt import calibration_cache as calib_cache
    from jetkiosk.edge.runtime.tensorrt.build import ensure_engine

    config = trt_config(models_dir, tmp_path, "models.precision=int8")
    manifest = load_manifest(models_dir / "face-reid-0095.json")  # the default encoder
    data = build_set(manifest.name, capture(config, manifest),
                     [shared / "faces/orl/s1", shared / "faces/orl/s2"], 6, seed=3)
    data.save(tmp_path / "calib")
    said = []
    ensure_engine(manifest, config, progress=said.append)  # no QDQ variant, no set: fp16
    assert "INT8" not in trt.BUILDS[-1]["builder_flags"] and "building fp16" in said[0]
    ensure_engine(manifest, config, calibration=load_set(tmp_path / "calib"))
    build = trt.BUILDS[-1]
    assert "INT8" in build["builder_flags"] and build["calibration"]["batches"] == 6
    amax = max(float(np.abs(s["input"]).max()) for s in data.samples)
    assert build["calibration"]["amax"] == pytest.approx(amax)
    cache = calib_cache.load(config.models.engines / "face-reid-0095.calibration.cache")
    assert cache.version == calib_cache.version_number(trt.__version__)
    assert cache.scales["input"] == pytest.approx(amax / 127, rel=1e-6)
    ensure_engine(manifest, config, force=True, calibration=load_set(tmp_path / "calib"))
    assert trt.BUILDS[-1]["calibration"] == {"from_cache": 1.0}  # no batches asked again
    assert cuda.live_allocations() == 0  # the calibrator's buffer was freed


def test_dla_with_gpu_fallback_and_progress(fake_trt, models_dir, tmp_path):
    trt, _cuda, adapter = fake_trt
    from jetkiosk.edge.runtime.manifest import load_manifest
    from jetkiosk.edge.runtime.tensorrt.build import ensure_engine

    config = trt_config(models_dir, tmp_path, "models.dla_core=1", "models.precision=fp16")
    said = []
    ensure_engine(load_manifest(models_dir / "retinaface-mnet025.json"), config,
                  progress=said.append)
    build = trt.BUILDS[-1]
    assert build["device"] == "DLA" and build["dla_core"] == 1
    assert {"GPU_FALLBACK", "FP16"} <= set(build["builder_flags"])
    assert any("building a fp16 TensorRT" in s for s in said)
    assert any("Building engine: 2/2" in s for s in said) == trt.__version__.startswith("10")
    config.models.dla_core = 5
    with pytest.raises(adapter.TensorRTError, match="DLA cores"):
        ensure_engine(load_manifest(models_dir / "retinaface-mnet025.json"), config)


def test_parser_errors_are_reported(fake_trt, tmp_path):
    _trt, cuda, adapter = fake_trt
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(adapter.TensorRTError, match="ONNX parser refused it"):
        adapter.build_engine(bad, adapter.BuildSpec())
    assert cuda.current_context() is None


def test_liveness_engines_take_all_of_a_frames_faces_in_one_run(models_dir):
    from jetkiosk.edge.runtime.manifest import load_manifest
    from jetkiosk.edge.runtime.tensorrt.build import profile_shapes

    for name in ("minifasnet-v2", "minifasnet-v1se"):
        manifest = load_manifest(models_dir / f"{name}.json")
        (shapes,) = profile_shapes(manifest, load_config()).values()
        assert [s[0] for s in shapes] == [1, 4, 16] and shapes[2][1:] == (3, 80, 80)


def test_auto_under_tensorrt_builds_the_liveness_engines_at_int8_where_gated(
        fake_trt, models_dir, tmp_path):
    """minifasnet-v2 given a gated TensorRT-form record (stand-in ranges), minifasnet-v1se
    none: v2's engine is int8, v1se's fp16; ``jetkiosk build`` covers both."""
    import shutil

    from jetkiosk.calibration.commands import models_to_build
    from jetkiosk.calibration.quantize import QuantizeSpec, quantize, ranges_path
    from jetkiosk.calibration.shipped_int8 import ShippedInt8, prepare_variants
    from jetkiosk.edge.faces.liveness import LivenessCheck
    from jetkiosk.edge.runtime.manifest import load_manifest

    models, shipped = tmp_path / "models", tmp_path / "shipped"
    shutil.copytree(models_dir, models)
    shipped.mkdir()
    for old in list(models.glob("minifasnet-*.int8*")):
        old.unlink()
    v2 = load_manifest(models / "minifasnet-v2.json")
    crops = np.random.default_rng(0).uniform(0, 255, (4, 1, 3, 80, 80)).astype(np.float32)
    quantize(v2.model_path, tmp_path / "q.onnx", [{v2.inputs[0].name: c} for c in crops],
             QuantizeSpec("int8"), tmp_path / "q")
    ShippedInt8("minifasnet-v2", "int8", v2.fingerprint, "minmax", [],
                json.loads(ranges_path(tmp_path / "q").read_text()), {}, {"metrics": {}},
                {"cpu": "a test CPU", "batch1": 1.0}).save(shipped / "minifasnet-v2.int8.json")
    assert prepare_variants(v2, lambda _: None, folder=shipped)
    config = trt_config(models, tmp_path, "models.precision=auto")
    check = LivenessCheck.load(config)
    v2_trt, v1se_trt = check.backends
    assert v2_trt.precision == "int8" and v2_trt.manifest.file == "minifasnet-v2.int8.onnx"
    assert v1se_trt.precision == "fp16" and v1se_trt.manifest.file == "minifasnet-v1se.onnx"
    check.close()
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "engines").glob("*.json")]
    assert sorted(s["key"]["precision"] for s in sidecars) == ["fp16", "int8"]
    built = {m.name: m.file for m in models_to_build(config, [])}
    assert built["minifasnet-v2"] == "minifasnet-v2.int8.onnx"
    assert built["minifasnet-v1se"] == "minifasnet-v1se.onnx"
