"""Train a face encoder with the triplet loss on P identities x K photos per batch.

Inputs are aligned canvases from ``FaceFolder`` (the runtime's detector and aligner),
augmented by ``Augmenter`` and standardised exactly as the runtime does (``encoder_blob``).
When the first units of the trunk are frozen, their outputs are computed once for
``views`` augmented views of every photo and cached, so a CPU trains the rest in minutes;
``views=0`` runs the whole network on fresh augmentations every step.

With a validation set (identities held out of training) the verification EER is measured
every ``eval_every`` steps, at step 0 too, and the best state is the one returned, so
fine-tuning can never return an encoder that validates worse than it started.
Checkpoints hold everything needed to resume: weights, optimizer, step, random states,
history and the best state.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from jetkiosk.edge.core.errors import JetkioskError
from jetkiosk.edge.faces.encoder import encoder_blob
from jetkiosk.export.checkpoint import load_checkpoint, save_checkpoint
from jetkiosk.export.device import pick_device
from jetkiosk.export.encoder.augment import Augmenter
from jetkiosk.export.encoder.nets import EncoderNet, set_train_mode
from jetkiosk.export.encoder.triplet_loss import TripletLoss
from jetkiosk.export.encoder.verification_eval import squared_l2, verification_report

COLLAPSED = 1e-3  # mean negative distance under which the embeddings have collapsed


@dataclass
class EncoderTrainSettings:
    steps: int = 300
    identities: int = 8  # P: identities per batch
    photos: int = 4  # K: photos per identity in a batch
    lr: float = 1e-3
    weight_decay: float = 5e-4
    margin: float = 0.2
    mining: str = "semi-hard"
    views: int = 8  # augmented views cached per photo when a trunk prefix is frozen (0: none)
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0


@dataclass
class LabelledCrops:
    """Aligned canvases (N x H x W x 3 BGR uint8, ``pad`` px a side) and their labels."""

    canvases: np.ndarray
    labels: np.ndarray
    pad: int

    def centres(self) -> np.ndarray:
        """The centre crops: the runtime's aligned crops."""
        p, (h, w) = self.pad, self.canvases.shape[1:3]
        return self.canvases[:, p:h - p, p:w - p]


@dataclass
class TrainResult:
    net: EncoderNet
    history: List[Dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_eer: Optional[float] = None
    images_per_second: float = 0.0


class PKSampler:
    """Batches of P identities x K photos (K drawn with replacement when someone has fewer)."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int):
        self.by_label = [np.nonzero(labels == c)[0] for c in np.unique(labels)]
        self.by_label = [idx for idx in self.by_label if len(idx) >= 2]
        if len(self.by_label) < 2:
            raise JetkioskError("training needs at least 2 identities with 2 photos each")
        self.p, self.k = min(p, len(self.by_label)), k
        self.rng = np.random.default_rng(seed)

    def batch(self) -> np.ndarray:
        people = self.rng.choice(len(self.by_label), self.p, replace=False)
        picks = [self.rng.choice(self.by_label[c], self.k, replace=len(self.by_label[c]) < self.k)
                 for c in people]
        return np.concatenate(picks)


class Inputs:
    """Network inputs for photo indices: cached frozen-prefix features, or fresh augmentations."""

    def __init__(self, net: EncoderNet, data: LabelledCrops, augment: Augmenter,
                 preprocess: Dict[str, Any], views: int, device: torch.device,
                 log: Callable[[str], None]):
        self.net, self.data, self.augment, self.pre = net, data, augment, preprocess
        self.device = device
        self.cache: Optional[torch.Tensor] = None
        if net.frozen and views:
            start = time.monotonic()
            self.cache = torch.stack([self._prefix([augment(c) for c in data.canvases])
                                      for _ in range(views)])
            log(f"cached {views} views x {len(data.canvases)} photos of the {net.frozen} frozen "
                f"units in {time.monotonic() - start:.0f}s ({self.cache.numel() * 2 >> 20} MiB)")

    def tensor(self, crops: List[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(encoder_blob(crops, self.pre)).to(self.device)

    @torch.no_grad()
    def _prefix(self, crops: List[np.ndarray], batch: int = 32) -> torch.Tensor:
        return torch.cat([self.net.prefix(self.tensor(crops[i:i + batch])).half()
                          for i in range(0, len(crops), batch)])

    def embed(self, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Training embeddings (with gradients) for the photos at ``index``."""
        if self.cache is not None:
            views = torch.from_numpy(rng.integers(0, len(self.cache), len(index)))
            return self.net.suffix(self.cache[views, torch.from_numpy(index)].float())
        return self.net(self.tensor([self.augment(self.data.canvases[i]) for i in index]))


@torch.no_grad()
def encode(net: EncoderNet, crops: np.ndarray, preprocess: Dict[str, Any],
           device: torch.device, batch: int = 64) -> np.ndarray:
    """Evaluation embeddings of centre crops with the network in eval mode."""
    net.eval()
    out = [net(torch.from_numpy(encoder_blob(list(crops[i:i + batch]), preprocess)).to(device))
           for i in range(0, len(crops), batch)]
    return torch.cat(out).cpu().numpy()


def train_encoder(net: EncoderNet, data: LabelledCrops, preprocess: Dict[str, Any],
                  augment: Augmenter, settings: EncoderTrainSettings, checkpoint: Path,
                  val: Optional[LabelledCrops] = None, device: str = "auto",
                  log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume from ``checkpoint``); returns the best (or last) network on the CPU."""
    from tqdm import tqdm

    dev = pick_device(device)
    torch.manual_seed(settings.seed)
    net.to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sampler = PKSampler(data.labels, settings.identities, settings.photos, settings.seed)
    view_rng = np.random.default_rng(settings.seed + 1)
    loss_fn = TripletLoss(settings.margin, settings.mining)
    inputs = Inputs(net, data, augment, preprocess, settings.views, dev, log)
    result = TrainResult(net)
    best_state: Optional[Dict[str, torch.Tensor]] = None
    start = 0
    identity = {"spec": net.spec, "frozen": net.frozen}
    state = load_checkpoint(checkpoint, net, optimizer, identity, dev)
    if state is not None:
        sampler.rng.bit_generator.state = state["sampler"]
        view_rng.bit_generator.state = state["views"]
        augment.rng.bit_generator.state = state["augment"]
        start, best_state = state["step"], state["best_state"]
        result.history, result.best_step, result.best_eer = (
            state["history"], state["best_step"], state["best_eer"])
        log(f"resumed {checkpoint} at step {start}")

    def validate(step: int) -> None:
        nonlocal best_state
        assert val is not None
        report, _, _ = verification_report(encode(net, val.centres(), preprocess, dev),
                                           val.labels, squared_l2)
        result.history.append({"step": step, "val_eer": report.eer})
        if result.best_eer is None or report.eer < result.best_eer:
            result.best_eer, result.best_step = report.eer, step
            best_state = copy.deepcopy(net.state_dict())

    if val is not None and start == 0:
        validate(0)
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps,
               desc="encoder", unit="step", mininterval=2.0)
    began, seen, collapsed = time.monotonic(), 0, 0
    for step in bar:
        if step == int(settings.steps * 0.8):
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.1
        set_train_mode(net)
        index = sampler.batch()
        labels = torch.from_numpy(data.labels[index]).to(dev)
        loss, stats = loss_fn(inputs.embed(index, view_rng), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(index)
        collapsed = collapsed + 1 if stats.negative < COLLAPSED else 0
        if collapsed == 20:
            log(f"step {step + 1}: every embedding is in one spot (negative pairs at "
                f"{stats.negative:.4f}); the network collapsed: lower --lr or use semi-hard")
        result.history.append({"step": step + 1, **stats.as_dict()})
        bar.set_postfix(loss=f"{stats.loss:.3f}", active=f"{stats.active:.2f}",
                        d_pos=f"{stats.positive:.2f}", d_neg=f"{stats.negative:.2f}")
        if val is not None and (step + 1) % settings.eval_every == 0:
            validate(step + 1)
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            save_checkpoint(checkpoint, net, optimizer, step + 1, identity, {
                "sampler": sampler.rng.bit_generator.state,
                "views": view_rng.bit_generator.state, "augment": augment.rng.bit_generator.state,
                "best_state": best_state, "history": result.history,
                "best_step": result.best_step, "best_eer": result.best_eer,
                "settings": asdict(settings)})
    elapsed = time.monotonic() - began
    result.images_per_second = seen / elapsed if elapsed > 0 else 0.0
    log(f"{settings.steps - start} steps, {seen} images in {elapsed:.0f}s on {dev}"
        f" ({result.images_per_second:.1f} images/s)")
    if best_state is not None:
        net.load_state_dict(best_state)
        log(f"kept step {result.best_step}: validation EER {result.best_eer:.2%}")
    net.cpu().eval()
    return result


