"""The encoder-training parts on their own: triplet mining against brute force, augmentation,
verification figures, the verification head in the gallery and the matcher."""

from __future__ import annotations

import io
import itertools
import json

import cv2
import numpy as np
import pytest
import torch

from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, archive_bytes, load_gallery
from jetkiosk.edge.faces.verification_head import VerificationHead
from jetkiosk.export.encoder.augment import Augmenter, AugmentSettings, pca_basis
from jetkiosk.export.encoder.head_train import train_head
from jetkiosk.export.encoder.triplet_loss import TripletLoss
from jetkiosk.export.encoder.verification_eval import evaluate, plot, verification_report


def brute_force(emb: np.ndarray, labels: np.ndarray, margin: float, mining: str):
    """Reference triplet losses by plain loops, as the papers define them."""
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    n = len(labels)
    out = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if mining == "batch-all":
            out += [max(d[a, p] - d[a, q] + margin, 0) for p, q in itertools.product(pos, neg)]
        elif mining == "batch-hard":
            out.append(max(max(d[a, pos]) - min(d[a, neg]) + margin, 0))
        else:
            for p in pos:
                farther = [d[a, q] for q in neg if d[a, q] > d[a, p]]
                dn = min(farther) if farther else max(d[a, neg])
                out.append(max(d[a, p] - dn + margin, 0))
    return np.array(out)


@pytest.mark.parametrize("mining", ["batch-all", "batch-hard", "semi-hard"])
def test_triplet_mining_matches_brute_force(mining):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 3)  # P=4 identities x K=3 photos
    emb = rng.normal(size=(12, 8)) + labels[:, None] * 0.6
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ref = brute_force(emb, labels, 0.2, mining)
    loss, stats = TripletLoss(0.2, mining)(torch.tensor(emb), torch.tensor(labels))
    expected = ref[ref > 0].mean() if mining == "batch-all" else ref.mean()
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert stats.triplets == len(ref) == {"batch-all": 12 * 2 * 9, "batch-hard": 12,
                                          "semi-hard": 12 * 2}[mining]
    assert stats.active == pytest.approx((ref > 0).mean())
    assert 0 <= stats.positive < stats.negative <= 4  # the clusters are apart


def test_triplet_loss_refuses_a_batch_without_pairs():
    with pytest.raises(ValueError, match="two photos of one identity"):
        TripletLoss()(torch.eye(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")


def test_augmentation_is_seeded_switchable_and_centred():
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    basis = pca_basis(canvas[None])
    all_on = AugmentSettings()
    a, b = (Augmenter(all_on, 4, seed=7, basis=basis) for _ in range(2))
    outs = [a(canvas) for _ in range(5)]
    assert all(np.array_equal(x, b(canvas)) for x in outs)  # same seed, same sequence
    assert outs[0].shape == (40, 32, 3) and not np.array_equal(outs[0], outs[1])
    off = Augmenter(AugmentSettings.only(["none"]), 4, seed=7)
    assert np.array_equal(off(canvas), canvas[4:-4, 4:-4]) and off.settings.enabled() == []
    mirror = Augmenter(AugmentSettings.only(["mirror"]), 4, seed=3)
    flips = [mirror(canvas) for _ in range(20)]
    assert any(np.array_equal(f, canvas[4:-4, 4:-4, :][:, ::-1]) for f in flips)
    assert any(np.array_equal(f, canvas[4:-4, 4:-4]) for f in flips)
    pca = Augmenter(AugmentSettings.only(["pca"]), 4, seed=3, basis=basis)
    shift = pca(canvas).astype(float) - canvas[4:-4, 4:-4]
    unclipped = (canvas[4:-4, 4:-4] > 30).all(-1) & (canvas[4:-4, 4:-4] < 225).all(-1)
    assert np.ptp(shift[unclipped].round(), axis=0).max() <= 1  # one colour shift per image
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentSettings.only(["rotate"])
    with pytest.raises(ValueError, match="basis"):
        Augmenter(AugmentSettings(), 4, seed=0)


def test_roc_figures_on_known_distributions(tmp_path):
    rng = np.random.default_rng(0)
    same, other = rng.uniform(0, 1, 500), rng.uniform(1.01, 2, 5000)
    apart = evaluate(same, other)
    assert apart.eer == 0 and apart.tar_at_far == {"0.01": 1.0, "0.001": 1.0}
    assert same.max() <= apart.best_threshold < other.min() and apart.best_accuracy == 1.0
    genuine, impostor = rng.normal(0, 1, 20000), rng.normal(2, 1, 20000)
    report = evaluate(genuine, impostor)
    assert report.eer == pytest.approx(0.1587, abs=0.01)  # Phi(-1): the crossing at 1
    assert report.eer_threshold == pytest.approx(1.0, abs=0.05)
    assert report.tar_at_far["0.01"] == pytest.approx(0.372, abs=0.02)  # Phi(2 - 2.326)
    assert report.recommended("far=0.001") == pytest.approx(2 - 3.09, abs=0.1)
    with pytest.raises(ValueError, match="rule"):
        report.recommended("median")
    files = plot(report, genuine, impostor, tmp_path, "synthetic")
    for f in files:
        image = cv2.imread(str(f))
        assert image is not None and image.std() > 10


def test_pairs_are_every_genuine_pair_and_seeded_impostors():
    labels = np.repeat(np.arange(5), 4)
    emb = np.eye(5)[labels].astype(np.float32)
    report, genuine, impostor = verification_report(emb, labels, impostors=50, seed=3)
    assert len(genuine) == 5 * 6 and len(impostor) == 50 and report.eer == 0
    again = verification_report(emb, labels, impostors=50, seed=3)[2]
    assert np.array_equal(impostor, again)


def _clusters(seed: int, people: int = 6, photos: int = 5, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    labels = np.repeat(np.arange(people), photos)
    emb = centres[labels] + 0.35 * rng.normal(size=(len(labels), dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("kind", ["abs", "chi2"])
def test_verification_head_learns_and_the_gallery_decides_with_it(kind, tmp_path):
    emb, labels = _clusters(0)
    head = train_head(emb, labels, kind, "fp-1")
    test_emb, test_labels = _clusters(1)  # other people
    report = verification_report(test_emb, test_labels,
                                 lambda a, b: 1 - head.probability(a, b))[0]
    assert report.eer < 0.1
    gallery = Gallery("enc", "fp-1", 16)
    for person in range(3):
        gallery.add(f"p{person}", test_emb[test_labels == person][:2])
    gallery.set_threshold(0.01)  # so tight that the distance rule rejects everyone
    probes = np.stack([test_emb[test_labels == p][3] for p in range(3)])
    assert [d.name for d in Matcher(gallery, 1.0).identify(probes)] == [None] * 3
    gallery.set_head(head)
    path = tmp_path / "g.npz"
    gallery.save(path)
    loaded = load_gallery(path, "fp-1")
    assert loaded.head is not None and loaded.head.kind == kind
    matcher = Matcher(loaded, 1.0)
    decisions = matcher.identify(probes)
    assert [d.name for d in decisions] == ["p0", "p1", "p2"]
    assert all(d.method == "head" and d.threshold == pytest.approx(0.5) for d in decisions)
    assert matcher.verify(probes[0], "p1").name is None
    assert matcher.verify(probes[1], "p1").as_dict()["method"] == "head"
    stranger = _clusters(2)[0][:1]
    assert matcher.identify(stranger)[0].name is None


def test_gallery_file_versions_and_bad_heads(tmp_path):
    gallery = Gallery("enc", "fp-1", 4)
    gallery.add("a", np.eye(4, dtype=np.float32)[:1])
    plain = tmp_path / "plain.npz"
    gallery.save(plain)
    with np.load(io.BytesIO(archive_bytes(plain))) as data:
        assert json.loads(str(data["header"]))["version"] == 1  # older releases read it
    head = VerificationHead("abs", np.ones(4, np.float32), 0.0, "fp-1")
    gallery.set_head(head)
    gallery.save(tmp_path / "head.npz")
    with np.load(io.BytesIO(archive_bytes(tmp_path / "head.npz"))) as data:
        header = json.loads(str(data["header"]))
    assert header["version"] == 2 and header["head"]["kind"] == "abs"
    with pytest.raises(GalleryError, match="fingerprint fp-2"):
        gallery.set_head(VerificationHead("abs", np.ones(4, np.float32), 0.0, "fp-2"))
    with pytest.raises(GalleryError, match="3 weights"):
        gallery.set_head(VerificationHead("abs", np.ones(3, np.float32), 0.0, "fp-1"))
    for bad, message in [({"kind": "abs"}, "missing 'weights'"),
                         ({**head.as_dict(), "kind": "cos"}, "kind 'cos'"),
                         ({**head.as_dict(), "weights": [1, 2]}, "needs 4 finite weights"),
                         ({**head.as_dict(), "threshold": 1.5}, "probability"),
                         ({**head.as_dict(), "bias": "x"}, "must be numbers")]:
        with pytest.raises(GalleryError, match=message):
            VerificationHead.from_dict(bad, 4)
