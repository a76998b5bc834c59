"""hooks: capture records outputs, never leaves hooks behind, and stops the forward pass early."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visfeat import hooks
from visfeat.errors import UnknownLayerError
from visfeat.models import InputSpec, Model


class Counting(nn.Module):
    """Identity that counts how often it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail:
            raise RuntimeError("boom")
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Counting())
        self.b = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), Counting())
        self.c = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), Counting())
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(self.b(self.a(x)))
        return self.head(x.mean((2, 3)))


def _counts(net: Net) -> tuple[int, int, int]:
    return net.a[1].calls, net.b[1].calls, net.c[1].calls


def _all_hooks(net: nn.Module) -> list:
    return [h for m in net.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


def test_capture_records_the_outputs():
    net = Net().eval()
    x = torch.rand(2, 3, 16, 16)
    with hooks.capture(net, ["a", "b.0", "logits"], stop_early=False) as acts:
        out = net(x)
    torch.testing.assert_close(acts["a"], net.a(x))
    torch.testing.assert_close(acts["b.0"], net.b[0](net.a(x)))
    assert acts["b.0"].shape == (2, 6, 8, 8)
    assert acts["logits"] is out
    assert _all_hooks(net) == []


def test_activations_helper_and_logits_submodule():
    net = Net().eval()
    x = torch.rand(1, 3, 16, 16)
    acts = hooks.activations(net, x, ["c", "logits"], logits="head")
    torch.testing.assert_close(acts["logits"], net(x))
    assert acts["c"].shape == (1, 8, 4, 4)


def test_unknown_layer_lists_close_names():
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'b\.9'; closest: .*b\.0"):
        hooks.resolve(Net(), ["b.9"])
    with pytest.raises(UnknownLayerError, match="unknown layer ''"):
        hooks.resolve(Net(), [""])


def test_layer_that_never_runs_is_reported():
    net = Net()
    net.unused = nn.ReLU()
    with pytest.raises(UnknownLayerError, match="produced no output"):
        hooks.activations(net, torch.rand(1, 3, 8, 8), ["unused"])


def test_hooks_removed_after_a_normal_run():
    net = Net()
    with hooks.capture(net, ["a", "b", "c", "logits"]) as acts:
        assert len(_all_hooks(net)) == 4  # they are there while the block runs
        hooks.run(net, torch.rand(1, 3, 8, 8))
    assert set(acts) == {"a", "b", "c", "logits"}
    assert _all_hooks(net) == []


def test_hooks_removed_when_the_forward_raises():
    net = Net()
    x = torch.rand(1, 3, 8, 8)
    net.b[1].fail = True
    with pytest.raises(RuntimeError, match="boom"), hooks.capture(net, ["a", "c"]) as acts:
        hooks.run(net, x)  # run() swallows only the internal early stop, not real errors
    assert set(acts) == {"a"}
    assert _all_hooks(net) == []


def test_hooks_removed_when_the_block_raises():
    net = Net()
    with pytest.raises(ValueError, match="in the block"), hooks.capture(net, ["a", "b"]):
        raise ValueError("in the block")
    assert _all_hooks(net) == []


def test_hooks_removed_when_a_hook_raises():
    net = Net()

    class Bad(nn.Module):
        def forward(self, x):
            return x

    net.a.append(Bad())
    user = net.a[2].register_forward_hook(lambda *_: 1 / 0)  # a hook that raises, next to ours on a.2
    with pytest.raises(ZeroDivisionError), hooks.capture(net, ["a.2", "b"]):
        hooks.run(net, torch.rand(1, 3, 8, 8))
    user.remove()
    assert _all_hooks(net) == []


def test_replace_hook_removed_when_fn_raises():
    net = Net()
    with pytest.raises(ZeroDivisionError), hooks.replace(net, "b", lambda out: 1 / 0):
        net(torch.rand(1, 3, 8, 8))
    assert _all_hooks(net) == []
    with hooks.replace(net, "head", lambda out: out * 0):
        assert net(torch.rand(1, 3, 8, 8)).abs().max() == 0
    assert _all_hooks(net) == []
    assert net(torch.rand(1, 3, 8, 8)).abs().max() > 0


def test_early_stop_never_runs_deeper_layers():
    net = Net()
    x = torch.rand(1, 3, 8, 8)
    acts = hooks.activations(net, x, ["a"])
    assert _counts(net) == (1, 0, 0)
    assert set(acts) == {"a"}
    # the deepest requested layer decides, whatever the order of the request
    acts = hooks.activations(net, x, ["b", "a.0"])
    assert _counts(net) == (2, 1, 0)
    assert set(acts) == {"a.0", "b"}
    assert _all_hooks(net) == []


def test_without_early_stop_everything_runs():
    net = Net()
    acts = hooks.activations(net, torch.rand(1, 3, 8, 8), ["a"], stop_early=False)
    assert _counts(net) == (1, 1, 1) and set(acts) == {"a"}


def test_model_activations_stop_early_and_backpropagate():
    net = Net()
    m = Model(net, InputSpec(size=(8, 8), value_range=(-1.0, 1.0)))
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    acts = m.activations(x, ["b"])
    assert _counts(net) == (1, 1, 0)
    acts["b"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert _all_hooks(net) == []
