"""``jetkiosk run`` (the capture loop, as a service or in a terminal) and ``listen``."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict

from ..core.config import Config
from ..core.errors import ConfigError, JetkioskError
from .common import Common, config_from_args, emit
from .session import Session


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    run = sub.add_parser("run", help="the capture loop: events from cameras or clips")
    run.add_argument("--source", action="append", metavar="[NAME=]URI",
                     help="file://clip.mp4, file:///dir/, v4l2:///dev/video0, rtsp://..., "
                     "csi://0; repeated: one camera each, NAME its name in events and topics "
                     "(unnamed: run.camera for the first, cam<N> by position for the others); "
                     "replaces run.source and [[run.cameras]]")
    run.add_argument("--sink", help="comma-separated: jsonl:- (stdout), "
                     "jsonl:/path/events.jsonl, mqtt ([mqtt] in the configuration)")
    run.add_argument("--broker", help="mqtt://[user:password@]host[:port] or mqtts://... "
                     "(mqtt.broker)")
    common(run, {"sink": ("run.sink",), "broker": ("mqtt.broker",)})

    listen = sub.add_parser("listen", help="print what jetkiosk nodes publish over MQTT")
    listen.add_argument("--broker", help="mqtt://host:port or mqtts://... (mqtt.broker)")
    listen.add_argument("--topic", help="topic filter (default: <prefix>/#, every node)")
    listen.add_argument("--count", type=int, default=0, help="exit after N messages")
    listen.add_argument("--timeout", type=float, default=0.0, help="exit after S seconds")
    listen.add_argument("--session", help="persistent session name: events published while "
                        "this listener was away arrive when it returns")
    common(listen, {"broker": ("mqtt.broker",)})


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """The capture loop until its sources end or a signal: 0; 1 when it must be restarted
    (a live source given up, the MQTT link given up); 2 for a configuration to fix."""
    from ..node.cameras import camera_sources, with_sources
    from ..node.daemon import serve
    from .service import check_run

    config = with_sources(config, args.source)
    if not camera_sources(config.run):
        raise JetkioskError("run: no source (give --source [NAME=]URI, or set run.source or "
                            "[[run.cameras]])")
    check_run(config)
    session = Session(config)
    return serve(config, session.analyzer, session.matcher,
                 lambda: with_sources(config_from_args(args), args.source))


def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    from ..mqtt.listen import describe, listen
    from ..mqtt.topics import every_node, filter_problem

    why = filter_problem(args.topic) if args.topic else None
    if why:
        raise ConfigError(f"--topic: {args.topic!r} {why}")

    def show(topic: str, payload: Any, retained: bool) -> None:
        record = {"topic": topic, "retained": retained, "payload": payload}
        emit(args, record, describe(topic, payload))

    listen(config.mqtt, args.topic or every_node(config.mqtt), show, args.count, args.timeout,
           args.session)
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "run": cmd_run, "listen": cmd_listen}
