"""Capture named module outputs during a forward pass, and stop the pass once all are captured.

Hooks live only inside the :func:`capture` context manager and are removed in ``finally``,
also when the forward pass or a hook raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

import torch
from torch import nn

from .errors import UnknownLayerError, unknown

#: Pseudo layer name for the model's final output (the class logits of a classifier).
LOGITS = "logits"


class _StopForward(Exception):
    """Raised from a hook once every requested layer has been captured."""


def resolve(module: nn.Module, layers: Iterable[str], logits: str = "") -> dict[str, nn.Module]:
    """Map layer names to submodules; ``"logits"`` is the submodule named ``logits`` (root if "")."""
    named = dict(module.named_modules())
    out = {}
    for name in layers:
        if name == LOGITS:
            out[name] = named[logits]
        elif name in named and name != "":
            out[name] = named[name]
        else:
            raise UnknownLayerError(unknown("layer", name, [n for n in named if n] + [LOGITS]))
    return out


@contextmanager
def capture(
    module: nn.Module, layers: Iterable[str], stop_early: bool = True, logits: str = "", copy: bool = False
) -> Iterator[dict]:
    """Record the outputs of ``layers`` into the yielded dict while the block runs.

    With ``stop_early`` the forward pass is aborted right after the last requested layer has
    produced its output, so layers deeper than the objective needs cost nothing; call the model
    through :func:`run` to swallow that abort. With ``copy`` each output is cloned when recorded, so
    in-place ops later in the pass (``ReLU(inplace=True)``, ``+=``) cannot change an earlier layer's record.
    """
    targets = resolve(module, layers, logits)
    acts: dict[str, torch.Tensor] = {}
    remaining = set(targets)
    handles = []

    def make_hook(name: str):
        def hook(_mod, _inp, out):
            acts[name] = out.clone() if copy and torch.is_tensor(out) else out
            remaining.discard(name)
            if stop_early and not remaining:
                raise _StopForward

        return hook

    try:
        for name, mod in targets.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        yield acts
    finally:
        for h in handles:
            h.remove()


def run(module: nn.Module, x: torch.Tensor) -> None:
    """Call ``module`` on ``x``, treating an early stop from :func:`capture` as success."""
    with suppress(_StopForward):
        module(x)


def activations(
    module: nn.Module,
    x: torch.Tensor,
    layers: Iterable[str],
    stop_early: bool = True,
    logits: str = "",
    copy: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for input ``x`` (already preprocessed for the model); ``copy``: see :func:`capture`."""
    layers = list(layers)
    with capture(module, layers, stop_early=stop_early, logits=logits, copy=copy) as acts:
        run(module, x)
    missing = [n for n in layers if n not in acts]
    if missing:
        raise UnknownLayerError(
            f"layers {missing} exist but produced no output in the forward pass; "
            "pick layers the model's forward() actually calls"
        )
    return acts


@contextmanager
def replace(module: nn.Module, layer: str, fn, logits: str = "") -> Iterator[None]:
    """While the block runs, ``layer``'s output is replaced by ``fn(output)`` (e.g. an SAE reconstruction).

    The hook is removed in ``finally``, also when the forward pass or ``fn`` raises.
    """
    target = resolve(module, [layer], logits)[layer]
    handle = target.register_forward_hook(lambda _mod, _inp, out: fn(out))
    try:
        yield
    finally:
        handle.remove()
