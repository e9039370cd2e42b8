"""``jetkiosk config check|defaults``, ``install`` and ``uninstall``: running as a service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict

from ..core.config import Config
from ..core.config_toml import effective, template
from ..core.errors import ConfigError
from .common import DEFAULT_CONFIG, Common


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    config = sub.add_parser("config", help="check the configuration; print every setting")
    config_sub = config.add_subparsers(dest="action", required=True)
    common(config_sub.add_parser("check", help=f"validate a configuration file (default: "
                                 f"$JETKIOSK_CONFIG, else {DEFAULT_CONFIG}) and print the "
                                 "effective settings"))
    common(config_sub.add_parser("defaults", help="every setting with its meaning and default, "
                                 "as a TOML file to edit"))
    install = sub.add_parser("install", help="install the systemd units, the service user and "
                             "its directories (idempotent)")
    install.add_argument("--root", type=Path, default=Path("/"),
                         help="install into this tree instead of the running system")
    install.add_argument("--now", action="store_true", help="start the daemon too")
    uninstall = sub.add_parser("uninstall", help="remove the units; the gallery and the "
                               "configuration stay unless --purge")
    uninstall.add_argument("--root", type=Path, default=Path("/"))
    uninstall.add_argument("--purge", action="store_true",
                           help="also delete the gallery, outbox, engines and configuration")
    for parser in (install, uninstall):
        parser.add_argument("-v", "--verbose", action="store_true", help="list each change")


def check_run(config: Config) -> None:
    """What `run` refuses before it starts, checked as `run` checks it (`run` calls this
    too): the cameras (``camera_sources``: names, source URIs); with the mqtt sink the names
    that become topics (mqtt.node, mqtt.prefix, mqtt.response_prefixes,
    mqtt.discovery_prefix), the client id and the broker settings; the metrics address."""
    from ..mqtt.client import BrokerSettings
    from ..mqtt.link import client_id
    from ..mqtt.topics import Topics
    from ..node.cameras import camera_sources
    from ..node.sinks import sink_uris

    camera_sources(config.run)
    if "mqtt" in sink_uris(config.run.sink):
        topics = Topics.from_config(config.mqtt)
        client_id(config.mqtt, topics)
        BrokerSettings.from_config(config.mqtt)
    if config.metrics.listen:
        from ..node.metrics import listen_address

        listen_address(config.metrics.listen)


def check(config: Config) -> None:
    """What loading alone cannot see: everything `run` checks (``check_run``), and the
    kiosk's source and MQTT settings."""
    from ..capture.sources import check_uri
    from ..mqtt.client import BrokerSettings
    from ..mqtt.link import client_id
    from ..mqtt.topics import Topics

    check_run(config)
    if config.kiosk.source:
        check_uri(config.kiosk.source, "kiosk.source")
    if config.kiosk.mqtt:
        client_id(config.mqtt, Topics.from_config(config.mqtt), "kiosk")
        BrokerSettings.from_config(config.mqtt)


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    if args.action == "defaults":
        print(template(), end="")
        return 0
    try:
        check(config)
    except ConfigError as exc:
        raise ConfigError(f"{args.config_path}: {exc}") from None
    print(effective(config), end="")
    print(f"# {args.config_path}: OK", file=sys.stderr)
    return 0


def cmd_install(args: argparse.Namespace, config: Config) -> int:
    from ..service.install import install

    install(args.root, start=args.now)
    print(f"installed under {args.root}; the daemon reads {DEFAULT_CONFIG}")
    return 0


def cmd_uninstall(args: argparse.Namespace, config: Config) -> int:
    from ..service.install import uninstall

    uninstall(args.root, args.purge)
    kept = "" if args.purge else " (the gallery and configuration are kept)"
    print(f"uninstalled from {args.root}{kept}")
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "config": cmd_config, "install": cmd_install, "uninstall": cmd_uninstall}
