"""``jetkiosk encoder train | evaluate | head``: adapt the face encoder, measure it, and
learn a verification head. Training needs the export extra (PyTorch); evaluation and heads
run the exported ONNX models through the runtime's own backend.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from jetkiosk.edge.core.config import Config
from jetkiosk.edge.core.errors import ConfigError, GalleryError, missing_extra


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
                ) -> None:
    encoder = sub.add_parser("encoder", help="train, evaluate and add a verification head to "
                             "the face encoder")
    actions = encoder.add_subparsers(dest="action", required=True)

    train = actions.add_parser("train", help="triplet-loss training (export extra)")
    _data_options(train)
    train.add_argument("--name", required=True, help="the new encoder's model name")
    train.add_argument("--backbone", choices=["facenet", "face-reid", "small"],
                       default="facenet", help="facenet: fine-tune the pretrained FaceNet; "
                       "face-reid: fine-tune face-reid-0095 (from its OpenVINO IR; 17 units); "
                       "small: a small residual network from scratch")
    train.add_argument("--freeze", default="all", help="trunk units frozen from the input "
                       "(facenet has 24): a number, or 'all' to train only the embedding layer")
    train.add_argument("--embedding", type=int, default=0, help="facenet: replace the embedding "
                       "layer by a new one of this size (0: keep the pretrained one)")
    train.add_argument("--size", type=int, default=64, help="small: input size (multiple of 16)")
    train.add_argument("--widths", default="32,64,128,256", help="small: stage widths")
    train.add_argument("--mining", choices=["batch-all", "batch-hard", "semi-hard"],
                       default="semi-hard")
    train.add_argument("--margin", type=float, default=0.2, help="triplet margin alpha")
    train.add_argument("--identities", type=int, default=8, help="P: identities per batch")
    train.add_argument("--photos", type=int, default=4, help="K: photos per identity")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (default 1e-4 facenet, 3e-3 small)")
    train.add_argument("--views", type=int, default=8, help="augmented views cached per photo "
                       "for a frozen trunk prefix (0: fresh augmentation every step)")
    train.add_argument("--augment", default="mirror,crop,color,pca",
                       help="comma-separated: mirror, crop, color, pca (or none)")
    train.add_argument("--pad", type=int, default=8, help="random-crop jitter, px a side")
    train.add_argument("--val-identities", type=int, default=0, help="identities held out of "
                       "training to pick the best step (0: keep the last)")
    train.add_argument("--eval-every", type=int, default=50)
    train.add_argument("--checkpoint", type=Path, help="resumable checkpoint "
                       "(default <models>/<name>.ckpt)")
    train.add_argument("--device", default="auto", help="auto | cpu | cuda")
    common(train)

    evaluate = actions.add_parser("evaluate", help="ROC, EER, TAR at FAR on a labelled folder")
    _data_options(evaluate)
    evaluate.add_argument("--encoder", help="encoder model name (default models.encoder)")
    evaluate.add_argument("--head", type=Path, help="score with this verification head file")
    evaluate.add_argument("--impostors", type=int, default=20_000,
                          help="impostor pairs sampled (every genuine pair is used)")
    evaluate.add_argument("--report", type=Path, default=Path("encoder-report"),
                          help="folder for report.json, roc.png and distances.png")
    evaluate.add_argument("--write-threshold", action="store_true",
                          help="write the recommended threshold into the gallery")
    evaluate.add_argument("--rule", default="accuracy",
                          help="recommended threshold: accuracy, eer or far=0.001")
    common(evaluate)

    head = actions.add_parser("head", help="train a verification head on pairs")
    _data_options(head)
    head.add_argument("--encoder", help="encoder model name (default models.encoder)")
    head.add_argument("--kind", choices=["abs", "chi2"], default="abs",
                      help="abs: |f_i - f_j|; chi2: (f_i - f_j)^2 / (|f_i| + |f_j|)")
    head.add_argument("--out", type=Path, required=True, help="head file (JSON)")
    head.add_argument("--install", action="store_true",
                      help="make the gallery decide with this head")
    common(head)

    calibrate = actions.add_parser(
        "calibrate", help="score calibration for gallery.target_fpir on real photos")
    calibrate.add_argument("--data", type=Path, required=True,
                           help="people/<name>/<photo> and strangers/<photo> (lfw-calib)")
    calibrate.add_argument("--encoder", help="encoder model name (default models.encoder)")
    calibrate.add_argument("--out", type=Path, help="write the calibration here (default: "
                           "into the encoder's manifest)")
    calibrate.add_argument("--cache", type=Path, help="keep detections and encodings here")
    common(calibrate)


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with one subfolder of photos per identity")
    parser.add_argument("--only", help="comma-separated identities to use (a split)")
    parser.add_argument("--seed", type=int, default=0)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(done: int, total: int) -> None:
    print(f"\r  {done}/{total} photos", end="\n" if done == total else "", file=sys.stderr,
          flush=True)


def _faces(args: argparse.Namespace, config: Config):
    """The data folder's faces, found by the runtime's detector."""
    from jetkiosk.edge.faces.analyzer import configured_detector, model_manifest
    from jetkiosk.edge.runtime.backend import load_backend
    from jetkiosk.export.encoder.face_folder import detect_face_folder

    manifest = model_manifest(config, config.models.detector, "face-detector")
    detector = configured_detector(config, load_backend(config.models.backend, manifest,
                                                        config))
    folder = detect_face_folder(args.data, detector, _progress)
    if args.only:
        folder = folder.subset([i.strip() for i in args.only.split(",") if i.strip()])
    _say(f"{args.data}: {len(folder)} faces of {len(folder.identities)} identities")
    return folder


def _encodings(config: Config, name: Optional[str], folder) -> Tuple[np.ndarray, object]:
    """Runtime encodings (the ONNX model through the configured backend) of every face."""
    from jetkiosk.edge.faces.analyzer import model_manifest
    from jetkiosk.edge.faces.encoder import FaceEncoder
    from jetkiosk.edge.runtime.backend import load_backend

    manifest = model_manifest(config, name or config.models.encoder, "face-encoder")
    encoder = FaceEncoder(load_backend(config.models.backend, manifest, config),
                          max_batch=config.encoder.max_batch)
    return encoder.encode(list(folder.align(manifest.preprocess))), manifest


def cmd_train(args: argparse.Namespace, config: Config) -> int:
    try:
        from jetkiosk.export.encoder.nets import face_reid_net, facenet_net, small_net
        from jetkiosk.export.encoder.onnx_export import export_encoder, training_preprocess
        from jetkiosk.export.encoder.small_resnet import SmallResNetConfig
        from jetkiosk.export.encoder.train import EncoderTrainSettings, LabelledCrops, train_encoder
    except ImportError as exc:
        raise missing_extra("encoder train", "export", exc) from None
    from jetkiosk.export.encoder.augment import Augmenter, AugmentSettings, pca_basis

    base = None  # the preprocessing the alignment template comes from (None: FaceNet's)
    if args.backbone == "facenet":
        net = facenet_net(args.embedding)
        size, lr = 160, args.lr or 1e-4
    elif args.backbone == "face-reid":
        from jetkiosk.export.models.prepare import RECIPES

        net = face_reid_net(args.embedding)
        base = next(r.preprocess for r in RECIPES if r.name == "face-reid-0095")
        size, lr = base["size"][0], args.lr or 1e-4
    else:
        widths = tuple(int(w) for w in args.widths.split(","))
        net = small_net(SmallResNetConfig(widths, 1, args.embedding or 128))
        size, lr = args.size, args.lr or 3e-3
    freeze = len(net.units) if args.freeze == "all" else _int(args.freeze, "--freeze")
    net.freeze(freeze)
    preprocess = training_preprocess(size, base)
    folder = _faces(args, config)
    val = None
    ids = list(folder.identities)
    if args.val_identities:
        if args.val_identities >= len(ids) - 1:
            raise ConfigError(f"--val-identities {args.val_identities}: only {len(ids)} "
                              "identities")
        held = list(np.random.default_rng(args.seed).choice(ids, args.val_identities, False))
        val_folder = folder.subset(held)
        folder = folder.subset([i for i in ids if i not in held])
        val = LabelledCrops(val_folder.align(preprocess), val_folder.labels, 0)
    canvases = folder.align(preprocess, args.pad)
    try:
        augment = AugmentSettings.only(args.augment.split(","))
    except ValueError as exc:
        raise ConfigError(f"--augment: {exc}") from None
    augmenter = Augmenter(augment, args.pad, args.seed,
                          pca_basis(canvases) if augment.pca else None)
    settings = EncoderTrainSettings(
        steps=args.steps, identities=args.identities, photos=args.photos, lr=lr,
        margin=args.margin, mining=args.mining, views=args.views,
        eval_every=args.eval_every, seed=args.seed)
    checkpoint = args.checkpoint or config.models_dir / f"{args.name}.ckpt"
    result = train_encoder(net, LabelledCrops(canvases, folder.labels, args.pad), preprocess,
                           augmenter, settings, checkpoint, val, args.device, _say)
    manifest = export_encoder(result.net, config.models_dir, args.name, preprocess, {
        "data": str(args.data), "identities": len(folder.identities), "faces": len(folder),
        "frozen_units": freeze, "augment": augment.enabled(), "train": vars(settings),
        "best_step": result.best_step, "validation_eer": result.best_eer})
    _say(f"wrote {manifest.path}; use it with --set models.encoder={args.name} "
         "(re-enroll: a new encoder makes new encodings)")
    return 0


def cmd_evaluate(args: argparse.Namespace, config: Config) -> int:
    from jetkiosk.export.encoder.verification_eval import (
        plot,
        squared_l2,
        verification_report,
        write_report,
    )

    folder = _faces(args, config)
    encodings, manifest = _encodings(config, args.encoder, folder)
    scorer, score = squared_l2, "squared L2 distance"
    if args.head:
        head = _read_head(args.head, manifest)
        scorer, score = (lambda a, b: 1.0 - head.probability(a, b)), "1 - p(same)"
    report, genuine, impostor = verification_report(encodings, folder.labels, scorer,
                                                    args.impostors, args.seed)
    args.report.mkdir(parents=True, exist_ok=True)
    write_report(report, args.report / "report.json", encoder=manifest.name,
                 head=str(args.head or ""), data=str(args.data), score=score)
    try:
        plot(report, genuine, impostor, args.report, manifest.name, score)
    except ImportError as exc:
        raise missing_extra("the ROC plots (matplotlib)", "export",
                            f"{exc}; the figures are in {args.report / 'report.json'}") from None
    print(report.summary())
    if args.write_threshold:
        try:
            threshold = report.recommended(args.rule)
        except ValueError as exc:
            raise ConfigError(f"--rule: {exc}") from None
        _update_gallery(config, manifest, lambda g: _set_default(g, threshold, bool(args.head)),
                        "threshold", value=round(float(threshold), 6), rule=args.rule,
                        head=bool(args.head))
        print(f"{config.gallery_path}: default threshold {threshold:.4f} ({args.rule})")
    return 0


def cmd_head(args: argparse.Namespace, config: Config) -> int:
    import json

    from jetkiosk.export.encoder.head_train import train_head
    from jetkiosk.export.encoder.verification_eval import verification_report

    folder = _faces(args, config)
    encodings, manifest = _encodings(config, args.encoder, folder)
    head = train_head(encodings, folder.labels, args.kind, manifest.fingerprint, seed=args.seed)
    report, _, _ = verification_report(encodings, folder.labels,
                                       lambda a, b: 1.0 - head.probability(a, b))
    args.out.write_text(json.dumps(head.as_dict(), indent=1) + "\n")
    print(f"{args.out}: {args.kind} head for {manifest.name} (on its training pairs: "
          f"{report.summary()})")
    if args.install:
        _update_gallery(config, manifest, lambda g: g.set_head(head), "head.install",
                        kind=args.kind, encoder=manifest.name)
        print(f"{config.gallery_path}: decides with the verification head")
    return 0


def _set_default(gallery, threshold: float, head: bool) -> None:
    """The gallery's default threshold, or its head's (a score 1 - p: p >= 1 - threshold)."""
    import dataclasses

    if not head:
        gallery.set_threshold(threshold)
    elif gallery.head is None:
        raise GalleryError("--write-threshold with --head: the gallery has no head installed "
                           "(jetkiosk encoder head --install)")
    else:
        gallery.set_head(dataclasses.replace(gallery.head, threshold=1.0 - threshold))


def _read_head(path: Path, manifest):
    import json

    from jetkiosk.edge.faces.verification_head import VerificationHead

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GalleryError(f"{path}: not a readable verification head ({exc})") from exc
    head = VerificationHead.from_dict(data, manifest.outputs[0].shape[-1], str(path))
    if head.fingerprint != manifest.fingerprint:
        raise GalleryError(f"{path}: trained on encoder fingerprint {head.fingerprint}, "
                           f"not {manifest.name}'s {manifest.fingerprint}")
    return head


def _update_gallery(config: Config, manifest, change: Callable, action: str,
                    **audited: Any) -> None:
    """Apply ``change`` to the gallery file under its lock (no other writer in between),
    then record ``action`` and ``audited`` in the audit trail."""
    from jetkiosk.edge.core.audit import AuditLog
    from jetkiosk.edge.faces.gallery import locked_update

    with locked_update(config.gallery_path, manifest.fingerprint, manifest.legacy_fingerprint,
                       config.gallery) as gallery:
        change(gallery)
    AuditLog.from_config(config).note(action, **audited)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: expected a number or 'all', got {text!r}") from None


def cmd_calibrate(args: argparse.Namespace, config: Config) -> int:
    """Measure the encoder's impostor and genuine distances on ``--data`` and store them
    where the threshold rule reads them (the manifest's ``open_set``)."""
    import json

    from jetkiosk.edge.faces.analyzer import model_manifest
    from jetkiosk.export.encoder.open_set_eval import runtime_faces, score_calibration

    name = args.encoder or config.models.encoder
    manifest = model_manifest(config, name, "face-encoder")
    faces = runtime_faces(config, args.data, name, args.cache, _progress)
    people = len(set(faces.labels.tolist()) - {-1})
    strangers = int((faces.labels == -1).sum())
    dataset = f"{Path(args.data).resolve().name} ({people} people, {strangers} strangers)"
    result = score_calibration(faces, manifest.name, manifest.fingerprint, dataset)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    else:
        manifest.open_set = result
        manifest.save(manifest.path)
    _say(f"{manifest.name}: {result['pairs']['impostor']} impostor and "
         f"{result['pairs']['genuine']} genuine pairs; written to {args.out or manifest.path}")
    return 0


def cmd_encoder(args: argparse.Namespace, config: Config) -> int:
    actions: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
        "train": cmd_train, "evaluate": cmd_evaluate, "head": cmd_head,
        "calibrate": cmd_calibrate}
    return actions[args.action](args, config)


COMMANDS = {"encoder": cmd_encoder}
