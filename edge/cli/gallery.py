"""``jetkiosk enroll`` and ``jetkiosk gallery``: who is enrolled, and how they are decided."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from ..core.audit import AuditLog
from ..core.config import Config
from ..core.errors import GalleryError, ImageError, JetkioskError
from .common import Common, emit
from .session import Session, subject_encoding

log = logging.getLogger("jetkiosk")
CANDIDATES_PER_SHOT = 4  # enroll --source: frames considered for each varied shot kept



def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    enroll = sub.add_parser("enroll", help="enroll a person from photos or camera frames")
    enroll.add_argument("name", nargs="?", help="person's name")
    enroll.add_argument("photos", nargs="*", type=Path)
    enroll.add_argument("--folder", type=Path, help="one subfolder of photos per person")
    enroll.add_argument("--source", help="capture frames from this URI instead of photos")
    enroll.add_argument("--frames", type=int, default=5, help="varied frames to take from "
                        "--source")
    enroll.add_argument("--kiosk", action="store_true", help="walk-up enrollment on the "
                        "running kiosk (over MQTT): the person agrees on its screen and is "
                        "guided through the shots; prints each step")
    common(enroll)

    gallery = sub.add_parser("gallery", help="list, remove, rename, reject, audit; thresholds, "
                             "styles; encryption at rest")
    gsub = gallery.add_subparsers(dest="action", required=True)
    common(gsub.add_parser("list", help="enrolled people"))
    remove = gsub.add_parser("remove", help="remove a person")
    remove.add_argument("name")
    common(remove)
    common(gsub.add_parser("expire", help="remove everyone unseen for longer than their "
                           "expiry (gallery.expire_after), with a receipt each"))
    expire_after = gsub.add_parser("expire-after", help="one person's expiry: removed after "
                                   "DAYS without a match")
    expire_after.add_argument("name")
    expire_after.add_argument("days", help="days (0: never), or 'default' for "
                              "gallery.expire_after")
    common(expire_after)
    rename = gsub.add_parser("rename", help="rename a person")
    rename.add_argument("old")
    rename.add_argument("new")
    common(rename)
    thr = gsub.add_parser("threshold", help="set the gallery's or one person's threshold")
    thr.add_argument("value", help="squared L2 distance, or 'default' to clear")
    thr.add_argument("--person", help="only this person")
    common(thr)
    style = gsub.add_parser("style", help="the kiosk style shown to a person")
    style.add_argument("name")
    style.add_argument("style", help="a style the kiosk can show, or 'none' to clear")
    common(style)
    reject = gsub.add_parser("reject", help="record that the face in PHOTO (or of a running "
                             "node's event) is not NAME; NAME's decisions then refuse it and "
                             "anything as close")
    reject.add_argument("name")
    reject.add_argument("photo", type=Path, nargs="?")
    reject.add_argument("--event", help="event_id of one of the last decisions of the node "
                        "running with this configuration (sent to it over MQTT)")
    reject.add_argument("--broker", help="mqtt://host:port or mqtts://... (mqtt.broker)")
    common(reject, {"broker": ("mqtt.broker",)})
    common(gsub.add_parser("encrypt", help="seal the gallery file with the gallery key (made "
                           "if missing)"))
    common(gsub.add_parser("decrypt", help="write the gallery file unencrypted (needs "
                           "gallery.encrypt = false, or it is sealed again when next read)"))
    rekey = gsub.add_parser("rekey", help="seal the gallery with a new key; the old key no "
                            "longer opens it")
    rekey.add_argument("--new-key", type=Path, help="the new key's file (made if missing; "
                       "default: a fresh key in place of the gallery key file)")
    common(rekey)
    audit = gsub.add_parser("audit", help="people too close to each other, enrollment photos "
                            "that disagree with the rest of their person")
    common(audit)


def cmd_enroll(args: argparse.Namespace, config: Config) -> int:
    """Encode every photo first (the slow part), then merge into the gallery file under its
    lock, so that enrollments running at the same time all land."""
    import numpy as np

    if args.kiosk:
        return _enroll_at_kiosk(args, config)

    from ..faces.gallery import enroll_encodings, load_gallery

    session = Session(config)
    manifest = session.analyzer.encoder_manifest
    if config.gallery_path.exists():  # a foreign or damaged file fails before the slow part
        load_gallery(config.gallery_path, manifest.fingerprint, manifest.legacy_fingerprint,
                     config.gallery)
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
    encoded: Dict[str, np.ndarray] = {}
    for name, items in plan.items():
        encodings = []
        for item in items:
            if args.source:
                encodings.extend(_camera_encodings(session, item, args.frames))
                continue
            try:
                encodings.append(subject_encoding(session, item))
            except ImageError as exc:
                skipped.append((name, str(exc)))
                emit(args, {"name": name, "photo": str(item), "status": "skipped",
                             "reason": str(exc)}, f"{name}: skipped {exc}")
                continue
            emit(args, {"name": name, "photo": str(item), "status": "encoded"},
                  f"{name}: encoded {item}")
        if encodings:
            encoded[name] = np.stack(encodings)
        else:
            missing.append(name)
    if encoded:
        counts = enroll_encodings(config.gallery_path, manifest, session.analyzer.encoder.dim,
                                  config.gallery, encoded)
        trail = AuditLog.from_config(config)
        for name, count in counts.items():
            trail.note("enroll", name=name, encodings=len(encoded[name]), total=count,
                       source="camera" if args.source else "photos")
            emit(args, {"name": name, "enrolled": len(encoded[name]), "photos": count},
                  f"{name}: enrolled {len(encoded[name])} encoding(s), {count} in total")
    enrolled = len(encoded)
    emit(args, {"summary": True, "enrolled": enrolled, "skipped_photos": len(skipped),
                 "without_encoding": missing},
          f"enrolled {enrolled} of {len(plan)} people; {len(skipped)} photo(s) skipped"
          + (f"; no usable photo for: {', '.join(missing)}" if missing else ""))
    return 1 if missing else 0


def _enroll_at_kiosk(args: argparse.Namespace, config: Config) -> int:
    """Start a walk-up enrollment on the running kiosk and follow it to its end: 0 when the
    person was saved, 1 when it failed (declined, timed out, ...)."""
    from ..mqtt.request import send_command

    if args.photos or args.folder or args.source:
        raise JetkioskError("enroll --kiosk: give only the NAME (the kiosk's camera is used)")
    outcome: Dict[str, Any] = {}

    def step(message: Dict[str, Any]) -> bool:
        emit(args, message, f"{message.get('state')}: {message.get('message')}")
        outcome.update(message)
        return message.get("state") in ("saved", "failed")

    command = {"action": "start", **({"name": args.name} if args.name else {})}
    send_command(config.mqtt, "enroll", command, follow="enroll/state", until=step,
                 follow_timeout=2 * config.kiosk.enroll_timeout + 30)
    return 0 if outcome.get("state") == "saved" else 1


def _camera_encodings(session: Session, uri: str, wanted: int) -> list:
    """``wanted`` varied encodings from frames with exactly one usable face: candidates from
    up to ``CANDIDATES_PER_SHOT`` frames per shot, then farthest-point sampling, so a person
    who moves a little gives several poses rather than copies of one."""
    import numpy as np

    from ..capture.sources import open_source

    source = open_source(uri, images=session.config.images)
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
    from ..faces.analyzer import model_manifest
    from ..faces.decisions import Matcher
    from ..faces.gallery import load_gallery, locked_update
    from ..faces.open_set import threshold_rule

    if args.action == "reject" and args.event:
        from ..mqtt.request import send_command

        if args.photo:
            raise JetkioskError("gallery reject: give PHOTO or --event, not both")
        result = send_command(config.mqtt, "gallery", {"action": "reject", "name": args.name,
                                                        "event_id": args.event})
        emit(args, {"ok": True, "action": "reject", **result},
              f"gallery: event {args.event} recorded as not {args.name} on node "
              f"({result.get('rejections')} rejection(s)); the node reloaded its gallery")
        return 0
    if args.action == "reject":
        if not args.photo:
            raise JetkioskError("gallery reject: give PHOTO or --event ID")
        session = Session(config)
        encoding = subject_encoding(session, args.photo)
        manifest = session.analyzer.encoder_manifest
        with locked_update(config.gallery_path, manifest.fingerprint,
                           manifest.legacy_fingerprint, config.gallery) as gallery:
            count = gallery.reject(args.name, encoding)
        AuditLog.from_config(config).note("reject", name=args.name, rejections=count,
                                          source="photo")
        limit = Matcher(gallery, session.threshold_rule()).threshold_for(args.name)
        emit(args, {"ok": True, "action": "reject", "name": args.name, "rejections": count,
                     "threshold": round(limit, 4)},
              f"gallery: {args.photo} recorded as not {args.name} ({count} rejection(s)); "
              f"{args.name}'s threshold is now {limit:.4f}")
        return 0
    if args.action in ("list", "audit"):
        gallery = load_gallery(config.gallery_path, limits=config.gallery)
        manifest = model_manifest(config, gallery.encoder, "face-encoder")
        matcher = Matcher(gallery, threshold_rule(config.gallery, manifest))
        if args.action == "audit":
            return _audit(args, gallery, matcher)
        for name in gallery.names:
            tau, why = matcher.threshold_for(name), matcher.rule_for(name)
            style = gallery.person(name).style
            emit(args, {"name": name, "photos": len(gallery.encodings(name)),
                         "threshold": round(tau, 4), "rule": why,
                         "rejections": len(gallery.rejections(name)), "style": style},
                  f"{name}\t{len(gallery.encodings(name))} photo(s)\t"
                  f"threshold {tau:.4f} ({why})" + (f"\tstyle {style}" if style else ""))
        return 0
    if args.action in ("encrypt", "decrypt", "rekey"):
        return _seal(args, config)
    if args.action == "style":
        style = None if args.style == "none" else _known_style(args.style, config)
        with locked_update(config.gallery_path, limits=config.gallery) as gallery:
            gallery.set_style(args.name, style)
        AuditLog.from_config(config).note("style", name=args.name, style=style)
        emit(args, {"ok": True, "action": "style", "name": args.name, "style": style},
              f"gallery: {args.name}'s style is now {style}" if style
              else f"gallery: {args.name}'s style cleared (the kiosk's own)")
        return 0
    if args.action in ("remove", "expire"):
        return _remove(args, config)
    if args.action == "expire-after":
        days = None if args.days == "default" else _float(args.days)
        with locked_update(config.gallery_path, limits=config.gallery) as gallery:
            gallery.set_expiry(args.name, days)
        AuditLog.from_config(config).note("expire_after", name=args.name, days=days)
        emit(args, {"ok": True, "action": "expire-after", "name": args.name, "days": days},
             f"gallery: {args.name} " + ("follows gallery.expire_after" if days is None else
                                         "never expires" if days == 0 else
                                         f"is removed after {days:g} days unseen"))
        return 0
    with locked_update(config.gallery_path, limits=config.gallery) as gallery:
        if args.action == "rename":
            gallery.rename(args.old, args.new)
            changed: Dict[str, Any] = {"old": args.old, "new": args.new}
        else:
            value = None if args.value == "default" else _float(args.value)
            gallery.set_threshold(value, args.person)
            changed = {"value": value, "person": args.person}
    AuditLog.from_config(config).note(args.action, **changed)
    emit(args, {"ok": True, "action": args.action}, f"gallery: {args.action} done")
    return 0


def _remove(args: argparse.Namespace, config: Config) -> int:
    """``gallery remove NAME`` and ``gallery expire``: a receipt for each person removed."""
    from ..node.retention import expire_people, remove_people

    if args.action == "remove":
        receipts = remove_people(config, [args.name], "removed by command")
    else:
        receipts = expire_people(config)
        if not receipts:
            emit(args, {"ok": True, "action": "expire", "removed": []},
                 "gallery: nobody has expired")
    for receipt in receipts:
        emit(args, {"ok": True, "action": args.action, **receipt},
             f"removed {receipt['name']!r} ({receipt['reason']}) at {receipt['time']}:\n"
             f"  gallery  {receipt['gallery']}: {receipt['encodings']} encoding(s), "
             f"{receipt['rejections']} rejection(s) deleted\n"
             f"  outbox   {receipt['outbox']}: {receipt['outbox_events']} queued event(s) "
             "deleted\n"
             f"  audit    {receipt['audit']}: entry {receipt['audit_seq']}\n"
             "  a running node reloads the gallery and clears their MQTT state")
    return 0


def _seal(args: argparse.Namespace, config: Config) -> int:
    """``gallery encrypt``, ``decrypt`` and ``rekey``."""
    from ..core.sealing import key_path
    from ..faces.gallery import KEY_NAME, reseal

    path = config.gallery_path
    if args.action == "decrypt" and config.gallery.encrypt:
        raise JetkioskError("gallery decrypt: gallery.encrypt is on, so the file would be "
                            "sealed again the next time it is read; set gallery.encrypt = "
                            "false first")
    new_key = None
    if args.action == "rekey":
        new_key = args.new_key or key_path(config.gallery.key_file, KEY_NAME, path.parent)
    key = reseal(path, config.gallery, args.action != "decrypt", new_key)
    AuditLog.from_config(config).note(
        {"rekey": "key.rotate"}.get(args.action, args.action),
        **({"key_id": key.key_id, "key": key.where} if key else {}))
    if key is None:
        emit(args, {"ok": True, "action": "decrypt", "gallery": str(path), "encrypted": False},
             f"gallery: {path} is now unencrypted")
    else:
        emit(args, {"ok": True, "action": args.action, "gallery": str(path), "encrypted": True,
                    "key_id": key.key_id, "key": key.where},
             f"gallery: {path} sealed with key {key.key_id} ({key.where})")
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
                emit(args, {"finding": "too_close", "people": [names[i], names[j]],
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
                emit(args, {"finding": "disagrees", "name": name, "encoding": k + 1,
                             "distance": round(d, 4)},
                      f"disagrees: {name}'s enrollment encoding {k + 1} of {len(rows)} is "
                      f"{d:.3f} from the rest (threshold {tau:.3f})")
    emit(args, {"summary": True, "people": len(names), "findings": findings},
          f"audit: {len(names)} people, {findings} finding(s)")
    return 1 if findings else 0


def _known_style(name: str, config: Config) -> str:
    """``name`` if the kiosk can show it (a bundled style or one in the models directory);
    a StyleError listing the available ones if not."""
    from ..kiosk.catalog import BUNDLED, StyleCatalog

    return StyleCatalog([config.models_dir, BUNDLED], config=config).check(name)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GalleryError(f"threshold {text!r} is not a number") from None


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "enroll": cmd_enroll, "gallery": cmd_gallery}
