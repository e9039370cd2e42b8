"""Encoder training on ../shared/faces/orl split by subject: s1-s30 train, s31-s40 held out.

Held-out figures come from the exported ONNX models through the runtime's own backend and
encoder, so they are what a deployment would see.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from jetkiosk.edge.core.errors import JetkioskError
from jetkiosk.edge.faces.encoder import FaceEncoder, encoder_blob
from jetkiosk.edge.runtime.backend import load_backend
from jetkiosk.edge.runtime.manifest import load_manifest
from jetkiosk.export.encoder.augment import Augmenter, AugmentSettings, pca_basis
from jetkiosk.export.encoder.face_folder import detect_face_folder, identity_folders
from jetkiosk.export.encoder.nets import facenet_net, small_net
from jetkiosk.export.encoder.onnx_export import export_encoder, training_preprocess
from jetkiosk.export.encoder.small_resnet import SmallResNetConfig
from jetkiosk.export.encoder.train import EncoderTrainSettings, LabelledCrops, train_encoder
from jetkiosk.export.encoder.verification_eval import verification_report

TRAIN = [f"s{i}" for i in range(1, 31)]
HELD_OUT = [f"s{i}" for i in range(31, 41)]


@pytest.fixture(scope="module")
def orl(analyzer, shared):
    folder = detect_face_folder(shared / "faces/orl", analyzer.detector)
    assert len(folder) == 400  # every ORL photo has its face found
    return folder.subset(TRAIN), folder.subset(HELD_OUT)


def held_out_eer(manifest, held_out) -> float:
    encoder = FaceEncoder(load_backend("onnxruntime", manifest))
    encodings = encoder.encode(list(held_out.align(manifest.preprocess)))
    return verification_report(encodings, held_out.labels)[0].eer


def crops(folder, preprocess, pad: int, augment: str, seed: int = 0):
    canvases = folder.align(preprocess, pad)
    settings = AugmentSettings.only(augment.split(","))
    basis = pca_basis(canvases) if settings.pca else None
    return LabelledCrops(canvases, folder.labels, pad), Augmenter(settings, pad, seed, basis)


def test_face_folder_layout_errors(tmp_path, analyzer):
    with pytest.raises(JetkioskError, match="no such folder"):
        identity_folders(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only/a.jpg").write_bytes(b"x")
    with pytest.raises(JetkioskError, match="need at least 2"):
        identity_folders(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(JetkioskError, match="only 0 identities have two usable faces"):
        detect_face_folder(tmp_path, analyzer.detector)


def test_centre_crop_of_a_training_canvas_is_the_runtime_crop(orl, analyzer):
    train, _ = orl
    pre = analyzer.encoder_manifest.preprocess
    few = train.subset(["s1", "s2"])
    canvas, runtime = few.align(pre, pad=8), few.align(pre)
    centre = canvas[:, 8:-8, 8:-8].astype(int)
    assert np.abs(centre - runtime).max() <= 1


def test_small_backbone_from_scratch_learns_and_exports(orl, tmp_path):
    train, held_out = orl
    pre = training_preprocess(64)
    data, augment = crops(train, pre, 6, "mirror,crop,color,pca")
    net = small_net(SmallResNetConfig())
    settings = EncoderTrainSettings(steps=150, lr=3e-3, mining="semi-hard", eval_every=1000)
    result = train_encoder(net, data, pre, augment, settings, tmp_path / "s.ckpt",
                           log=lambda _: None)
    steps = [h for h in result.history if "loss" in h]
    first, last = steps[:20], steps[-20:]

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    assert mean(last, "loss") < 0.6 * mean(first, "loss")  # the loss falls
    assert all(0.0 <= r["active"] <= 1.0 and r["triplets"] == 32 * 3 for r in steps)  # (A, P)
    assert mean(last, "active") < mean(first, "active")  # fewer triplets violate the margin
    gap_first, gap_last = (mean(rows, "d_neg") - mean(rows, "d_pos") for rows in (first, last))
    assert gap_first < gap_last and gap_last > 0.3  # identities pull apart
    assert result.images_per_second > 0
    manifest = export_encoder(result.net, tmp_path, "small-orl", pre, {"test": True})
    # the exported ONNX matches PyTorch
    sample = encoder_blob(list(held_out.align(pre)[:8]), pre)
    with torch.no_grad():
        reference = result.net(torch.from_numpy(sample)).numpy()
    session = ort.InferenceSession(str(manifest.model_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(["embeddings"], {"input": sample})[0]
    assert np.abs(onnx_out - reference).max() < 1e-4
    assert held_out_eer(manifest, held_out) < 0.25  # chance is 0.5


def test_fine_tuned_facenet_is_no_worse_on_held_out_people(orl, models_dir, tmp_path):
    train, held_out = orl
    facenet = load_manifest(models_dir / "facenet-casia.json")
    pre = facenet.preprocess
    pretrained = held_out_eer(facenet, held_out)
    val_ids, fit_ids = TRAIN[:5], TRAIN[5:]
    data, augment = crops(train.subset(fit_ids), pre, 8, "mirror,crop,color")
    val_folder = train.subset(val_ids)
    val = LabelledCrops(val_folder.align(pre), val_folder.labels, 0)
    net = facenet_net()
    net.freeze(len(net.units))  # train only the embedding layer, on cached trunk features
    settings = EncoderTrainSettings(steps=60, lr=1e-4, views=2, eval_every=20)
    result = train_encoder(net, data, pre, augment, settings, tmp_path / "f.ckpt", val,
                           log=lambda _: None)
    assert [h["step"] for h in result.history if "val_eer" in h] == [0, 20, 40, 60]
    manifest = export_encoder(result.net, tmp_path, "facenet-orl", pre, {"test": True})
    assert manifest.preprocess == facenet.preprocess
    assert manifest.outputs == facenet.outputs
    tuned = held_out_eer(load_manifest(manifest.path), held_out)
    assert tuned <= pretrained, (tuned, pretrained)


def test_training_resumes_where_it_stopped(orl, tmp_path, monkeypatch):
    from jetkiosk.export.encoder import train as encoder_train

    train, _ = orl
    pre = training_preprocess(32)
    few = train.subset(TRAIN[:6])
    config = SmallResNetConfig((8, 16), 1, 16)

    def run(checkpoint):
        data, augment = crops(few, pre, 4, "mirror,crop,color,pca", seed=5)
        settings = EncoderTrainSettings(steps=20, identities=4, photos=3, lr=1e-2,
                                        checkpoint_every=10, seed=5)
        torch.manual_seed(0)
        return train_encoder(small_net(config), data, pre, augment, settings, checkpoint,
                             log=lambda _: None).net

    straight = run(tmp_path / "a.ckpt")
    save = encoder_train.save_checkpoint

    def killed_after_first_checkpoint(*args):
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder_train, "save_checkpoint", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt")
    monkeypatch.setattr(encoder_train, "save_checkpoint", save)
    assert torch.load(str(tmp_path / "b.ckpt"), weights_only=False)["step"] == 10
    shutil.copyfile(tmp_path / "b.ckpt", tmp_path / "b-at-10.ckpt")
    resumed = run(tmp_path / "b.ckpt")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    other = small_net(SmallResNetConfig((8, 32), 1, 16))
    data, augment = crops(few, pre, 4, "none")
    with pytest.raises(JetkioskError, match="remove it to start again"):
        train_encoder(other, data, pre, augment, EncoderTrainSettings(steps=20),
                      tmp_path / "b-at-10.ckpt", log=lambda _: None)
