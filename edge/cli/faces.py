"""``jetkiosk verify``, ``identify`` and ``embed``: decisions and encodings for photos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict

from ..core.audit import AuditLog
from ..core.config import Config
from .common import Common, emit
from .session import Session, subject_face


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    verify = sub.add_parser("verify", help="1:1: is the face in PHOTO the claimed person?")
    verify.add_argument("photo", type=Path)
    verify.add_argument("--as", dest="claimed", required=True, help="claimed identity")
    common(verify)

    identify = sub.add_parser("identify", help="1:K: who is each face in the photos?")
    identify.add_argument("photos", nargs="+", type=Path)
    common(identify)

    embed = sub.add_parser("embed", help="print the encoding of each face")
    embed.add_argument("photos", nargs="+", type=Path)
    common(embed)


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from ..faces.live_decision import gated, photo_verdict

    session = Session(config)
    matcher = session.matcher()
    face = subject_face(session, args.photo, live=True)
    decision = matcher.verify(face.encoding, args.claimed)
    live = photo_verdict(config.liveness, face.live)
    verdict = gated(config.liveness, "match" if decision.matched else "no_match", live)
    record = {"photo": str(args.photo), "claimed": args.claimed, **decision.as_dict(),
              "match": verdict == "match", "decision": verdict, "live": live.as_dict()}
    AuditLog.from_config(config).note(
        "verify", claimed=args.claimed, match=verdict == "match",
        distance=round(float(decision.distance), 4), threshold=round(float(decision.threshold), 4),
        method=decision.method, live=live.decision)
    text = {"match": "MATCH", "no_match": "NO MATCH"}.get(verdict, verdict.upper())
    emit(args, record, f"{text}: {args.photo} as {args.claimed} "
                       f"(distance {decision.distance:.3f}, threshold {decision.threshold}; "
                       f"liveness {live.decision or 'off'}: {live.reason})")
    return 0 if verdict == "match" else 1


def cmd_identify(args: argparse.Namespace, config: Config) -> int:
    import numpy as np

    from ..faces.live_decision import photo_verdict

    session = Session(config)
    matcher = session.matcher()
    for photo in args.photos:
        faces = session.faces(photo, live=True)
        kept = [f for f in faces if f.encoding is not None]
        decisions = matcher.identify(np.array([f.encoding for f in kept]))
        for face, decision in zip(kept, decisions):
            live = photo_verdict(config.liveness, face.live)
            record = {"photo": str(photo), **face.detection.as_dict(), **decision.as_dict(),
                      "live": live.as_dict()}
            emit(args, record, f"{photo}: {decision.name or 'unknown'} "
                                f"(distance {decision.distance:.3f}, nearest {decision.candidate};"
                                f" liveness {live.decision or 'off'}) box {record['box']}")
        for face in faces:
            if face.rejected:
                record = {"photo": str(photo), **face.detection.as_dict(), "name": None,
                          "rejected": face.rejected}
                emit(args, record, f"{photo}: face rejected ({face.rejected}) box {record['box']}")
        if not faces:
            emit(args, {"photo": str(photo), "faces": 0}, f"{photo}: no face found")
    return 0


def cmd_embed(args: argparse.Namespace, config: Config) -> int:
    session = Session(config)
    for photo in args.photos:
        for face in session.faces(photo):
            if face.encoding is None:
                continue
            record = {"photo": str(photo), **face.detection.as_dict(),
                      "encoding": [round(float(v), 6) for v in face.encoding]}
            emit(args, record, f"{photo} {record['box']} " + " ".join(
                f"{v:.5f}" for v in face.encoding))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "verify": cmd_verify, "identify": cmd_identify, "embed": cmd_embed}
