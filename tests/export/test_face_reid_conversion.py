"""face-reid-0095: OpenVINO IR v5 -> ONNX, checked against the IR byte for byte, layer by layer
against an independent torch reimplementation, and on real faces."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.export.models.openvino_ir import (
    CONVERTER_VERSION,
    SOURCE_SHA256,
    convert,
    main,
    onnx_tensor_name,
    read_ir,
    torch_reference,
)

ROOT = Path(__file__).resolve().parents[2]
XML = "face-reidentification-retail-0095.xml"
BIN = "face-reidentification-retail-0095.bin"
SHIPPED = ROOT / "edge" / "faces" / "encoders" / "face-reid-0095.onnx"
LAYER_COUNTS = {"Convolution": 80, "PReLU": 48, "Eltwise": 27, "Pooling": 15, "Activation": 15,
                "ScaleShift": 1, "Input": 1}


@pytest.fixture(scope="module")
def src_dir(shared) -> Path:
    return shared / "models" / "face-reid-0095"


@pytest.fixture(scope="module")
def net(src_dir):
    return read_ir(src_dir / XML)


@pytest.fixture(scope="module")
def converted(src_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reid") / "face-reid-0095.onnx"
    assert convert(src_dir, out) == SOURCE_SHA256
    return out


def _session(model):
    import onnxruntime as ort

    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _bgr_batch(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, 3, 128, 128)).astype(np.float32)


def _copy_sources(src_dir: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (XML, BIN):
        (dst / name).write_bytes((src_dir / name).read_bytes())
    return dst


def test_every_bin_byte_is_used_once_and_layer_counts_match(net, src_dir):
    uses = np.zeros(net.bin_size, np.int32)
    for offset, size, _ in net.blob_ranges:
        uses[offset:offset + size] += 1
    assert net.bin_size == (src_dir / BIN).stat().st_size
    assert uses.min() == 1 and uses.max() == 1, (
        f"unused bytes {np.count_nonzero(uses == 0)}, reused {np.count_nonzero(uses > 1)}")
    assert Counter(layer.type for layer in net.layers) == LAYER_COUNTS
    assert net.layer(net.output_id).output_shape == (1, 256, 1, 1)
    conv = net.layer(4)  # depthwise 3x3 over 64 channels
    assert conv.weights is not None and conv.weights.shape == (64, 1, 3, 3)
    assert all(layer.weights is None or layer.weights.dtype == np.float32 for layer in net.layers)


def test_layer_by_layer_parity_with_torch_reference(net, converted):
    import onnx
    import torch

    model = onnx.load(str(converted))
    probe = copy.deepcopy(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    session = _session(probe.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    reference = torch_reference(net, torch.float64)
    worst = 0.0
    for seed in range(3):
        x = _bgr_batch(seed)
        got = dict(zip(names, session.run(None, {"input": x})))
        want = reference(torch.from_numpy(x))
        assert set(want) == {layer.id for layer in net.layers}
        for layer in net.layers[1:]:
            ours, theirs = got[onnx_tensor_name(layer)], want[layer.id].numpy()
            assert ours.shape == theirs.shape, layer
            err = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
            assert err < 1e-4, f"layer {layer.id} ({layer.type}): relative error {err:.2e}"
            worst = max(worst, err)
        emb = got["embeddings"]
        final = want[net.output_id].numpy().reshape(2, -1)
        assert emb.shape == (2, 256)
        assert np.abs(emb - final).max() / np.abs(final).max() < 1e-4
    print(f"max relative layer error {worst:.2e}")


def test_shipped_model_metadata_and_shape():
    import onnx

    model = onnx.load(str(SHIPPED))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["converter_version"] == str(CONVERTER_VERSION)
    for name, digest in SOURCE_SHA256.items():
        assert meta[f"source_sha256:{name}"] == digest
    assert model.producer_name == "jetkiosk.export.openvino_ir"
    assert [o.name for o in model.graph.output] == ["embeddings"]
    emb = _session(SHIPPED).run(None, {"input": _bgr_batch(7)})[0]
    assert emb.shape == (2, 256) and np.isfinite(emb).all()
    notice = (SHIPPED.parent / "NOTICE-face-reid-0095.md").read_text()
    assert all(digest in notice for digest in SOURCE_SHA256.values())
    assert "Apache License" in (SHIPPED.parent / "LICENSE-face-reid-0095.txt").read_text()


def test_shipped_model_matches_a_fresh_conversion(converted):
    x = np.concatenate([_bgr_batch(10), _bgr_batch(11)])
    shipped = _session(SHIPPED).run(None, {"input": x})[0]
    fresh = _session(converted).run(None, {"input": x})[0]
    assert np.abs(shipped - fresh).max() < 1e-5


def test_conversion_is_byte_identical(src_dir, converted, tmp_path):
    again = tmp_path / "again.onnx"
    convert(src_dir, again)
    assert again.read_bytes() == converted.read_bytes()


def test_truncated_bin_is_refused(src_dir, tmp_path):
    dst = _copy_sources(src_dir, tmp_path / "src")
    data = (dst / BIN).read_bytes()
    (dst / BIN).write_bytes(data[:len(data) - 1000])
    with pytest.raises(ModelError, match="runs past the end of .*truncated"):
        read_ir(dst / XML)
    with pytest.raises(ModelError, match="sha256 .* does not match"):
        convert(dst, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_wrong_sha256_is_refused(src_dir, tmp_path, capsys):
    dst = _copy_sources(src_dir, tmp_path / "src")
    with open(dst / XML, "ab") as f:
        f.write(b"\n")
    read_ir(dst / XML)  # still a valid IR: the checksum alone refuses it
    with pytest.raises(ModelError, match=f"{XML}: sha256 .* does not match the expected "
                                         f"{SOURCE_SHA256[XML]}"):
        convert(dst, tmp_path / "out.onnx")
    assert main([str(dst), str(tmp_path / "out.onnx")]) == 1
    assert "does not match" in capsys.readouterr().err


def test_unknown_layer_type_and_bad_xml_are_refused(src_dir, tmp_path):
    dst = _copy_sources(src_dir, tmp_path / "src")
    text = (src_dir / XML).read_text()
    (dst / XML).write_text(text.replace('type="Activation"', 'type="HSwish"', 1))
    with pytest.raises(ModelError, match=r"layer \d+ .*unknown layer type 'HSwish'"):
        read_ir(dst / XML)
    (dst / XML).write_text(text.replace('version="5"', 'version="10"', 1))
    with pytest.raises(ModelError, match="not an OpenVINO IR version 5"):
        read_ir(dst / XML)
    (dst / XML).write_text(text[:len(text) // 2])
    with pytest.raises(ModelError, match="malformed XML"):
        read_ir(dst / XML)


def test_embeddings_tell_people_apart(shared):
    """Smoke test on LFW photos (250x250, roughly aligned): the central 128 px crop."""
    import cv2

    people_dir = shared / "faces" / "lfw-calib" / "people"
    people = [p for p in sorted(people_dir.iterdir()) if len(list(p.glob("*.jpg"))) >= 2][:8]
    assert len(people) == 8
    session = _session(SHIPPED)

    def embed(paths):
        crops = [cv2.resize(cv2.imread(str(p))[61:189, 61:189], (128, 128)) for p in paths]
        x = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)  # BGR, 0-255
        e = session.run(None, {"input": x})[0]
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    margins = []
    for i, person in enumerate(people):
        a, b = sorted(person.glob("*.jpg"))[:2]
        other = min(people[(i + 1) % len(people)].glob("*.jpg"))
        e = embed([a, b, other])
        margins.append(float(e[0] @ e[1] - e[0] @ e[2]))
    assert min(margins) > 0, margins
    assert np.mean(margins) > 0.2, margins


def test_source_hashes_match_the_files(src_dir):
    for name, digest in SOURCE_SHA256.items():
        assert hashlib.sha256((src_dir / name).read_bytes()).hexdigest() == digest
