"""Encoder training: throughput, and held-out verification of what it produces.

ORL (../shared/faces/orl) split by subject: s1-s30 train (s1-s5 of them validate, to pick
the best step), s31-s40 held out. Every held-out figure comes from the exported ONNX model
through the runtime's backend and encoder (all genuine pairs, all impostor pairs).

    .venv/bin/python bench/encoder_train.py [--device cuda] [--steps 300]

Rows: the pretrained FaceNet; verification heads (abs, chi2) trained on the training
identities' pretrained encodings; FaceNet fine-tuned with a frozen trunk (embedding layer
only, cached trunk features) and with the last units unfrozen; the small residual network
from scratch with each mining strategy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common import SHARED, analyzer, machine

warnings.filterwarnings("ignore")
TRAIN = [f"s{i}" for i in range(1, 31)]
VAL, FIT = TRAIN[:5], TRAIN[5:]
HELD_OUT = [f"s{i}" for i in range(31, 41)]


def runtime_encodings(manifest, folder) -> np.ndarray:
    from jetkiosk.edge.faces.encoder import FaceEncoder
    from jetkiosk.edge.runtime.backend import load_backend

    encoder = FaceEncoder(load_backend("onnxruntime", manifest))
    return encoder.encode(list(folder.align(manifest.preprocess)))


def row(label: str, report, extra: str = "") -> None:
    print(f"{label:44s} {report.eer * 100:6.2f}%  {report.tar_at_far['0.01']:.3f}   "
          f"{report.tar_at_far['0.001']:.3f}   {extra}")


def train(folder, held_out, out: Path, name: str, net, pre, steps: int, lr: float,
          mining: str, views: int, device: str, augment: str = "mirror,crop,color,pca"):
    from jetkiosk.export.encoder.augment import Augmenter, AugmentSettings, pca_basis
    from jetkiosk.export.encoder.onnx_export import export_encoder
    from jetkiosk.export.encoder.train import EncoderTrainSettings, LabelledCrops, train_encoder
    from jetkiosk.export.encoder.verification_eval import verification_report

    fit, val = folder.subset(FIT), folder.subset(VAL)
    canvases = fit.align(pre, 8)
    settings = AugmentSettings.only(augment.split(","))
    augmenter = Augmenter(settings, 8, 0, pca_basis(canvases) if settings.pca else None)
    start = time.monotonic()
    result = train_encoder(
        net, LabelledCrops(canvases, fit.labels, 8), pre, augmenter,
        EncoderTrainSettings(steps=steps, lr=lr, mining=mining, views=views, eval_every=25),
        out / f"{name}.ckpt", LabelledCrops(val.align(pre), val.labels, 0), device,
        log=lambda _: None)
    total = time.monotonic() - start
    manifest = export_encoder(result.net, out, name, pre, {})
    report = verification_report(runtime_encodings(manifest, held_out), held_out.labels)[0]
    return report, result, total


def main() -> None:
    from jetkiosk.export.encoder.face_folder import detect_face_folder
    from jetkiosk.export.encoder.head_train import train_head
    from jetkiosk.export.encoder.nets import facenet_net, small_net
    from jetkiosk.export.encoder.onnx_export import training_preprocess
    from jetkiosk.export.encoder.small_resnet import SmallResNetConfig
    from jetkiosk.export.encoder.verification_eval import verification_report

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    a = analyzer()
    folder = detect_face_folder(SHARED / "orl", a.detector)
    train_set, held_out = folder.subset(TRAIN), folder.subset(HELD_OUT)
    print(f"# ORL held out s31-s40: 450 genuine / 4500 impostor pairs; train s6-s30, "
          f"validate s1-s5; {args.steps} steps of 8 x 4; {machine()}")
    print(f"{'encoder':44s} {'EER':>7s}  TAR@1e-2 TAR@1e-3 training")
    pre = a.encoder_manifest.preprocess
    pretrained = runtime_encodings(a.encoder_manifest, held_out)
    row("FaceNet pretrained (squared L2)", verification_report(pretrained, held_out.labels)[0])
    train_enc = runtime_encodings(a.encoder_manifest, train_set)
    for kind in ("abs", "chi2"):
        start = time.monotonic()
        head = train_head(train_enc, train_set.labels, kind, a.fingerprint)
        seconds = time.monotonic() - start
        report = verification_report(pretrained, held_out.labels,
                                     lambda x, y, h=head: 1.0 - h.probability(x, y))[0]
        row(f"FaceNet pretrained + {kind} verification head", report,
            f"{seconds:.1f}s on 300 faces' pairs")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for frozen, views, label in ((24, 8, "embedding layer only"),
                                     (20, 0, "last 4 units + embedding")):
            net = facenet_net()
            net.freeze(frozen)
            steps = args.steps if views else max(20, args.steps // 10)
            report, result, total = train(train_set, held_out, out, f"ft{frozen}", net, pre,
                                          steps, 1e-4, "semi-hard", views, args.device)
            row(f"FaceNet fine-tuned, {label}", report,
                f"{result.images_per_second:.0f} img/s, {steps} steps in {total:.0f}s, "
                f"best step {result.best_step}")
        small_pre = training_preprocess(64)
        for mining in ("semi-hard", "batch-hard", "batch-all"):
            report, result, total = train(train_set, held_out, out, f"small-{mining}",
                                          small_net(SmallResNetConfig()), small_pre,
                                          args.steps * 2, 3e-3, mining, 0, args.device)
            row(f"small ResNet 64px from scratch, {mining}", report,
                f"{result.images_per_second:.0f} img/s, {args.steps * 2} steps in {total:.0f}s,"
                f" best step {result.best_step}")


if __name__ == "__main__":
    main()
