"""Encoder training: throughput, and held-out verification of what it produces.

ORL (../shared/faces/orl) split by subject: s1-s30 train (s1-s5 of them validate, to pick
the best step), s31-s40 held out. Every held-out figure comes from the exported ONNX model
through the runtime's backend and encoder (all genuine pairs, all impostor pairs).

    .venv/bin/python bench/encoder_train.py [--device cuda] [--steps 300] [--quick]

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
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np

from common import SHARED, analyzer, machine, parse

warnings.filterwarnings("ignore")
FACENET = "facenet-casia"  # what the rows fine-tune and compare with (not the default encoder)


@dataclass
class Split:
    """ORL by subject: ``train`` (its first ``validate`` subjects validate), ``held_out``."""

    train: List[str]
    held_out: List[str]
    validate: int

    @classmethod
    def of(cls, train: int, held_out: int, validate: int) -> Split:
        return cls([f"s{i}" for i in range(1, train + 1)],
                   [f"s{i}" for i in range(41 - held_out, 41)], validate)

    @property
    def val(self) -> List[str]:
        return self.train[:self.validate]

    @property
    def fit(self) -> List[str]:
        return self.train[self.validate:]

    def describe(self) -> str:
        return (f"held out {self.held_out[0]}-{self.held_out[-1]}; train {self.fit[0]}-"
                f"{self.fit[-1]}, validate {self.val[0]}-{self.val[-1]}")


FULL, QUICK = Split.of(30, 10, 5), Split.of(6, 3, 2)
QUICK_PHOTOS = 5  # of each subject's 10


def runtime_encodings(manifest, folder) -> np.ndarray:
    from jetkiosk.edge.faces.encoder import FaceEncoder
    from jetkiosk.edge.runtime.backend import load_backend

    encoder = FaceEncoder(load_backend("onnxruntime", manifest))
    return encoder.encode(list(folder.align(manifest.preprocess)))


def row(label: str, report, extra: str = "") -> None:
    print(f"{label:44s} {report.eer * 100:6.2f}%  {report.tar_at_far['0.01']:.3f}   "
          f"{report.tar_at_far['0.001']:.3f}   {extra}")


def train(split: Split, folder, held_out, out: Path, name: str, net, pre, steps: int, lr: float,
          mining: str, views: int, device: str, augment: str = "mirror,crop,color,pca"):
    from jetkiosk.export.encoder.augment import Augmenter, AugmentSettings, pca_basis
    from jetkiosk.export.encoder.onnx_export import export_encoder
    from jetkiosk.export.encoder.train import EncoderTrainSettings, LabelledCrops, train_encoder
    from jetkiosk.export.encoder.verification_eval import verification_report

    fit, val = folder.subset(split.fit), folder.subset(split.val)
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

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=300)
    args = parse(parser, "5 photos each of ORL s1-s6 and s38-s40, 1-2 steps per row, 1 cached view")
    split = QUICK if args.quick else FULL
    a = analyzer(f"models.encoder={FACENET}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        orl = SHARED / "orl"
        if args.quick:  # a folder of links to the split's subjects' first photos
            orl = out / "orl"
            for subject in (*split.train, *split.held_out):
                (orl / subject).mkdir(parents=True)
                photos = sorted((SHARED / "orl" / subject).iterdir())
                for photo in photos[:QUICK_PHOTOS]:
                    (orl / subject / photo.name).symlink_to(photo)
        folder = detect_face_folder(orl, a.detector)
        steps, views = (1, 1) if args.quick else (args.steps, 8)
        compare(a, folder, split, out, steps, views, 1 if args.quick else 20, args.device)


def compare(a, folder, split: Split, out: Path, steps: int, cached_views: int, least: int,
            device: str) -> None:
    """Every row; fine-tuning with ``cached_views`` views, unfrozen for ``least`` steps or
    more."""
    from jetkiosk.export.encoder.head_train import train_head
    from jetkiosk.export.encoder.nets import facenet_net, small_net
    from jetkiosk.export.encoder.onnx_export import training_preprocess
    from jetkiosk.export.encoder.small_resnet import SmallResNetConfig
    from jetkiosk.export.encoder.verification_eval import verification_report

    train_set, held_out = folder.subset(split.train), folder.subset(split.held_out)
    genuine = sum(n * (n - 1) // 2 for n in np.bincount(held_out.labels))
    impostor = len(held_out.labels) * (len(held_out.labels) - 1) // 2 - genuine
    print(f"# ORL {split.describe()}: {genuine} genuine / {impostor} impostor pairs held "
          f"out; {steps} steps of 8 x 4; {machine()}")
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
            f"{seconds:.1f}s on {len(train_set.labels)} faces' pairs")
    for frozen, views, label in ((24, cached_views, "embedding layer only"),
                                 (20, 0, "last 4 units + embedding")):
        net = facenet_net()
        net.freeze(frozen)
        run = steps if views else max(least, steps // 10)
        report, result, total = train(split, train_set, held_out, out, f"ft{frozen}", net,
                                      pre, run, 1e-4, "semi-hard", views, device)
        row(f"FaceNet fine-tuned, {label}", report,
            f"{result.images_per_second:.0f} img/s, {run} steps in {total:.0f}s, "
            f"best step {result.best_step}")
    small_pre = training_preprocess(64)
    for mining in ("semi-hard", "batch-hard", "batch-all"):
        report, result, total = train(split, train_set, held_out, out, f"small-{mining}",
                                      small_net(SmallResNetConfig()), small_pre,
                                      steps * 2, 3e-3, mining, 0, device)
        row(f"small ResNet 64px from scratch, {mining}", report,
            f"{result.images_per_second:.0f} img/s, {steps * 2} steps in {total:.0f}s,"
            f" best step {result.best_step}")


if __name__ == "__main__":
    main()
