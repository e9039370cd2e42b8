"""INT8 without TensorRT: calibration caches, calibration sets, QDQ models in TensorRT's form,
the accuracy gate and its fallbacks, and the runtime on a quantized variant."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest

from jetkiosk.calibration import accuracy_gate
from jetkiosk.calibration.calib_set import build_set, load_set
from jetkiosk.calibration.model_kinds import capture, comparison
from jetkiosk.calibration.quantize import QuantizeSpec, check_trt_form, quantize
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.core.images import load_image
from jetkiosk.edge.faces.analyzer import FaceAnalyzer
from jetkiosk.edge.kiosk.catalog import BUNDLED
from jetkiosk.edge.runtime.manifest import load_manifest
from jetkiosk.edge.runtime.tensorrt import calibration_cache as calib_cache


def test_calibration_cache_round_trip_and_format():
    cache = calib_cache.CalibrationCache.from_ranges("10.3.0", "entropy",
                                                     {"input": 1.0, "/conv1/Conv_output_0": 6.35})
    text = cache.dumps()
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert text.splitlines()[1] == "input: 3c010204"  # 1/127 as big-endian float32 bits
    again = calib_cache.loads(text)
    assert again.version == 100300 and again.algorithm == "EntropyCalibration2"
    for name, scale in cache.scales.items():
        assert again.scales[name] == pytest.approx(scale, rel=1e-7)
    assert calib_cache.version_number("8.6.1") == 8601
    assert calib_cache.version_number("8.5.2") == 8502
    minmax = calib_cache.CalibrationCache.from_ranges("8.5.2", "minmax", {"x": 2.0}).dumps()
    assert minmax.startswith("TRT-8502-MinMaxCalibration\nx: ")


@pytest.mark.parametrize("text, message", [
    ("", "line 1 must be TRT-<version>-<algorithm>"),
    ("TRT-abc-EntropyCalibration2\n", "version 'abc' is not a number"),
    ("TRT-8601-EntropyCalibration2\ninput 3c010204\n", "line 2: expected"),
    ("TRT-8601-EntropyCalibration2\ninput: 3c0102zz\n", "line 2: '3c0102zz' is not hex"),
])
def test_bad_calibration_caches_are_named_by_line(text, message):
    with pytest.raises(ModelError, match=message):
        calib_cache.loads(text)


def style_manifest(tmp_path):
    for path in BUNDLED.glob("style-mosaic.*"):
        shutil.copy(path, tmp_path / path.name)
    return load_manifest(tmp_path / "style-mosaic.json")


@pytest.fixture
def photos(tmp_path):
    """Five public-domain photos from scikit-image, as files."""
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        image = getattr(data, name)()
        cv2.imwrite(str(folder / f"{name}.png"), image[..., ::-1] if image.ndim == 3 else image)
    return folder


def test_calibration_sets_are_reproducible_and_listed(tmp_path, photos):
    config = load_config(overrides=["kiosk.width=128"])
    manifest = style_manifest(tmp_path)
    record = capture(config, manifest)
    one = build_set("mosaic", record, [photos], 3, seed=7, frame_size=(320, 180))
    two = build_set("mosaic", record, [photos], 3, seed=7, frame_size=(320, 180))
    other = build_set("mosaic", record, [photos], 3, seed=8, frame_size=(320, 180))
    assert one.info["items"] == two.info["items"] != other.info["items"]
    assert len(one.samples) == 3 and one.samples[0]["image"].shape == (1, 3, 72, 128)
    one.save(tmp_path / "set")
    loaded = load_set(tmp_path / "set")
    assert json.loads((tmp_path / "set.json").read_text())["seed"] == 7
    for a, b in zip(loaded.samples, one.samples):
        np.testing.assert_array_equal(a["image"], b["image"])
    (tmp_path / "set.npz").write_bytes(b"corrupt")
    with pytest.raises(ModelError, match="calibration set unreadable"):
        load_set(tmp_path / "set")
    with pytest.raises(ModelError, match="no such file or folder"):
        build_set("mosaic", record, [tmp_path / "nowhere"], 3, seed=0)


def test_qdq_model_is_in_the_form_tensorrt_accepts(tmp_path, photos):
    config = load_config(overrides=["kiosk.width=128"])
    manifest = style_manifest(tmp_path)
    samples = build_set("mosaic", capture(config, manifest), [photos], 5, seed=0).samples
    with pytest.raises(ModelError, match="needs one input shape"):
        quantize(manifest.model_path, tmp_path / "q.onnx", samples,
                 QuantizeSpec("int8", "entropy"), tmp_path / "work")
    out = quantize(manifest.model_path, tmp_path / "q.onnx", samples, QuantizeSpec("int8"),
                   tmp_path / "work")
    assert check_trt_form(out) == []
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and "QLinearConv" not in ops  # QDQ, not QOperator
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                 and inits.get(n.input[1]) is not None and inits[n.input[1]].size > 1]
    assert weight_dq  # per-channel scales on weights
    cpu = quantize(manifest.model_path, tmp_path / "c.onnx", samples, QuantizeSpec("int8-cpu"),
                   tmp_path / "work")
    assert check_trt_form(cpu)  # uint8 zero points: for ONNX Runtime only


def test_gate_passes_a_good_style_network_and_falls_back_when_over_budget(
        tmp_path, photos, monkeypatch):
    config = load_config(overrides=["kiosk.width=160"])
    manifest = style_manifest(tmp_path)
    samples = build_set("mosaic", capture(config, manifest), [photos], 5, seed=0).samples
    compare = comparison(config, manifest, [photos])
    result = accuracy_gate.make_int8(manifest, "int8-cpu", samples, compare, {"seed": 0},
                                     method="minmax", progress=lambda _: None)
    assert result.passed and result.metrics["psnr"] >= 28 and result.metrics["ssim"] >= 0.9
    variant = load_manifest(tmp_path / "style-mosaic.int8-cpu.json")
    assert variant.source["quantized_from"]["sha256"] == manifest.sha256
    assert variant.source["gate"]["metrics"]["psnr"] == result.metrics["psnr"]
    variant.verify()
    monkeypatch.setitem(accuracy_gate.BUDGETS, "style-transfer", {"psnr": 200.0})
    failed = accuracy_gate.make_int8(manifest, "int8", samples, compare, {"seed": 0},
                                     method="minmax", progress=lambda _: None)
    assert not failed.passed and failed.fallback == "fp16"
    # a small network still gets several float retries: 1, 2, then the cap of 4 layers
    assert [a["excluded"] for a in failed.attempts] == [0, 1, 2, 4]
    assert len(failed.excluded) == 4
    assert not (tmp_path / "style-mosaic.int8.json").exists()
    report = json.loads((tmp_path / "style-mosaic.int8.gate.json").read_text())
    assert report["passed"] is False and report["fallback"] == "fp16"
    assert "FAIL" in failed.report() and "fall back to fp16" in failed.report()


@pytest.mark.parametrize("layers, steps", [
    (0, []), (3, [1, 2, 3]), (20, [1, 2, 4]), (48, [1, 2, 4]), (100, [1, 2, 4, 8, 10]),
    (160, [1, 2, 4, 8, 16])])
def test_float_layer_retries_grow_to_a_cap_of_a_tenth_but_at_least_four(layers, steps):
    assert accuracy_gate.float_layer_steps(layers, 0.1) == steps


@pytest.mark.parametrize("encoder", ["face-reid-0095", "facenet-casia"])
def test_int8_encoder_keeps_identification_and_the_gallery(models_dir, shared, tmp_path,
                                                           caplog, encoder):
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    for shipped in models.glob("*.int8*"):  # the variants made here are the user's own
        shipped.unlink()
    config = load_config(overrides=[f"models.dir={models}", f"models.encoder={encoder}"])
    manifest = load_manifest(models / f"{encoder}.json")
    orl = shared / "faces/orl"
    calibration = build_set(manifest.name, capture(config, manifest),
                            [orl / f"s{i}" for i in range(1, 6)], 40, seed=0)
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for i in range(30, 36):
        (heldout / f"s{i}").symlink_to(orl / f"s{i}")
    compare = comparison(config, manifest, [heldout, shared / "faces/people/gallery"])
    result = accuracy_gate.make_int8(manifest, "int8-cpu", calibration.samples, compare,
                                     calibration.info, method="minmax", progress=lambda _: None)
    if encoder == "face-reid-0095":
        # Its squeeze-excitation MobileNet loses too much in INT8 (cosine about 0.7 with 8
        # layers back in float): the gate refuses it, and int8 runs the FP32 model.
        assert not result.passed and result.metrics["cosine_mean"] < 0.99
        assert "fall back to fp32" in result.report()
        config.models.precision = "int8"
        config.models.backend = "onnxruntime"
        assert FaceAnalyzer(config).encoder.backend.precision == "fp32"
        assert "face-reid-0095: models.precision is int8 but its int8 variant failed the " \
               "accuracy gate" in caplog.text
        return
    assert result.passed, result.report()
    metrics = result.metrics  # a decision may change only at the very edge of a boundary
    assert metrics["clear_decisions_changed"] == 0 and metrics["wrong_names_added"] == 0
    assert metrics["decisions_changed"] <= 0.02 * metrics["probes"]
    assert metrics["cosine_mean"] >= 0.99
    # All-INT8 FaceNet passes the gate with onnxruntime 1.32; when a layer must stay float,
    # the first convolution is the one (as with earlier onnxruntime releases).
    if encoder == "facenet-casia":
        assert not result.excluded or "/stem/stem.0/conv/Conv" in result.excluded
    # the runtime on the variant: same people, gallery still valid (same fingerprint)
    fp32 = FaceAnalyzer(config)
    int8 = FaceAnalyzer(load_config(overrides=[f"models.dir={models}", "models.precision=int8",
                                               "models.backend=onnxruntime",
                                               f"models.encoder={encoder}"]))
    assert int8.encoder.backend.precision == "int8"
    assert int8.fingerprint == fp32.fingerprint
    photo = load_image(shared / "faces/people/probes/obama1.jpg")
    (a,), (b,) = fp32.analyze(photo), int8.analyze(photo)
    assert float(a.encoding @ b.encoding) > 0.99
    assert int8.detector.backend.precision == "fp32"  # no detector variant: said, and FP32
    assert "retinaface-mnet025: models.precision is int8 but there is no int8 variant" \
        in caplog.text


def test_the_encoder_gate_lets_decisions_change_only_at_the_edge_of_a_boundary():
    from jetkiosk.calibration.model_kinds import EDGE, compare_encoder

    unit = np.eye(3, dtype=np.float32)
    # owner, published decision, distance to the nearest boundary
    fp32 = [("ann", "ann", 0.3), ("bob", "uncertain", EDGE / 2), ("cy", "unknown", 0.5),
            ("di", "uncertain", EDGE * 2)]
    edge_only = [("ann", "ann", 0.3), ("bob", "bob", EDGE / 3), ("cy", "unknown", 0.5),
                 ("di", "uncertain", EDGE * 2)]
    metrics = compare_encoder((unit, fp32), (unit, edge_only))
    assert metrics["decisions_changed"] == 1 and metrics["clear_decisions_changed"] == 0
    assert metrics["wrong_names_added"] == 0 and metrics["identification_delta"] == 0.25
    clear = edge_only[:3] + [("di", "ann", 0.0)]  # a clear decision, and a wrong name
    metrics = compare_encoder((unit, fp32), (unit, clear))
    assert metrics["clear_decisions_changed"] == 1 and metrics["wrong_names_added"] == 1
    assert accuracy_gate.judge("face-encoder", {**metrics, "cosine_mean": 1.0,
                                                "cosine_min": 1.0}) == [
        "clear_decisions_changed 1.0000 > 0.0", "wrong_names_added 1.0000 > 0.0"]


def test_quantize_command_keeps_the_layers_asked_for_in_float(tmp_path, photos):
    from jetkiosk.calibration.accuracy_gate import ranges_file
    from jetkiosk.calibration.quantize import producers
    from jetkiosk.edge.cli.main import main

    (tmp_path / "probe").mkdir()
    first = next(iter(producers(style_manifest(tmp_path / "probe").model_path).values()))
    models = tmp_path / "models"
    assert main(["quantize", "mosaic", "--source", str(photos), "--count", "5",
                 "--heldout", str(photos), "--form", "int8-cpu", "--keep-float", first,
                 "--models", str(models), "--set", "kiosk.width=160"]) == 0
    variant = load_manifest(models / "style-mosaic.int8-cpu.json")
    assert variant.source["gate"]["excluded"][:1] == [first]
    ranges = json.loads(ranges_file(models / "style-mosaic.int8-cpu.json").read_text())
    assert ranges["data"] and ranges["calibration_method"]
