"""INT8 for the two liveness models: calibration records the crops LivenessCheck makes, the
gate compares each model's own live score with FP32's on held-out faces, the shipped records
rebuild the variants, and "auto" loads them where they pay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Mapping

import numpy as np
import pytest

from jetkiosk.calibration.accuracy_gate import BUDGETS, judge
from jetkiosk.calibration.calib_set import candidates, frame
from jetkiosk.calibration.model_kinds import (
    LIVE_EDGE,
    _detector,
    capture,
    compare_liveness,
    comparison,
)
from jetkiosk.calibration.quantize import QuantizeSpec, quantize, ranges_path
from jetkiosk.calibration.shipped_int8 import (
    SHIPPED,
    ShippedInt8,
    load_record,
    mismatches,
    prepare_variants,
    stale,
)
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.faces.liveness import LIVENESS_MODELS, LivenessCheck
from jetkiosk.edge.runtime import cpu_features
from jetkiosk.edge.runtime.backend import Backend
from jetkiosk.edge.runtime.manifest import (
    PAYS,
    Manifest,
    load_manifest,
    manifest_path,
    variant_path,
)
from jetkiosk.edge.runtime.onnx_runtime import OnnxRuntimeBackend

LIVENESS = sorted(p for name in LIVENESS_MODELS for p in SHIPPED.glob(f"{name}.*.json"))


def _config(models_dir: Path, *extra: str):
    return load_config(overrides=[f"models.dir={models_dir}", "models.backend=onnxruntime",
                                  "models.precision=fp32", *extra])


@pytest.fixture
def heldout(shared: Path, tmp_path: Path) -> Path:
    """Every photo of the last three lfw-calib people (held out by bench/int8.py), linked."""
    people = sorted(p for p in (shared / "faces/lfw-calib/people").iterdir() if p.is_dir())
    folder = tmp_path / "heldout"
    for person in people[-3:]:
        (folder / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir()):
            (folder / person.name / photo.name).symlink_to(photo)
    return folder


def stand_in_record(manifest: Manifest, form: str, folder: Path, speed: float) -> Path:
    """A record for ``manifest``'s model as bench/int8.py --ship writes one, its ranges from a
    few random 80x80 crops (the plumbing, not the accuracy), measured ``speed`` x as fast."""
    rng = np.random.default_rng(0)
    samples = [{manifest.inputs[0].name: rng.uniform(0, 255, (1, 3, 80, 80)).astype(np.float32)}
               for _ in range(4)]
    work = folder / f"work-{manifest.name}-{form}"
    quantize(manifest.model_path, work / "q.onnx", samples, QuantizeSpec(form), work)
    record = ShippedInt8(
        model=manifest.name, form=form, fingerprint=manifest.fingerprint, method="minmax",
        excluded=[], ranges=json.loads(ranges_path(work).read_text()),
        calibrated_on={"pictures": 4, "samples": 4}, gate={"metrics": {"faces": 4.0}},
        speed={"cpu": "a test CPU", "batch1": speed, "batch8": speed})
    path = folder / f"{manifest.name}.{form}.json"
    record.save(path)
    return path


def test_a_liveness_record_is_built_by_prepare_and_taken_where_it_pays(
        models_dir: Path, tmp_path: Path, monkeypatch, capsys):
    models, shipped = tmp_path / "models", tmp_path / "shipped"
    shutil.copytree(models_dir, models)
    shipped.mkdir()
    for name in LIVENESS_MODELS:  # only what this test ships
        for old in models.glob(f"{name}.int8*"):
            old.unlink()
    v2 = load_manifest(manifest_path(models, "minifasnet-v2"))
    record = load_record(stand_in_record(v2, "int8-cpu", shipped, 2.0))
    assert mismatches(record, v2.model_path) == [] and len(record.tensors()) > 20
    said: list = []
    (variant,) = prepare_variants(v2, said.append, folder=shipped)
    assert any("minifasnet-v2 int8-cpu: building (missing)" in line for line in said)
    assert variant.source["speed"] == record.speed and stale(record, v2) is None
    assert variant.fingerprint == v2.fingerprint
    monkeypatch.setattr(cpu_features, "int8_dot_product", lambda: "avx512_vnni")
    check = LivenessCheck.load(_config(models, "models.precision=auto"))
    assert [b.manifest.file for b in check.backends] == ["minifasnet-v2.int8-cpu.onnx",
                                                         "minifasnet-v1se.onnx"]
    assert "measured 2.00x as fast at batch 8" in check.backends[0].manifest.why
    check.close()
    assert main(["models", "list", "--json", "--models", str(models), "--backend",
                 "onnxruntime"]) == 0
    rows = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["minifasnet-v2"]["precision"] == "int8"
    assert rows["minifasnet-v1se"]["precision"] == "fp32"
    assert "there is no int8 variant" in rows["minifasnet-v1se"]["why"]
    # measured too slow: FP32
    stand_in_record(v2, "int8-cpu", shipped, 1.2)
    prepare_variants(v2, said.append, folder=shipped)
    check = LivenessCheck.load(_config(models, "models.precision=auto"))
    assert check.backends[0].manifest.file == "minifasnet-v2.onnx"
    assert "measured only 1.20x" in check.backends[0].manifest.why
    check.close()


def test_compare_liveness_lets_only_decisions_at_the_edge_change():
    ref = np.array([0.10, 0.49, 0.52, 0.90, 0.30])
    got = np.array([0.12, 0.51, 0.48, 0.88, 0.60])
    metrics = compare_liveness(ref, got, 0.5)
    assert metrics["faces"] == 5 and metrics["live_fp32"] == pytest.approx(0.4)
    assert metrics["live_delta_max"] == pytest.approx(0.30)
    assert metrics["live_delta_mean"] == pytest.approx(0.40 / 5)
    # 0.49 and 0.52 lie within LIVE_EDGE of the threshold, 0.30 does not
    assert metrics["decisions_changed"] == 3 and metrics["clear_decisions_changed"] == 1
    assert 0.5 - 0.30 >= LIVE_EDGE > 0.02
    assert judge("face-liveness", metrics) == [
        "live_delta_mean 0.0800 > 0.01", "live_delta_max 0.3000 > 0.1",
        "clear_decisions_changed 1.0000 > 0.0"]
    assert judge("face-liveness", compare_liveness(ref, ref + 0.001, 0.5)) == []
    assert set(BUDGETS["face-liveness"]) <= set(metrics)


def test_capture_records_the_crops_liveness_check_feeds_each_model(models_dir: Path,
                                                                     heldout: Path):
    config = _config(models_dir)
    detector = _detector(config)
    images = [frame(item) for item in candidates([heldout])[:3]]
    for name in LIVENESS_MODELS:
        manifest = load_manifest(manifest_path(models_dir, name))
        record, backend = capture(config, manifest), OnnxRuntimeBackend(manifest)
        for image in images:
            found = detector.detect(image)
            samples = record(image)
            assert len(samples) == 1 and len(found) >= 1  # one run: a batch of all faces
            (blob,) = samples[0].values()
            assert blob.shape == (len(found), 3, 80, 80)
            assert np.array_equal(blob, LivenessCheck.blob(image, found, backend))


class _Nudged(Backend):
    """FP32 with every live logit raised by ``shift``: scores move as INT8 noise might."""

    def __init__(self, inner: Backend, shift: float):
        super().__init__(inner.manifest)
        self.inner, self.shift = inner, shift

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = self.inner.run(feeds)
        post = self.manifest.postprocess
        logits = out[post["output"]].copy()
        logits[:, int(post["live_class"])] += self.shift
        return {**out, post["output"]: logits}


def test_the_gate_compares_each_models_own_live_score_on_held_out_faces(models_dir: Path,
                                                                         heldout: Path):
    config = _config(models_dir, "liveness.threshold=0.5")
    for name in LIVENESS_MODELS:
        manifest = load_manifest(manifest_path(models_dir, name))
        compare = comparison(config, manifest, [heldout])
        fp32 = OnnxRuntimeBackend(manifest)
        same = compare(fp32, fp32)
        assert same["faces"] >= 3 and same["live_delta_max"] == 0
        assert same["decisions_changed"] == 0 and judge(manifest.task, same) == []
        nudged = compare(fp32, _Nudged(fp32, 4.0))
        assert nudged["live_delta_mean"] > 0.01 and judge(manifest.task, nudged)
        for form in ("int8-cpu", "int8"):  # a shipped variant stays within budget here too
            variant = variant_path(manifest.path, form)
            if variant.is_file():
                metrics = compare(fp32, OnnxRuntimeBackend(load_manifest(variant)))
                assert judge(manifest.task, metrics) == [], (name, form, metrics)


def test_a_shipped_liveness_record_passed_its_gate_on_the_held_out_people():
    for path in LIVENESS:  # none passed yet (see bench/int8.py); the others' tests cover it too
        record = load_record(path)
        assert judge("face-liveness", record.gate["metrics"]) == [], path.name
        assert record.gate["metrics"]["faces"] > 300 and "batch8" in record.speed


def test_models_list_shows_the_liveness_models_and_why(models_dir: Path, capsys, monkeypatch):
    for dot in ("avx512_vnni", None):
        monkeypatch.setattr(cpu_features, "int8_dot_product", lambda dot=dot: dot)
        assert main(["models", "list", "--json", "--models", str(models_dir),
                     "--backend", "onnxruntime"]) == 0
        rows = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
        for name in LIVENESS_MODELS:
            row, shipped = rows[name], SHIPPED / f"{name}.int8-cpu.json"
            assert row["task"] == "face-liveness"
            pays = shipped.is_file() and load_record(shipped).speed["batch8"] >= PAYS
            if dot and pays:
                assert row["precision"] == "int8" and row["file"] == f"{name}.int8-cpu.onnx"
            else:
                assert row["precision"] == "fp32" and row["file"] == f"{name}.onnx"


def test_liveness_check_loads_at_the_configured_precision(models_dir: Path):
    check = LivenessCheck.load(_config(models_dir, "models.precision=int8"))
    for backend in check.backends:
        has = variant_path(manifest_path(models_dir, backend.manifest.name), "int8-cpu")
        want = has.name if has.is_file() else f"{backend.manifest.name}.json"
        assert backend.manifest.path is not None and backend.manifest.path.name == want
    check.close()
