"""Circuits on real architectures: EfficientNet-Lite0 (packaged weights), timm ResNet-18, torchvision GoogLeNet and
Lucid InceptionV1 (random weights), the InceptionV1 download path from a loopback server, and the CLI."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

import visfeat
from visfeat.circuits import NonlinearPathError, contributors, direct_weights, expand, path_report
from visfeat.cli import main


@functools.cache
def _model(name: str) -> visfeat.Model:
    kwargs = {} if name == "efficientnet_lite0" else {"pretrained": False}
    torch.manual_seed(0)
    m = visfeat.load_model(name, **kwargs)
    if name != "efficientnet_lite0":  # random BN statistics (timm zero-initializes the last BN of each block)
        with torch.no_grad():
            for mod in m.module.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.normal_()
                    mod.running_var.uniform_(0.5, 1.5)
    return m


def test_efficientnet_lite0_logit_exact_from_head_linearized_from_blocks():
    m = _model("efficientnet_lite0")
    sports_car = m.labels.index("sports car")
    e = expand(m, "bn2", "logits", channels=[sports_car], mode="exact")
    assert e.mode == "exact" and e.weights.shape == (1, 1280, 1, 1) and e.pooled_through == "bn2"
    # global average pool + linear: the weight is the classifier row
    torch.testing.assert_close(e.weights[0, :, 0, 0], m.module.classifier.weight[sports_car], atol=1e-5, rtol=1e-5)
    with pytest.raises(NonlinearPathError, match="BatchNormAct2d"):
        expand(m, "blocks.6", "logits", channels=[sports_car], mode="exact")
    e = expand(m, "blocks.5", "logits", channels=[sports_car])
    assert e.mode == "linearized" and e.weights.shape == (1, 192, 3, 3)
    assert any("ReLU6 -> identity" in s for s in e.linearized)
    # the projection conv + BN of one block is exact and equals the folded weights
    e = expand(m, "blocks.6.0.bn2", "blocks.6.0.bn3", mode="exact")
    blk = m.module.blocks[6][0]
    torch.testing.assert_close(e.weights, direct_weights(blk.conv_pwl, blk.bn3), atol=1e-5, rtol=1e-4)


def test_timm_resnet18_residual_paths():
    m = _model("timm:resnet18")
    ops = path_report(m, "layer3", "layer4.0")
    assert any(op.kind == "swap" and "ReLU" in op.label for op in ops)
    with pytest.raises(NonlinearPathError, match="layer4.0.act1"):
        expand(m, "layer3", "layer4.0", channels=[0], mode="exact")
    e = expand(m, "layer3", "layer4.0.bn2", channels=[0, 5], per_path=True)
    assert e.weights.shape[:2] == (2, 256)
    assert len(e.paths) == 1  # bn2 is before the residual add
    e = expand(m, "layer3", "layer4.0", channels=[0], per_path=True)
    assert len(e.paths) == 2  # main path and the downsample shortcut
    torch.testing.assert_close(e.path_weights.sum(0), e.weights, atol=1e-5, rtol=1e-4)


def test_torchvision_googlenet_branches_and_maxpool():
    m = _model("torchvision:googlenet")
    e = expand(m, "inception4b", "inception4c", channels=[3, 200])
    assert e.mode == "linearized" and e.weights.shape[:2] == (2, 512)
    assert any("MaxPool2d -> AvgPool2d" in s for s in e.linearized)
    assert any("relu -> identity" in s for s in e.linearized)
    with pytest.raises(NonlinearPathError, match="relu"):
        expand(m, "inception4b", "inception4c", channels=[3], mode="exact")
    e = expand(m, "inception4a", "inception4b.branch1.bn", mode="exact")
    conv, bn = m.module.inception4b.branch1.conv, m.module.inception4b.branch1.bn
    torch.testing.assert_close(e.weights, direct_weights(conv, bn), atol=1e-5, rtol=1e-4)


def test_inceptionv1_mixed4b_to_mixed4c():
    m = _model("inceptionv1")
    e = expand(m, "mixed4b", "mixed4c", channels=[447])
    assert e.weights.shape == (1, 512, 5, 5) and e.mode == "linearized"
    assert "mixed4c_pool: max_pool2d -> avg_pool2d" in e.linearized
    assert any(s.startswith("mixed4c_1x1:") and "identity" in s for s in e.linearized)
    # the 1x1 branch only: exact and equal to the conv weights (centre tap of the 5x5 kernel)
    e1 = expand(m, "mixed4b", "mixed4c_1x1_pre_relu_conv", mode="exact")
    w = m.module.mixed4c_1x1_pre_relu_conv.weight
    torch.testing.assert_close(e1.weights, w, atol=1e-6, rtol=1e-5)
    c = contributors(m, "mixed4c:447", "mixed4b", k=3)
    assert len(c.excite) == 3 and len(c.inhibit) == 3 and c.weights.shape == (512, 5, 5)


def test_inceptionv1_download_from_loopback_server(tmp_path, monkeypatch):
    torch.manual_seed(1)
    src = visfeat.load_model("inceptionv1", pretrained=False)
    served = tmp_path / "served"
    served.mkdir()
    torch.save(src.module.state_dict(), served / "inception5h.pth")
    monkeypatch.setenv("VISFEAT_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/inception5h.pth"
        m = visfeat.load_model("inceptionv1", url=url)
    finally:
        server.shutdown()
    assert (tmp_path / "cache" / "inception5h.pth").is_file()
    a = expand(m, "mixed4b", "mixed4c", channels=[447]).weights
    b = expand(src, "mixed4b", "mixed4c", channels=[447]).weights
    torch.testing.assert_close(a, b)


def test_cli_circuit_inceptionv1_local_weights(tmp_path, capsys):
    torch.manual_seed(2)
    src = visfeat.load_model("inceptionv1", pretrained=False)
    weights = tmp_path / "inception5h.pth"
    torch.save(src.module.state_dict(), weights)
    out = tmp_path / "circ"
    argv = ["circuit", "inceptionv1", "mixed4c:447", "--from", "mixed4b", "--weights", str(weights), "-k", "1"]
    assert main(argv + ["--steps", "1", "--no-progress", "--device", "cpu", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mixed4b: linearized" in printed
    page = (out / "circuit.html").read_text()
    assert "mixed4c:447" in page and "mixed4c_pool: max_pool2d -&gt; avg_pool2d" in page
    assert len(list((out / "img").glob("*.png"))) == 3  # the target and its two contributors


def test_cli_circuit_rejects_unknown_layer(tmp_path, capsys):
    argv = ["circuit", "efficientnet_lite0", "logit:sports_car", "--from", "blocks.66", "-o", str(tmp_path)]
    assert main(argv + ["--steps", "0", "--device", "cpu"]) == 2
    assert "blocks.6" in capsys.readouterr().err


def test_cli_circuit_with_sae_latents(tmp_path, capsys):
    import visfeat.sae as sae_mod
    from visfeat.sae.io import save

    m = _model("efficientnet_lite0")
    sae = sae_mod.create("topk", d_in=320, d_sae=16, k=4, model="efficientnet_lite0", layer="blocks.6")
    path = save(sae, tmp_path / "rand")
    out = tmp_path / "circ"
    argv = ["circuit", "efficientnet_lite0", "blocks.6/rand:3", "--from", "blocks.5", "--sae", str(path), "-k", "1"]
    assert main(argv + ["--steps", "1", "--no-progress", "--device", "cpu", "-o", str(out)]) == 0
    assert "blocks.6/rand:3" in (out / "circuit.html").read_text()
    enc = (sae.W_enc.detach().T * sae.scale)[3]
    full = expand(m, "blocks.5", "blocks.6").weights  # latent weights are the encoder mix of channel weights
    data = __import__("json").loads((out / "circuit.json").read_text())
    edge = data["edges"][0]
    i = int(edge["src"].split(":")[1])
    torch.testing.assert_close(
        torch.tensor(edge["kernel"]), torch.einsum("c,ckl->kl", enc, full[:, i]), atol=1e-4, rtol=1e-3
    )
    # latents of the source layer as contributors
    out2 = tmp_path / "circ2"
    argv = ["circuit", "efficientnet_lite0", "bn2:5", "--from", "blocks.6", "--sae", str(path), "-k", "1"]
    assert main(argv + ["--steps", "0", "--device", "cpu", "-o", str(out2)]) == 0
    units = [n["unit"] for n in __import__("json").loads((out2 / "circuit.json").read_text())["nodes"]]
    assert units[0] == "bn2:5" and all(u.startswith("blocks.6/rand:") for u in units[1:])


@pytest.mark.slow
def test_sports_car_circuit_pictures_match_their_nodes(tmp_path):
    """EfficientNet-Lite0's sports car circuit with feature visualizations: every contributor's picture drives
    its own bn2 channel harder than the other contributors' pictures do, and the target picture is a sports car."""
    from visfeat.circuits import build_circuit, render_nodes, write_circuit

    m = _model("efficientnet_lite0")
    circuit = build_circuit(m, "logit:sports_car", ["bn2"], k=2)
    assert circuit.modes == ["exact"]
    render_nodes(m, circuit, steps=64, progress=False)
    images = torch.stack([n.image for n in circuit.nodes])
    with torch.no_grad():
        acts = m.activations(images, ["bn2"])["bn2"].mean((2, 3))  # [nodes, 1280]
        logits = m(images[:1])[0]
    channels = [int(n.unit.split(":")[1]) for n in circuit.nodes[1:]]
    own = acts[1:, channels].diagonal()
    others = (acts[1:, channels].sum(0) - own) / (len(channels) - 1)
    assert (own > others).all(), (own, others)
    assert m.labels.index("sports car") in logits.topk(5).indices.tolist()
    paths = write_circuit(circuit, tmp_path, m.name)
    assert paths["html"].stat().st_size > 0
