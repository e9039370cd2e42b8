"""Shipped INT8 calibrations: they name the model's tensors, `models prepare` rebuilds the gated
variants from them without photos, the result is what a fresh calibration on the same real
faces makes, and ``models list`` says what runs and why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from jetkiosk.calibration.calib_set import build_set
from jetkiosk.calibration.model_kinds import capture
from jetkiosk.calibration.quantize import QuantizeSpec, quantize, ranges_path
from jetkiosk.calibration.shipped_int8 import (
    SHIPPED,
    build_variant,
    first_photos,
    load_record,
    mismatches,
    prepare_variants,
    records,
    stale,
)
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.runtime import cpu_features
from jetkiosk.edge.runtime.manifest import PAYS, load_manifest, manifest_path, variant_path
from jetkiosk.export.models.prepare import prepare

ALL = sorted(SHIPPED.glob("*.json"))


def test_the_encoders_cpu_calibration_is_shipped():
    assert "facenet-casia.int8-cpu.json" in {p.name for p in ALL}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_shipped_ranges_name_the_models_tensors(path: Path, models_dir: Path):
    record = load_record(path)
    manifest = load_manifest(manifest_path(models_dir, record.model))
    assert record.fingerprint == manifest.fingerprint
    assert len(record.tensors()) > 20
    assert mismatches(record, manifest.model_path) == []
    assert record.gate["metrics"] and record.speed["cpu"] and record.speed["batch1"] > 0
    # prepare (the session's models_dir) built the variant from it, with its figures
    variant = load_manifest(variant_path(manifest.path, record.form))
    assert variant.source["shipped"]["file"] == path.name
    assert variant.source["speed"] == record.speed
    assert variant.fingerprint == manifest.fingerprint  # galleries stay valid
    assert stale(record, manifest) is None


def test_prepare_rebuilds_a_variant_that_is_missing_or_stale(models_dir: Path, tmp_path: Path):
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    variant = models / "facenet-casia.int8-cpu.onnx"
    variant.unlink()
    (models / "facenet-casia.int8-cpu.json").unlink()
    said: list = []
    prepare(models, progress=said.append)
    assert any("facenet-casia int8-cpu: building (missing)" in line for line in said)
    manifest = load_manifest(manifest_path(models, "facenet-casia"))
    record = load_record(SHIPPED / "facenet-casia.int8-cpu.json")
    assert stale(record, manifest) is None
    variant.write_bytes(b"corrupt")
    assert stale(record, manifest).startswith("invalid")
    said.clear()
    prepare(models, progress=said.append)
    assert any("facenet-casia int8-cpu: building (invalid" in line for line in said)
    load_manifest(models / "facenet-casia.int8-cpu.json").verify()
    said.clear()
    prepare(models, progress=said.append)  # up to date: nothing built
    assert not any("building" in line for line in said)


def test_a_bad_record_is_refused_by_name(models_dir: Path, tmp_path: Path):
    broken = tmp_path / "facenet-casia.int8-cpu.json"
    broken.write_text("{not json")
    with pytest.raises(ModelError, match="facenet-casia.int8-cpu.json: shipped INT8"):
        load_record(broken)
    data = json.loads((SHIPPED / "facenet-casia.int8-cpu.json").read_text())
    del data["ranges"]
    broken.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="lacks ranges"):
        load_record(broken)
    data = json.loads((SHIPPED / "facenet-casia.int8-cpu.json").read_text())
    data["ranges"]["data"]["no_such_tensor"] = data["ranges"]["data"].popitem()[1]
    broken.write_text(json.dumps(data))
    manifest = load_manifest(manifest_path(models_dir, "facenet-casia"))
    assert mismatches(load_record(broken), manifest.model_path) == ["tensor no_such_tensor"]
    with pytest.raises(ModelError, match="lacks 1 of the calibrated names"):
        build_variant(load_record(broken), manifest)
    data["fingerprint"] = "0" * 16
    broken.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="calibrated for fingerprint 0000"):
        build_variant(load_record(broken), manifest)
    # prepare says why and goes on: the model runs at FP32
    models = tmp_path / "models"
    models.mkdir()
    for name in (manifest.file, manifest.path.name):
        shutil.copyfile(models_dir / name, models / name)
    said = []
    copy = load_manifest(models / manifest.path.name)
    assert prepare_variants(copy, said.append, folder=tmp_path) == []
    assert "facenet-casia int8-cpu: not built: " in said[-1]
    assert not (models / "facenet-casia.int8-cpu.json").exists()
    assert [r.form for r in records("facenet-casia")] == ["int8-cpu"]


def _encode(model: Path, crops: np.ndarray) -> np.ndarray:
    """Unit encodings; QDQ models computed exactly as quantized (no fused int8 kernels: on a
    CPU without an int8 dot product ONNX Runtime's saturate, and a VNNI or TensorRT one
    computes what this does)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = session.run(None, {name: crops})[0].reshape(len(crops), -1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_the_prepared_variant_is_what_a_fresh_calibration_on_lfw_calib_makes(
        models_dir: Path, shared: Path, tmp_path: Path):
    record = load_record(SHIPPED / "facenet-casia.int8-cpu.json")
    people = sorted(p for p in (shared / "faces/lfw-calib/people").iterdir() if p.is_dir())
    count = int(record.calibrated_on["people"].rsplit("(", 1)[1].rstrip(")"))
    chosen = people[:count]
    assert record.calibrated_on["people"] == f"{chosen[0].name} .. {chosen[-1].name} ({count})"
    config = load_config(overrides=[f"models.dir={models_dir}", "models.precision=fp32",
                                    "models.backend=onnxruntime", "models.encoder=facenet-casia"])
    manifest = load_manifest(manifest_path(models_dir, "facenet-casia"))
    data = build_set(manifest.name, capture(config, manifest),
                     [first_photos(chosen, tmp_path / "photos")], count, 0)
    assert len(data.samples) == record.calibrated_on["samples"]
    fresh = tmp_path / "fresh.onnx"
    quantize(manifest.model_path, fresh, data.samples,
             QuantizeSpec(record.form, record.method, record.excluded), tmp_path / "work")
    ranges = json.loads(ranges_path(tmp_path / "work").read_text())["data"]
    assert set(ranges) == set(record.tensors())
    def bounds(entry: dict) -> list:
        return [entry[k]["data"][0] for k in ("lowest", "highest")]

    for tensor, want in record.ranges["data"].items():  # FP32 kernels differ a little by CPU
        assert np.allclose(bounds(ranges[tensor]), bounds(want), rtol=1e-3, atol=1e-4), tensor
    crops = np.concatenate([s["input"] for s in data.samples[:32]])
    prepared = models_dir / "facenet-casia.int8-cpu.onnx"
    cosine = np.sum(_encode(prepared, crops) * _encode(fresh, crops), axis=1)
    assert cosine.mean() > 0.9995 and cosine.min() > 0.995
    float_cosine = np.sum(_encode(manifest.model_path, crops) * _encode(prepared, crops), axis=1)
    assert float_cosine.mean() > 0.99  # and it is close to FP32, as the gate said


def test_models_list_says_what_runs_and_why(models_dir: Path, capsys, monkeypatch):
    for dot in ("avx512_vnni", None):
        monkeypatch.setattr(cpu_features, "int8_dot_product", lambda dot=dot: dot)
        assert main(["models", "list", "--json", "--models", str(models_dir),
                     "--backend", "onnxruntime", "--set", "models.encoder=facenet-casia"]) == 0
        rows = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
        assert {"retinaface-mnet025", "facenet-casia", "style-mosaic"} <= set(rows)
        facenet = rows["facenet-casia"]
        speed = load_record(SHIPPED / "facenet-casia.int8-cpu.json").speed["batch8"]
        if dot and speed >= PAYS:
            assert facenet["precision"] == "int8" and facenet["file"].endswith("int8-cpu.onnx")
            assert "avx512_vnni" in facenet["why"]
        else:
            assert facenet["precision"] == "fp32"
            assert ("no int8 dot product" if not dot else "measured only") in facenet["why"]
        assert rows["style-mosaic"]["precision"] == "fp32"
