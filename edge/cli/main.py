"""The `jetkiosk` command line: one module per command group, each with its parsers and
commands; the workstation's (training, export) and the INT8 commands come from their packages."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from jetkiosk.calibration import commands as int8
from jetkiosk.export.encoder import commands as encoder_commands

from ..core.errors import JetkioskError
from ..core.log_format import setup_logging
from ..mqtt.link import LinkFailed
from . import audit, demo, faces, gallery, kiosk, models, node, service
from .common import common, config_from_args

log = logging.getLogger("jetkiosk")
GROUPS = (models, gallery, faces, node, kiosk, demo, int8, encoder_commands, service, audit)
COMMANDS = {name: command for group in GROUPS for name, command in group.COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetkiosk", description="Face verification and live stylization for kiosks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub, common)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    setup_logging("info" if verbose else "warning", "auto")
    try:
        args = build_parser().parse_args(argv)
        config = config_from_args(args)
        verbose_level = "info" if verbose and config.log.level != "debug" else None
        setup_logging(verbose_level or config.log.level, config.log.format)
        return COMMANDS[args.command](args, config)
    except LinkFailed as exc:  # not the configuration's fault: let the supervisor restart us
        log.error("%s; exiting with status 1 so that the service is restarted", exc)
        return 1
    except JetkioskError as exc:
        log.debug("error", exc_info=True)
        print(f"jetkiosk: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
