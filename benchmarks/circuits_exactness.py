"""Exactness of expanded weights, and the graphs of the four supported architectures.

    python benchmarks/circuits_exactness.py

Prints: the planted car circuit's recovery error; on random networks the largest difference between
exact-mode weights and the autograd Jacobian, and between linearized-mode weights and the Jacobian of
the same network with ReLUs removed (max-pool as average-pool); for EfficientNet-Lite0, timm ResNet-18,
torchvision GoogLeNet and Lucid InceptionV1 (random weights except Lite0) the time of one unit's
expansion and the op that stops an exact path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from test_circuits import Net, _randomize, _reference_kernels, planted_car  # noqa: E402

import visfeat  # noqa: E402
from visfeat.circuits import NonlinearPathError, contributors, expand  # noqa: E402

CASES = [
    ("efficientnet_lite0", "logit:sports_car", "blocks.5"),
    ("timm:resnet18", "layer4.0:7", "layer3"),
    ("torchvision:googlenet", "inception4c:7", "inception4b"),
    ("inceptionv1", "mixed4c:447", "mixed4b"),
]


def main() -> None:
    torch.set_num_threads(2)
    model, expected = planted_car()
    e = expand(model, "act", "block", channels=[0], mode="exact")
    c = contributors(model, "block:0", "act", k=4)
    print(
        f"planted car: max |expanded - planted| = {(e.weights[0] - expected).abs().max():.2e} ({e.mode}); "
        f"excite ranking {[x.index for x in c.excite]}, inhibit ranking {[x.index for x in c.inhibit]} "
        "(windows 0,1; wheels 2,3)"
    )
    worst_exact = worst_lin = 0.0
    for seed in range(10):
        torch.manual_seed(seed)
        net = _randomize(Net(), seed)
        m = visfeat.load_model(net, visfeat.InputSpec(size=(24, 24)))
        e = expand(m, "pre", "post", mode="exact")
        worst_exact = max(worst_exact, float((e.weights - _reference_kernels(net, e.size[0])).abs().max()))
        relu = _randomize(Net(act=nn.ReLU, pool=nn.MaxPool2d(3, 1, 1)), seed)
        twin = Net(pool=nn.AvgPool2d(3, 1, 1, count_include_pad=False))
        twin.load_state_dict(relu.state_dict())
        twin.eval()
        e = expand(visfeat.load_model(relu, visfeat.InputSpec(size=(24, 24))), "pre", "post", mode="linearized")
        worst_lin = max(worst_lin, float((e.weights - _reference_kernels(twin, e.size[0])).abs().max()))
    print(f"10 random linear networks: max |exact - autograd Jacobian| = {worst_exact:.2e}")
    print(f"10 random ReLU/max-pool networks: max |linearized - Jacobian without ReLUs| = {worst_lin:.2e}")
    for name, unit, source in CASES:
        kwargs = {} if name == "efficientnet_lite0" else {"pretrained": False}
        torch.manual_seed(0)
        m = visfeat.load_model(name, **kwargs)
        if name != "efficientnet_lite0":  # random BN scales: timm zero-initializes each block's last BN
            with torch.no_grad():
                for mod in m.module.modules():
                    if isinstance(mod, nn.BatchNorm2d):
                        mod.weight.normal_()
        t0 = time.perf_counter()
        c = contributors(m, unit, source, k=3)
        dt = time.perf_counter() - t0
        try:
            layer = "logits" if unit.startswith("logit:") else unit.split(":")[0]
            ch = m.labels.index("sports car") if unit.startswith("logit:") else int(unit.split(":")[1])
            expand(m, source, layer, channels=[ch], mode="exact")
            stop = "none (exact)"
        except NonlinearPathError as err:
            stop = str(err).split(":", 1)[1].split(" is not linear")[0].strip()
        print(
            f"{name:24s} {source} -> {unit}: kernel {tuple(c.weights.shape)}, {c.mode}, {len(c.linearized)} ops "
            f"replaced, {dt:.2f} s (with per-path weights); exact path stopped by: {stop}"
        )


if __name__ == "__main__":
    main()
