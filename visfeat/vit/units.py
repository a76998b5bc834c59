"""ViT unit strings: token selectors and attention heads, turned into objectives and checked against a model.

``blocks.6.mlp.act:123@cls``   MLP neuron 123 at the class token
``blocks.6:40@patch=3,5``      residual-stream dim 40 at patch row 3, column 5
``blocks.6.mlp.act:123@mean``  mean over all patch tokens (also the default of a head unit)
``blocks.6.attn:h3@cls``       head 3's output at the class token (mean square over its dims)
``blocks.6.attn:h3.17@reg=0``  dim 17 of head 3's output at register token 0
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import UnitError
from . import objectives as V
from .tokens import MEAN, TokenLayout, infer_layout, parse_selector

_HEAD = re.compile(r"^h(?P<head>\d+)(?:\.(?P<dim>\d+))?$")


def token_objective(unit) -> V.Objective:
    """The objective of a ViT :class:`~visfeat.units.Unit` (token selector and/or head index)."""
    sel = parse_selector(unit.at) if unit.at else MEAN
    head = _HEAD.match(str(unit.index))
    if head:
        dim = int(head["dim"]) if head["dim"] is not None else None
        return V.head(unit.layer, int(head["head"]), dim, sel)
    if not isinstance(unit.index, int):
        raise UnitError(f"{unit}: the index must be a whole number (a dim) or hHEAD[.DIM] for an attention head")
    return V.channel(unit.layer, unit.index, sel)


def attention_module(model, name: str) -> nn.Module:
    """The attention module ``name`` of ``model``, checked to be timm-style (``num_heads``, ``norm``, ``q_norm``)."""
    mods = dict(model.module.named_modules())
    model.layer(name)  # unknown names list the closest ones
    mod = mods[name]
    if not all(hasattr(mod, a) for a in ("num_heads", "norm", "q_norm")):
        raise UnitError(
            f"{name!r} ({type(mod).__name__}) is not a timm-style attention module with num_heads, norm and "
            "q_norm; address heads on the '.attn' module of a timm ViT block (blocks.6.attn), or use "
            "visfeat.vit.head(attn, head, heads_layer=..., num_heads=...) for your own module"
        )
    return mod


def layer_layout(model, layer: str) -> TokenLayout | None:
    """Token layout of ``layer`` at the model's input size (None for non-token layers)."""
    info = model.layer(layer)
    if info.layout != "tokens" or not info.shape:
        return None
    return infer_layout(info.shape[0], model_grid(model))


def model_grid(model) -> tuple[int, int] | None:
    """The patch grid at the model's input size, from a timm-style ``patch_embed`` (None if unknown)."""
    pe = getattr(model.module, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None or model.spec.size is None:
        return None
    ps = (ps, ps) if isinstance(ps, int) else tuple(ps)
    return model.spec.size[0] // ps[0], model.spec.size[1] // ps[1]


def validate_token_unit(unit, model) -> None:
    """Check a ViT unit's layer, head, dim and token selector against ``model`` (errors give valid ranges)."""
    sel = parse_selector(unit.at) if unit.at else MEAN
    head = _HEAD.match(str(unit.index))
    if head:
        mod = attention_module(model, unit.layer)
        n = int(mod.num_heads)
        h = int(head["head"])
        if not 0 <= h < n:
            raise UnitError(f"head {h} is out of range for {unit.layer!r}, which has {n} heads (0..{n - 1})")
        hd = getattr(mod, "head_dim", None)
        if head["dim"] is not None and hd is not None and not 0 <= int(head["dim"]) < hd:
            raise UnitError(f"dim {head['dim']} is out of range for a head of {unit.layer!r} ({hd} dims, 0..{hd - 1})")
        layout = layer_layout(model, f"{unit.layer}.norm")
    else:
        info = model.layer(unit.layer)
        if info.layout not in ("tokens", "CHW", "HWC"):
            raise UnitError(
                f"{unit}: layer {unit.layer!r} has output shape {info.shape}; token selectors need a token layer "
                "[B, tokens, dim] (e.g. blocks.6, blocks.6.mlp.act, blocks.6.attn)"
            )
        n = info.channels
        if n is not None and isinstance(unit.index, int) and not 0 <= unit.index < n:
            raise UnitError(f"dim {unit.index} is out of range for layer {unit.layer!r}, which has {n} (0..{n - 1})")
        layout = layer_layout(model, unit.layer)
        if layout is None and info.shape:
            h, w = info.shape[1:] if info.layout == "CHW" else info.shape[:2]
            layout = TokenLayout((h, w), cls=0)
    if layout is not None:
        sel.indices(layout, unit.layer)
