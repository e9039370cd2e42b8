"""The face path and gallery a command works with, loaded when it first needs them."""

from __future__ import annotations

from pathlib import Path

from ..core.config import Config
from ..core.errors import ImageError


class Session:
    """Lazily loaded face path and gallery for one command."""

    def __init__(self, config: Config):
        from ..faces.analyzer import FaceAnalyzer

        self.config = config
        self.analyzer = FaceAnalyzer(config)

    def gallery(self):
        from ..faces.gallery import load_gallery

        manifest = self.analyzer.encoder_manifest
        return load_gallery(self.config.gallery_path, manifest.fingerprint,
                            manifest.legacy_fingerprint, self.config.gallery)

    def threshold_rule(self):
        from ..faces.open_set import threshold_rule

        return threshold_rule(self.config.gallery, self.analyzer.encoder_manifest)

    def matcher(self):
        from ..faces.decisions import Matcher

        return Matcher(self.gallery(), self.threshold_rule())

    def faces(self, photo: Path, live: bool = False):
        from ..core.images import load_image

        return self.analyzer.analyze(load_image(photo, limits=self.config.images), live=live)


def subject_face(session: Session, photo: Path, live: bool = False):
    """The photo's subject, embedded: its only face, or one much larger than any other and
    near the centre (``faces/subject.py``); ``live``: with its passive live score. An
    ImageError says why there is none."""
    from ..core.images import load_image
    from ..faces.subject import subject

    image = load_image(photo, limits=session.config.images)
    detections = session.analyzer.detector.detect(image)
    if not detections:
        raise ImageError(f"{photo}: no usable face found")
    chosen = subject(detections, image.shape)
    if chosen is None:
        raise ImageError(f"{photo}: {len(detections)} faces found and none is clearly the "
                         "subject; use a photo with only this person")
    face = session.analyzer.analyze(image, [detections[chosen]], live)[0]
    if face.encoding is None:
        raise ImageError(f"{photo}: face rejected ({face.rejected})")
    return face


def subject_encoding(session: Session, photo: Path):
    """The encoding of the photo's subject (``subject_face``)."""
    return subject_face(session, photo).encoding
