"""ViT units from their parsed parts (layer, head, dim, token selector): objectives, and checks against a model.

The unit-string grammar (``blocks.6.mlp.act:123@cls``, ``blocks.6.attn:h3.17@reg=0``) is read in
:mod:`visfeat.units`; this module takes what it parsed. Also a model's patch grid and token layouts.
"""

from __future__ import annotations

from torch import nn

from ..errors import UnitError
from . import objectives as V
from .tokens import TokenLayout, TokenSelector, infer_layout


def token_objective(layer: str, dim: int | None, head: int | None, tokens: TokenSelector) -> V.Objective:
    """The objective of a ViT unit: dim ``dim`` of ``layer`` at ``tokens``, or with ``head`` given, that head of
    the attention module ``layer`` (one of its dims, or the mean square of all of them when ``dim`` is None)."""
    if head is not None:
        return V.head(layer, head, dim, tokens)
    if dim is None:
        raise UnitError(f"{layer}: a token unit needs a dim or an attention head")
    return V.channel(layer, dim, tokens)


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


def check_token_unit(
    model, layer: str, dim: int | None, head: int | None, tokens: TokenSelector, name: str = ""
) -> None:
    """Check a ViT unit's layer, head, dim and token selector against ``model`` (errors give valid ranges);
    ``name`` (the unit as written) prefixes the messages."""
    name = name or layer
    if head is not None:
        mod = attention_module(model, layer)
        n = int(mod.num_heads)
        if not 0 <= head < n:
            raise UnitError(f"head {head} is out of range for {layer!r}, which has {n} heads (0..{n - 1})")
        hd = getattr(mod, "head_dim", None)
        if dim is not None and hd is not None and not 0 <= dim < hd:
            raise UnitError(f"dim {dim} is out of range for a head of {layer!r} ({hd} dims, 0..{hd - 1})")
        layout = layer_layout(model, f"{layer}.norm")
    else:
        info = model.layer(layer)
        if info.layout not in ("tokens", "CHW", "HWC"):
            raise UnitError(
                f"{name}: layer {layer!r} has output shape {info.shape}; token selectors need a token layer "
                "[B, tokens, dim] (e.g. blocks.6, blocks.6.mlp.act, blocks.6.attn)"
            )
        n = info.channels
        if n is not None and dim is not None and not 0 <= dim < n:
            raise UnitError(f"dim {dim} is out of range for layer {layer!r}, which has {n} (0..{n - 1})")
        layout = layer_layout(model, layer)
        if layout is None and info.shape:
            h, w = info.grid or info.shape[:2]
            layout = TokenLayout((h, w), cls=0)
    if layout is not None:
        tokens.indices(layout, layer)
