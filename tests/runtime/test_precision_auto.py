"""models.precision = "auto": INT8 per model where a gated variant exists and pays, with the
reason; the CPU's int8 dot product read from its flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.runtime import cpu_features
from jetkiosk.edge.runtime.manifest import (
    Manifest,
    TensorSpec,
    engine_precision,
    load_precision,
    variant_path,
)

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 {extra}\n\n" \
      "processor\t: 1\nflags\t\t: fpu\n"
ARM = "processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd asimddp\n"


def test_cpu_flags_are_read_from_the_first_processor(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text(X86.format(extra="avx512f avx512_vnni"))
    assert {"avx2", "avx512_vnni"} <= cpu_features.cpu_flags(info)
    assert cpu_features.int8_dot_product(info) == "avx512_vnni"
    plain = tmp_path / "plain"
    plain.write_text(X86.format(extra=""))
    assert cpu_features.int8_dot_product(plain) is None
    arm = tmp_path / "arm"
    arm.write_text(ARM)
    assert "asimddp" in cpu_features.cpu_flags(arm)
    assert cpu_features.cpu_flags(tmp_path / "missing") == frozenset()


def _model(folder: Path, form: str = "", speed=None) -> Path:
    """A manifest (and a stand-in model file) for model ``m``, or its ``form`` variant."""
    base = folder / "m.json"
    path = variant_path(base, form) if form else base
    (folder / f"{path.stem}.onnx").write_bytes(b"model")
    source = {"package": "x"}
    if form:
        source = {"quantized_from": {"fingerprint": "f"}, "form": form}
        if speed is not None:
            source["speed"] = {"cpu": "a test CPU", **speed}
    Manifest("m", "face-encoder", f"{path.stem}.onnx", "0", [TensorSpec("x", (1,))],
             [TensorSpec("y", (1,))], {}, source, "MIT").save(path)
    return base


@pytest.fixture
def vnni(monkeypatch):
    monkeypatch.setattr(cpu_features, "int8_dot_product", lambda: "avx512_vnni")


@pytest.fixture
def avx2_only(monkeypatch):
    monkeypatch.setattr(cpu_features, "int8_dot_product", lambda: None)


def test_auto_takes_a_variant_that_pays_on_a_cpu_with_an_int8_dot_product(tmp_path, vnni):
    base = _model(tmp_path)
    _model(tmp_path, "int8-cpu", {"batch1": 3.1, "batch8": 4.5})
    chosen = load_precision(base, "auto", "onnxruntime")
    assert chosen.file == "m.int8-cpu.onnx"
    assert chosen.why.startswith("int8: ") and "4.50x" in chosen.why and "avx512_vnni" in chosen.why


def test_auto_keeps_fp32_where_int8_does_not_pay(tmp_path, vnni):
    base = _model(tmp_path)
    _model(tmp_path, "int8-cpu", {"batch1": 0.93, "batch8": 1.3})
    chosen = load_precision(base, "auto", "onnxruntime")
    assert chosen.file == "m.onnx"
    assert chosen.why.startswith("fp32: ") and "1.30x" in chosen.why and "batch 8" in chosen.why
    # a detector's variant is measured at batch 1 only
    _model(tmp_path, "int8-cpu", {"batch1": 1.2})
    assert "1.20x as fast at batch 1" in load_precision(base, "auto", "onnxruntime").why
    # "int8" asked for explicitly is taken whatever it was measured at
    assert load_precision(base, "int8", "onnxruntime").file == "m.int8-cpu.onnx"


def test_auto_keeps_fp32_on_a_cpu_without_an_int8_dot_product(tmp_path, avx2_only):
    base = _model(tmp_path)
    _model(tmp_path, "int8-cpu", {"batch8": 4.5})
    chosen = load_precision(base, "auto", "onnxruntime")
    assert chosen.file == "m.onnx" and "no int8 dot product" in chosen.why


def test_auto_without_a_variant_says_why(tmp_path, vnni):
    base = _model(tmp_path)
    assert "there is no int8 variant" in load_precision(base, "auto", "onnxruntime").why
    (tmp_path / "m.int8-cpu.gate.json").write_text("{}")
    assert "failed the accuracy gate" in load_precision(base, "auto", "onnxruntime").why
    assert load_precision(base, "fp32", "onnxruntime").why == "fp32: as configured"
    with pytest.raises(ModelError, match="models.precision: 'int4'"):
        load_precision(base, "int4", "onnxruntime")


def test_auto_under_tensorrt_is_int8_for_a_gated_variant_else_fp16(tmp_path, avx2_only):
    base = _model(tmp_path)
    fp16 = load_precision(base, "auto", "tensorrt")
    assert fp16.file == "m.onnx" and fp16.why.startswith("fp16: ")
    assert engine_precision(fp16, "auto") == "fp16"
    _model(tmp_path, "int8")
    int8 = load_precision(base, "auto", "tensorrt")
    assert int8.file == "m.int8.onnx" and engine_precision(int8, "auto") == "int8"
    assert engine_precision(dataclasses.replace(int8), "fp32") == "fp32"
    assert "why" not in int8.to_json()
