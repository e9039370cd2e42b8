"""Shared fixtures: built models (once per session), the shared face photos, a gallery."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetkiosk.edge.core.config import Config, load_config
from jetkiosk.edge.kiosk.catalog import BUNDLED

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The styles that ship, by name: what a kiosk without styles of its own lists.
BUNDLED_STYLES = sorted(p.name[len("style-"):-len(".json")] for p in BUNDLED.glob("style-*.json"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared beside the checkout: skipped when absent, a failure in CI."""
    if not (SHARED / "faces").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED} is missing in CI")
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto of the test's own (random port, own configuration and persistence)."""
    from mosquitto import Mosquitto

    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    from jetkiosk.export.models.prepare import prepare

    path = tmp_path_factory.mktemp("models")
    prepare(path, progress=lambda _: None)
    return path


@pytest.fixture
def config(models_dir, tmp_path) -> Config:
    return load_config(overrides=[f"models.dir={models_dir}",
                                  f"gallery.path={tmp_path / 'gallery.npz'}"])


@pytest.fixture(scope="session")
def analyzer(models_dir):
    from jetkiosk.edge.faces.analyzer import FaceAnalyzer

    return FaceAnalyzer(load_config(overrides=[f"models.dir={models_dir}"]))


@pytest.fixture(scope="session")
def people_gallery(analyzer, shared):
    """The five people of ../shared/faces/people/gallery, enrolled from their photos."""
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.gallery import Gallery

    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    for person in sorted((shared / "faces/people/gallery").iterdir()):
        for photo in sorted(person.iterdir()):
            faces = analyzer.analyze(load_image(photo))
            assert len(faces) == 1 and faces[0].encoding is not None, photo
            gallery.add(person.name, faces[0].encoding[None])
    return gallery


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory):
    """The demo's 720p clip (Eileen, Grace, then a stranger beside Eileen) and its photos."""
    from jetkiosk.edge.cli import demo

    path = tmp_path_factory.mktemp("clip") / "demo.mp4"
    photos = demo.sample_photos()
    demo.make_clip(path, photos)
    return path, photos


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as encoders give them."""
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small():
    """A gallery of two people (ann: 2 encodings, bob: 1) in 8 dimensions."""
    from jetkiosk.edge.faces.gallery import Gallery

    rng = np.random.default_rng(1)
    g = Gallery("enc", "fp-1", 8)
    g.add("ann", unit(rng.normal(size=(2, 8))))
    g.add("bob", unit(rng.normal(size=(1, 8))))
    return g


def configure(config: Config, values: dict) -> Config:
    """Set ``section.key`` values on ``config`` (already typed, unlike ``--set``)."""
    for key, value in values.items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    return config


def enroll_demo_people(config: Config, analyzer, photos: dict) -> None:
    """The demo's two people (one photo each) saved as ``config``'s gallery."""
    from jetkiosk.edge.faces.gallery import Gallery

    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    for name in ("eileen_collins", "grace_hopper"):
        gallery.add(name, analyzer.analyze(photos[name])[0].encoding[None])
    gallery.save(config.gallery_path)


def read_jsonl(path: Path) -> list:
    """The complete JSON lines a sink has written so far (none before the file exists)."""
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def matcher_loader(config: Config, analyzer):
    """What the face path loads its matcher with: ``config``'s gallery, the default rule."""
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import load_gallery
    from jetkiosk.edge.faces.open_set import threshold_rule

    def load():
        manifest = analyzer.encoder_manifest
        return Matcher(load_gallery(config.gallery_path, manifest.fingerprint,
                                    manifest.legacy_fingerprint, config.gallery),
                       threshold_rule(config.gallery, manifest))
    return load


def noisy_frames(image: np.ndarray, count: int, sigma: float = 3.0, seed: int = 0):
    """A static scene as a camera sees it: the same image with fresh sensor noise."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        noise = rng.normal(0.0, sigma, image.shape)
        yield np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def still_clip(tmp_path_factory) -> Path:
    """Two seconds of a static 640x360 scene (the astronaut) with sensor noise, MJPG AVI."""
    from skimage import data

    path = tmp_path_factory.mktemp("still") / "still.avi"
    image = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (640, 360))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (640, 360))
    for frame in noisy_frames(image, 60):
        writer.write(frame)
    writer.release()
    return path
