"""The style side of export/: the neural style cost, the network and its ONNX export,
training with resumable checkpoints, Gatys optimisation, and the styles we ship."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from skimage import data

from conftest import BUNDLED_STYLES
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.kiosk.catalog import BUNDLED
from jetkiosk.edge.runtime.manifest import load_manifest, sha256_file
from jetkiosk.export.style.artworks import GENERATORS, style_image
from jetkiosk.export.style.gatys import stylize_image
from jetkiosk.export.style.loss import StyleCost, StyleWeights, content_cost, gram, style_layer_cost
from jetkiosk.export.style.loss_network import conv_names, load_loss_network, torchvision_indices
from jetkiosk.export.style.network import StyleNet, StyleNetConfig
from jetkiosk.export.style.train import TrainSettings, export_style, train_style, warm_start


def test_gram_and_costs_follow_the_formulas():
    a = torch.arange(24, dtype=torch.float32).reshape(1, 2, 3, 4)
    flat = a.reshape(2, 12)
    assert torch.equal(gram(a)[0], flat @ flat.T)
    b = a + 1.0
    assert float(content_cost(a, b)) == pytest.approx(0.5 * 24)
    expected = float(((gram(a) - gram(b)) ** 2).sum()) / (2 * 3 * 4 * 2) ** 2
    assert float(style_layer_cost(gram(a), b)) == pytest.approx(expected)
    assert float(style_layer_cost(gram(a), a)) == 0.0


def _torchvision_state(arch: str, path):
    """A torchvision-layout VGG state dict (random weights) with a classifier, as saved by
    ``torch.save(torchvision.models.vgg16().state_dict(), path)``."""
    state, previous = {}, 3
    for name, index in zip(conv_names(arch), torchvision_indices(arch)):
        channels = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[int(name[5])]
        state[f"features.{index}.weight"] = torch.randn(channels, previous, 3, 3) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(channels)
        previous = channels
    state["classifier.0.weight"] = torch.zeros(8, 8)
    torch.save(state, str(path))
    return path


def test_loss_network_from_torchvision_vgg16_and_vgg19(tmp_path):
    x = torch.rand(1, 3, 64, 64)
    layers = ["block1_conv1", "block4_conv2", "block5_conv1"]
    for arch, convs in (("vgg16", 13), ("vgg19", 16)):
        net = load_loss_network(_torchvision_state(arch, tmp_path / f"{arch}.pth"))
        assert net.arch == arch and len(net.convs) == convs and not net.caffe
        out = net(x, layers)
        assert out["block4_conv2"].shape == (1, 512, 8, 8)
        assert out["block5_conv1"].shape == (1, 512, 4, 4)
    assert load_loss_network().arch == "vgg19"
    with pytest.raises(ModelError, match="has no layer block5_conv4"):
        load_loss_network(tmp_path / "vgg16.pth")(x, ["block5_conv4"])
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(tmp_path / "odd.pth"))
    with pytest.raises(ModelError, match="1 convolutions; a torchvision VGG16 has 13"):
        load_loss_network(tmp_path / "odd.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a torchvision VGG16/VGG19 state dict"):
        load_loss_network(tmp_path / "junk.pth")


def test_network_is_slim_fully_convolutional_and_keeps_the_size():
    net = StyleNet(StyleNetConfig(width=16, blocks=2)).eval()
    assert sum(p.numel() for p in net.parameters()) < sum(
        p.numel() for p in StyleNet().parameters())
    with torch.no_grad():
        for h, w in ((64, 96), (37, 53), (128, 72)):
            out = net(torch.rand(1, 3, h, w))
            assert out.shape == (1, 3, h, w)
            assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_onnx_export_matches_pytorch_at_several_sizes(tmp_path):
    torch.manual_seed(3)
    net = StyleNet().eval()
    for p in net.parameters():  # away from the identity-like init, like a trained net
        p.data.add_(torch.randn_like(p) * 0.05)
    manifest = export_style(net, tmp_path, "random", {"license": "MIT", "style_image": "none"})
    assert manifest.task == "style-transfer" and manifest.sha256 == sha256_file(manifest.model_path)
    onnx.checker.check_model(str(manifest.model_path))
    session = ort.InferenceSession(str(manifest.model_path), providers=["CPUExecutionProvider"])
    for h, w in ((64, 96), (360, 640), (120, 200)):
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4


def test_eight_styles_ship():
    assert len(BUNDLED_STYLES) >= 8 and "hubble" not in BUNDLED_STYLES  # it blacked faces out


@pytest.mark.parametrize("name", BUNDLED_STYLES)
def test_shipped_styles_are_small_dynamic_and_documented(name):
    manifest = load_manifest(BUNDLED / f"style-{name}.json")
    manifest.verify()
    assert manifest.model_path.stat().st_size <= 2 * 1024 * 1024
    assert manifest.source["trained_by"].startswith("jetkiosk")
    # The style image's source and an open licence, and it is the named image we can redraw.
    assert manifest.license in ("CC0-1.0", "public-domain")
    assert manifest.source["style_image"] == style_image(name).origin
    model = onnx.load(str(manifest.model_path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(manifest.model_path), providers=["CPUExecutionProvider"])
    photo = data.astronaut()[:360, :480].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    out = session.run(None, {"image": photo})[0]
    assert out.shape == photo.shape
    # A style, not the identity and not a flat image.
    assert np.abs(out - photo).mean() > 0.05 and out.std() > 0.05


def _cost_on(model, cost, batch):
    with torch.no_grad():
        return float(cost(batch, model(batch))["total"])


def test_training_lowers_the_cost_and_resumes_from_its_checkpoint(tmp_path):
    style = data.hubble_deep_field()[:256, :256]
    content = [data.astronaut(), data.coffee(), data.chelsea()]
    settings = TrainSettings(steps=12, batch=2, crop=96, style_side=128, checkpoint_every=6)
    config = StyleNetConfig(width=8, blocks=1)
    checkpoint = tmp_path / "s.ckpt"
    lines = []
    cost = StyleCost(load_loss_network(),
                     torch.from_numpy(style).permute(2, 0, 1)[None].float() / 255,
                     StyleWeights())
    batch = torch.from_numpy(np.stack([c[:96, :96] for c in content])).permute(0, 3, 1, 2)
    batch = batch.float() / 255
    torch.manual_seed(settings.seed)
    before = _cost_on(StyleNet(config).eval(), cost, batch)
    first = train_style(style, content, checkpoint, config, settings=settings, device="cpu",
                        log=lines.append)
    assert checkpoint.is_file()
    state = torch.load(str(checkpoint), weights_only=False)
    assert state["step"] == 12 and state["net_config"] == config.as_dict()
    assert _cost_on(first, cost, batch) < before
    settings.steps = 18
    train_style(style, content, checkpoint, config, settings=settings, device="cpu",
                log=lines.append)
    assert any("resumed" in line and "step 12" in line for line in lines)
    assert torch.load(str(checkpoint), weights_only=False)["step"] == 18
    # The same with a user's torchvision VGG16 as the loss network.
    settings.steps = 2
    vgg16 = _torchvision_state("vgg16", tmp_path / "vgg16.pth")
    train_style(style, content, tmp_path / "v16.ckpt", config, settings=settings, device="cpu",
                log=lines.append, loss_network=vgg16)
    assert torch.load(str(tmp_path / "v16.ckpt"), weights_only=False)["step"] == 2


def test_training_prints_its_device_time_per_step_and_eta(tmp_path):
    """A tiny run: the device first, then ``step k/n, s/step, ETA`` after the first step,
    every ``report_every`` steps and the last, with a falling ETA; a resumed run counts on
    from its checkpoint."""
    import re

    style = data.hubble_deep_field()[:128, :128]
    content = [data.astronaut(), data.coffee()]
    settings = TrainSettings(steps=5, batch=1, crop=64, style_side=64, checkpoint_every=5,
                             stability=0.0)
    lines: list = []
    train_style(style, content, tmp_path / "p.ckpt", StyleNetConfig(width=8, blocks=1),
                settings=settings, device="cpu", log=lines.append, report_every=2)
    assert re.fullmatch(r"training on CPU \(\d+ threads\): steps 1-5 of 5, batch 1 x 64 px",
                        lines[0]), lines
    progress = [re.fullmatch(r"step (\d+)/5  (\d+\.\d{3}) s/step  ETA ((\d+m )?\d+s)  "
                             r"content \S+  style \S+  tv \S+", line) for line in lines[1:-1]]
    assert all(progress), lines
    assert [int(m.group(1)) for m in progress] == [1, 2, 4, 5]
    assert progress[-1].group(3) == "0s"
    assert re.fullmatch(r"5 steps in (\d+m )?\d+s \(\d+\.\d{3} s/step\) on CPU \(\d+ threads\)",
                        lines[-1]), lines
    settings.steps = 7
    lines.clear()
    train_style(style, content, tmp_path / "p.ckpt", StyleNetConfig(width=8, blocks=1),
                settings=settings, device="cpu", log=lines.append, report_every=2)
    assert "training on CPU" in lines[1] and "steps 6-7 of 7" in lines[1]
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["6/7", "7/7"]


def test_gatys_lowers_the_cost_from_content_and_from_noise():
    content = data.astronaut()[::8, ::8]
    style = data.hubble_deep_field()[::8, ::8]
    for init in ("content", "noise"):
        costs: list = []
        out = stylize_image(content, style, steps=60, init=init, max_side=64, device="cpu",
                            progress=lambda step, loss, costs=costs: costs.append(loss))
        assert out.shape == content.shape and out.dtype == np.uint8
        assert costs[-1] < costs[0] * 0.95, costs
    with pytest.raises(ValueError):
        stylize_image(content, style, steps=1, init="zeros")


def test_manifest_names_its_source_json_round_trip(tmp_path):
    net = StyleNet(StyleNetConfig(width=8, blocks=1))
    manifest = export_style(net, tmp_path, "tiny", {"license": "CC0-1.0", "style_image": "x"})
    data_ = json.loads(manifest.path.read_text())
    assert data_["preprocess"]["multiple_of"] == 4 and data_["license"] == "CC0-1.0"


def test_warm_start_loads_a_shipped_style_and_refuses_another_shape(tmp_path):
    model = StyleNet()
    warm_start(model, BUNDLED / "style-mosaic.onnx")
    photo = data.astronaut()[:128, :192].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    session = ort.InferenceSession(str(BUNDLED / "style-mosaic.onnx"),
                                   providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(photo)).numpy()
    assert np.abs(ours - session.run(None, {"image": photo})[0]).max() < 1e-4
    with pytest.raises(ModelError, match="not a style network of width 16 with 2 blocks"):
        warm_start(StyleNet(StyleNetConfig(width=16, blocks=2)), BUNDLED / "style-mosaic.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="broken.onnx: not a readable ONNX model"):
        warm_start(StyleNet(), broken)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_artworks_are_drawn_the_same_every_time(name):
    first, again = GENERATORS[name](), GENERATORS[name]()
    assert first.shape == (512, 512, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert first.std() > 25  # a pattern, not a flat colour


def test_the_progress_names_the_device_it_trains_on(monkeypatch):
    """No GPU here: torch.cuda's two calls stand in for an H200's."""
    from jetkiosk.export.style.train import device_name

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"NVIDIA H200 #{index}")
    assert device_name(torch.device("cuda")) == "CUDA device 0 (NVIDIA H200 #0)"
    assert device_name(torch.device("cuda", 1)) == "CUDA device 1 (NVIDIA H200 #1)"
    assert device_name(torch.device("cpu")) == f"CPU ({torch.get_num_threads()} threads)"
