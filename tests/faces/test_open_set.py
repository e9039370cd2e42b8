"""Open-set thresholds: the tau(K) rule on distributions with known answers, the measured
curves against brute force, the shipped calibration against a fresh one, and decisions
that say which threshold they used and why."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, archive_bytes
from jetkiosk.edge.faces.open_set import ScoreCalibration, ThresholdRule, calibration_of
from jetkiosk.export.encoder.open_set_eval import (
    STRANGER,
    OpenSetFaces,
    merge_aliases,
    open_set_curves,
    runtime_faces,
    score_calibration,
)
from jetkiosk.export.models.prepare import BUNDLED

# A synthetic encoder whose impostor rate is exactly p(tau) = 10 ** (A * tau - B), with
# comparisons independent: FPIR(K, tau) = 1 - (1 - p) ** K.
A, B = 6.0, 9.0


def _p(tau: float) -> float:
    return 10.0 ** (A * tau - B)


def _analytic_tau(fpir: float, k: int) -> float:
    return (math.log10(-math.expm1(math.log1p(-fpir) / k)) + B) / A


SHIFT = 0.05  # two-photo templates: every threshold this much tighter


def _family(ks, shift: float = 0.0):
    taus = np.arange(0.5, 1.5, 0.001)
    levels = np.round(np.arange(-4.0, -0.95, 0.1), 2)
    table = [[_analytic_tau(10.0 ** lv, k) - shift for lv in levels] for k in ks]
    far = [A * t - B for t in taus if A * t - B <= 0]
    return {"tau": list(taus[:len(far)] - shift), "log10_far": far,
            "tail": {"tau": float(taus[0] - shift), "slope": A},
            "curves": {"k": list(ks), "log10_fpir": list(levels), "tau": table}}


def synthetic_calibration(ks=(1, 10, 100, 1000)) -> ScoreCalibration:
    one = _family(ks)
    return ScoreCalibration.from_dict({
        "encoder": "synthetic", "fingerprint": "f", "dataset": "synthetic", **one,
        "tar": [0.5] * len(one["tau"]),
        "templates": [{"photos": 2, **_family(ks, SHIFT)}]}, "synthetic")


@pytest.mark.parametrize("k", [1, 9, 10, 37, 100, 600, 1000, 5000, 10 ** 6])
@pytest.mark.parametrize("fpir", [0.001, 0.003, 0.01])
def test_tau_for_fpir_matches_the_analytic_answer_in_every_branch(k, fpir):
    calibration = synthetic_calibration()
    tau, how = calibration.tau_for_fpir(fpir, k)
    # Inside the measured curves, on them (log K interpolation), extended beyond them, or
    # from the per-comparison tail where even the extension needs rates not measured.
    expected = {True: "measured curve", False: "extended"}[k <= 1000] if k < 10 ** 6 else "tail"
    assert expected in how
    assert tau == pytest.approx(_analytic_tau(fpir, k), abs=2e-3 if k in (1, 10, 100, 1000)
                                else 0.02)
    assert calibration.fpir(tau, k) == pytest.approx(fpir, rel=0.35)


def test_threshold_falls_as_the_gallery_grows_and_rises_with_the_target():
    calibration = synthetic_calibration()
    taus = [calibration.tau_for_fpir(0.003, k)[0] for k in (1, 10, 100, 1000, 10 ** 5)]
    assert taus == sorted(taus, reverse=True)
    assert calibration.tau_for_fpir(0.01, 100)[0] > calibration.tau_for_fpir(0.001, 100)[0]


def test_rule_order_gallery_file_then_fixed_setting_then_target():
    rule = ThresholdRule(None, 0.003, synthetic_calibration())
    tau, why = rule.base(None, 100)
    assert tau == pytest.approx(_analytic_tau(0.003, 100), abs=2e-3)
    assert "target FPIR 0.003 with 100 enrolled" in why
    assert rule.base(0.7, 100) == (0.7, "fixed in the gallery file")
    assert ThresholdRule(0.9, 0.003, None).base(None, 5) == (0.9, "fixed by gallery.threshold")
    with pytest.raises(ModelError, match="needs the encoder.s score calibration"):
        ThresholdRule(None, 0.003, None).base(None, 5)


def test_malformed_calibration_is_a_model_error():
    with pytest.raises(ModelError, match="malformed"):
        ScoreCalibration.from_dict({"tau": [1]}, "x")
    good = json.loads(json.dumps({
        "encoder": "e", "fingerprint": "f", "dataset": "d", "tau": [1.0, 0.9],
        "log10_far": [-3, -2], "tar": [0.5, 0.6], "tail": {"tau": 1.0, "slope": 5},
        "curves": {"k": [1], "log10_fpir": [-3], "tau": [[1.0]]}}))
    with pytest.raises(ModelError, match="not monotone"):
        ScoreCalibration.from_dict(good, "x")


def _random_faces(seed: int, people: int = 40, strangers: int = 30, dim: int = 8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people + strangers, dim))
    labels, rows = [], []
    for i in range(people + strangers):
        for _ in range(3 if i < people else 1):
            rows.append(centres[i] + 0.6 * rng.normal(size=dim))
            labels.append(i if i < people else STRANGER)
    enc = np.array(rows, np.float32)
    return OpenSetFaces([f"p{i}" for i in range(len(rows))], np.array(labels),
                        enc / np.linalg.norm(enc, axis=1, keepdims=True))


def test_measured_curves_are_the_exact_expectation_over_random_galleries():
    faces = _random_faces(0)
    taus = np.round(np.arange(0.2, 2.0, 0.01), 3)
    curves = open_set_curves(faces, taus)
    labels = faces.labels.copy()
    labels[labels == STRANGER] = labels.max() + 1 + np.arange((labels == STRANGER).sum())
    _, first = np.unique(labels, return_index=True)
    dist = 2 - 2 * faces.encodings @ faces.encodings[first].T
    dist[labels[:, None] == labels[first][None, :]] = np.inf
    rng = np.random.default_rng(1)
    k = 10
    row = curves["k"].index(k)
    for level, tau in zip(curves["log10_fpir"], curves["tau"][row]):
        if tau is None or level < -1.6:  # brute force resolves rates down to a few percent
            continue
        named = []
        for _ in range(3000):
            gallery = rng.choice(len(first), k, replace=False)
            named.append((dist[:, gallery].min(1) <= tau).mean())
        assert np.mean(named) <= 10 ** level * 1.15 + 0.002
        above = taus[np.searchsorted(taus, tau) + 1]
        assert np.mean([(dist[:, rng.choice(len(first), k, replace=False)].min(1) <= above)
                        .mean() for _ in range(3000)]) > 10 ** level * 0.85 - 0.002


def test_one_person_under_two_names_is_merged_not_counted_as_a_stranger():
    faces = _random_faces(2)
    twin = faces.encodings[[0]]  # person 0's first photo again, as a "stranger"
    merged, aliases = merge_aliases(OpenSetFaces(
        faces.files + ["twin"], np.append(faces.labels, STRANGER),
        np.concatenate([faces.encodings, twin])))
    assert ("p0", "twin") in aliases
    assert merged.labels[-1] == merged.labels[0]


def test_matcher_decisions_name_their_threshold_and_why():
    gallery = Gallery("e", "f", 4)
    gallery.add("ann", np.eye(4)[:1])
    gallery.add("bob", np.eye(4)[1:2])
    rule = ThresholdRule(None, 0.003, synthetic_calibration())
    matcher = Matcher(gallery, rule)
    (decision,) = matcher.identify(np.eye(4)[:1])
    assert decision.name == "ann" and "with 2 enrolled" in decision.as_dict()["rule"]
    assert decision.threshold == pytest.approx(_analytic_tau(0.003, 2), abs=2e-3)
    one = matcher.verify(np.eye(4)[0], "ann")
    assert "with 1 enrolled" in one.rule and one.threshold > decision.threshold
    gallery.set_threshold(0.5, "bob")
    assert Matcher(gallery, rule).rule_for("bob") == "set for this person"


def test_rejection_refuses_the_rejected_encoding_and_anything_as_close():
    gallery = Gallery("e", "f", 3)
    gallery.add("ann", np.array([[1.0, 0, 0]]))
    close = np.array([0.8, 0.6, 0.0], np.float32)  # distance 0.4 from ann
    closer = np.array([0.9, np.sqrt(1 - 0.81), 0.0], np.float32)  # distance 0.2
    farther_off_axis = np.array([0.8, 0.0, 0.6], np.float32)  # distance 0.4, elsewhere
    matcher = Matcher(gallery, 1.0)
    assert [d.name for d in matcher.identify(np.stack([close, closer]))] == ["ann", "ann"]
    gallery.reject("ann", close)
    matcher = Matcher(gallery, 1.0)
    names = [d.name for d in matcher.identify(np.stack([close, farther_off_axis, closer]))]
    assert names == [None, None, "ann"]
    assert matcher.verify(close, "ann").name is None
    assert "rejection" in matcher.rule_for("ann")


def test_rejections_survive_save_load_rename_and_remove(tmp_path):
    gallery = Gallery("e", "f", 3)
    gallery.add("ann", np.array([[1.0, 0, 0]]))
    gallery.add("bob", np.array([[0.0, 1, 0]]))
    gallery.reject("ann", np.array([0.8, 0.6, 0.0]))
    gallery.save(tmp_path / "g.npz")
    from jetkiosk.edge.faces.gallery import load_gallery

    loaded = load_gallery(tmp_path / "g.npz")
    assert loaded.rejections("ann").shape == (1, 3) and len(loaded.rejections("bob")) == 0
    loaded.rename("ann", "anne")
    assert loaded.rejections("anne").shape == (1, 3)
    loaded.remove("anne")
    loaded.save(tmp_path / "g.npz")
    with np.load(io.BytesIO(archive_bytes(tmp_path / "g.npz"))) as data:
        assert "rejected" not in data and json.loads(str(data["header"]))["version"] == 1


@pytest.fixture(scope="module")
def lfw_faces(shared, models_dir, tmp_path_factory):
    """lfw-calib encoded by the runtime's default encoder (about a minute)."""
    config = load_config(overrides=[f"models.dir={models_dir}"])
    cache = tmp_path_factory.mktemp("open-set")
    return config, runtime_faces(config, shared / "faces/lfw-calib", config.models.encoder,
                                 cache), cache


def test_shipped_calibration_matches_a_fresh_one(lfw_faces, models_dir):
    from jetkiosk.edge.faces.analyzer import model_manifest

    config, faces, _ = lfw_faces
    manifest = model_manifest(config, config.models.encoder, "face-encoder")
    shipped = json.loads((BUNDLED / f"{manifest.name}.open-set.json").read_text())
    assert manifest.open_set == shipped  # prepare put it into the manifest
    fresh = ScoreCalibration.from_dict(score_calibration(
        faces, manifest.name, manifest.fingerprint, shipped["dataset"]), "fresh")
    installed = calibration_of(manifest)
    assert installed is not None and installed.fingerprint == manifest.fingerprint
    for k in (1, 9, 100, 600, 5000):
        for fpir in (0.001, 0.003, 0.01):
            assert fresh.tau_for_fpir(fpir, k)[0] == pytest.approx(
                installed.tau_for_fpir(fpir, k)[0], abs=0.005), (k, fpir)


def test_default_rule_holds_fpir_near_its_target_on_real_photos(lfw_faces):
    """The protocol of bench/open_set.py at the shipped default, K = 100 (five draws)."""
    from jetkiosk.edge.faces.analyzer import model_manifest
    from jetkiosk.export.encoder.open_set_eval import open_set

    config, faces, _ = lfw_faces
    calibration = calibration_of(model_manifest(config, config.models.encoder, "face-encoder"))
    assert calibration is not None
    target = config.gallery.target_fpir
    faces, _ = merge_aliases(faces)
    results = [open_set(faces, 100, lambda k: calibration.tau_for_fpir(target, k)[0], seed)
               for seed in range(5)]
    fpir = np.mean([r.fpir for r in results])
    assert fpir <= 2 * target
    assert np.mean([r.tpir for r in results]) >= 0.95


def test_calibrate_command_writes_the_manifest_entry(lfw_faces, shared, tmp_path):
    from jetkiosk.edge.cli.main import main

    config, _, cache = lfw_faces
    out = tmp_path / "cal.json"
    code = main(["encoder", "calibrate", "--data", str(shared / "faces/lfw-calib"),
                 "--models", str(config.models_dir), "--out", str(out), "--cache", str(cache)])
    assert code == 0
    written = json.loads(out.read_text())
    assert written["fingerprint"] == json.loads(
        (BUNDLED / f"{config.models.encoder}.open-set.json").read_text())["fingerprint"]


@pytest.mark.parametrize("k", [1, 10, 50, 1000, 5000])
def test_templates_of_several_photos_get_their_own_tighter_threshold(k):
    calibration = synthetic_calibration()
    single, _ = calibration.tau_for_fpir(0.003, k)
    two, how = calibration.tau_for_fpir(0.003, k, photos=2)
    assert two == pytest.approx(single - SHIFT, abs=2e-3) and "2-photo templates" in how
    assert calibration.tau_for_fpir(0.003, k, photos=7)[0] == two  # largest size measured
    gallery = Gallery("e", "f", 4)
    gallery.add("ann", np.eye(4)[:2])  # two photos
    gallery.add("bob", np.eye(4)[2:3])
    matcher = Matcher(gallery, ThresholdRule(None, 0.003, calibration))
    assert matcher.threshold_for("ann") == pytest.approx(matcher.threshold_for("bob") - SHIFT,
                                                          abs=2e-3)
    assert "template of 2 photos" in matcher.rule_for("ann")
    assert "template" not in matcher.rule_for("bob")
    fixed = Matcher(gallery, 1.0)  # a fixed threshold stays as it is
    assert fixed.threshold_for("ann") == fixed.threshold_for("bob") == 1.0
