"""Token-aware objectives for ViT layers (``[B, T, D]``), attention heads and attention patterns.

Each returns a :class:`visfeat.objectives.Objective`, so they compose with the core ones and render
through :func:`visfeat.render`. ``tokens`` is a :class:`~visfeat.vit.tokens.TokenSelector` or its
string (``"cls"``, ``"mean"``, ``"patch=3,5"``, ``"reg=0"``); ``layout`` is inferred from the token
count unless given.

Heads are addressed on a timm-style attention module ``ATTN`` (``blocks.6.attn``): the per-head outputs
are read from ``ATTN.norm`` (the concatenated heads before the output projection; an identity in timm
ViTs) and queries/keys from ``ATTN.q_norm`` / ``ATTN.k_norm``. These hooks fire with fused attention
too, so the model needs no change. For another attention module pass ``heads_layer=`` and ``num_heads=``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import UnitError
from ..objectives import Acts, Objective, batch_suffix, layer_act, projection, restrict_to_image
from .tokens import MEAN, TokenLayout, TokenSelector, as_tokens, infer_layout, parse_selector

Tokens = TokenSelector | str


def _sel(tokens: Tokens) -> TokenSelector:
    return parse_selector(tokens)


def selected(acts: Acts, layer: str, tokens: Tokens, layout: TokenLayout | None = None) -> torch.Tensor:
    """The selected tokens of ``layer``: ``[B, n, D]``."""
    toks, lay = as_tokens(layer_act(acts, layer), layer, layout)
    return _sel(tokens).select(toks, lay, layer)


def _check_dim(n: int, layer: str, channel: int, what: str = "channels") -> None:
    if not 0 <= channel < n:
        raise UnitError(f"channel {channel} is out of range for layer {layer!r}, which has {n} {what} (0..{n - 1})")


def channel(
    layer: str,
    channel: int,
    tokens: Tokens = MEAN,
    layout: TokenLayout | None = None,
    batch: int | None = None,
    pre_layer: str | None = None,
    pre_weight: float = 0.1,
) -> Objective:
    """One dimension of a token layer, averaged over the selected tokens (``mean``: all patches).
    With one token (``cls``, ``patch=r,c``, ``reg=i``) this is a single neuron.

    ``pre_layer``: the layer feeding the activation (``blocks.6.mlp.fc1`` for ``blocks.6.mlp.act``).
    It adds ``pre_weight`` times the pre-activation as a gradient-only term (its value is zero, so the
    score is unchanged): GELU falls for inputs below -0.75, so a neuron that starts there is otherwise
    pushed further down and stays near zero."""
    sel = _sel(tokens)

    def fn(acts: Acts) -> torch.Tensor:
        x = selected(acts, layer, sel, layout)
        _check_dim(x.shape[-1], layer, channel)
        score = x[..., channel].mean(1)
        if pre_layer is not None:
            p = selected(acts, pre_layer, sel, layout)[..., channel].mean(1)
            score = score + pre_weight * (p - p.detach())
        return score

    name = f"token_channel({layer}:{channel}@{sel}){batch_suffix(batch)}"
    layers = frozenset([layer] + ([pre_layer] if pre_layer else []))
    return Objective(restrict_to_image(fn, batch), layers, name)


def neuron(
    layer: str, channel: int, tokens: Tokens = "cls", layout: TokenLayout | None = None, batch: int | None = None
) -> Objective:
    """One dimension at one token (the class token unless ``tokens`` says otherwise)."""
    return channel_objective(layer, channel, tokens, layout, batch)


channel_objective = channel


def direction(
    layer: str,
    vector: torch.Tensor | Sequence[float],
    tokens: Tokens = MEAN,
    cossim_pow: float = 0.0,
    layout: TokenLayout | None = None,
    batch: int | None = None,
) -> Objective:
    """Mean projection of the selected tokens onto ``vector`` (``cossim_pow`` as in the core ``direction``)."""
    sel = _sel(tokens)
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts: Acts) -> torch.Tensor:
        return projection(selected(acts, layer, sel, layout), vec, cossim_pow, layer)

    extra = f", cossim_pow={cossim_pow:g}" if cossim_pow else ""
    return Objective(
        restrict_to_image(fn, batch), frozenset([layer]), f"token_direction({layer}@{sel}{extra}){batch_suffix(batch)}"
    )


def diversity(layer: str, tokens: Tokens = MEAN, layout: TokenLayout | None = None) -> Objective:
    """Negative cosine similarity between the images' Gram matrices of the selected tokens (patch
    tokens by default: the class and register tokens would dominate the Gram matrix)."""
    sel = _sel(tokens)

    def fn(acts: Acts) -> torch.Tensor:
        v = selected(acts, layer, sel, layout)  # [B, n, D]
        b = v.shape[0]
        if b < 2:
            return v.new_zeros(b)
        gram = F.normalize((v.transpose(1, 2) @ v).flatten(1), dim=1)
        sim = gram @ gram.T
        return -(sim.sum(1) - sim.diagonal()) / (b - 1)

    return Objective(fn, frozenset([layer]), f"token_diversity({layer}@{sel})")


def _heads(acts: Acts, heads_layer: str, q_layer: str | None, num_heads: int | None) -> tuple[torch.Tensor, int]:
    out = layer_act(acts, heads_layer)
    if out.dim() != 3:
        raise UnitError(f"{heads_layer!r} should give the concatenated head outputs [B, T, D], got {tuple(out.shape)}")
    h = num_heads if num_heads is not None else layer_act(acts, q_layer).shape[1]
    if out.shape[-1] % h:
        raise UnitError(f"{heads_layer!r} has {out.shape[-1]} dims, not divisible into {h} heads")
    return out.unflatten(-1, (h, out.shape[-1] // h)), h  # [B, T, H, hd]


def _check_head(head: int, n: int, attn: str) -> None:
    if not 0 <= head < n:
        raise UnitError(f"head {head} is out of range for {attn!r}, which has {n} heads (0..{n - 1})")


def head(
    attn: str,
    head: int,
    channel: int | None = None,
    tokens: Tokens = MEAN,
    heads_layer: str | None = None,
    num_heads: int | None = None,
    layout: TokenLayout | None = None,
    batch: int | None = None,
) -> Objective:
    """Output of one attention head (before the output projection) over the selected tokens: one
    of its dimensions (``channel``), or its mean square (the whole head)."""
    sel = _sel(tokens)
    heads_layer = heads_layer or f"{attn}.norm"
    q_layer = None if num_heads is not None else f"{attn}.q_norm"

    def fn(acts: Acts) -> torch.Tensor:
        out, n = _heads(acts, heads_layer, q_layer, num_heads)
        _check_head(head, n, attn)
        x = out[:, :, head]  # [B, T, hd]
        x = sel.select(*as_tokens(x, heads_layer, layout), heads_layer)
        if channel is None:
            return x.pow(2).mean((1, 2))
        _check_dim(x.shape[-1], f"{attn} head {head}", channel, "dims")
        return x[..., channel].mean(1)

    layers = frozenset([heads_layer] + ([q_layer] if q_layer else []))
    what = f"h{head}" + ("" if channel is None else f".{channel}")
    return Objective(restrict_to_image(fn, batch), layers, f"head({attn}:{what}@{sel}){batch_suffix(batch)}")


def attention_map(acts: Acts, attn: str) -> torch.Tensor:
    """Attention probabilities ``[B, H, T, T]`` recomputed from the captured queries and keys."""
    q, k = layer_act(acts, f"{attn}.q_norm"), layer_act(acts, f"{attn}.k_norm")
    if q.dim() != 4:
        raise UnitError(f"{attn}.q_norm should give queries [B, heads, T, head_dim], got {tuple(q.shape)}")
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)


def attention(
    attn: str,
    head: int | None = None,
    query: Tokens = "cls",
    key: Tokens = MEAN,
    layout: TokenLayout | None = None,
    batch: int | None = None,
) -> Objective:
    """Attention from the ``query`` tokens to the ``key`` tokens (summed over keys, averaged over
    queries) in one head (``None``: mean over heads); e.g. CLS to a region: ``key="patch=0:4,0:4"``.
    Maximizing it draws the query's attention to that region."""
    qs, ks = _sel(query), _sel(key)
    layers = frozenset([f"{attn}.q_norm", f"{attn}.k_norm"])

    def fn(acts: Acts) -> torch.Tensor:
        a = attention_map(acts, attn)  # [B, H, T, T]
        if head is not None:
            _check_head(head, a.shape[1], attn)
        a = a.mean(1) if head is None else a[:, head]
        lay = layout if layout is not None else infer_layout(a.shape[-1])
        qi = torch.tensor(qs.indices(lay, attn), device=a.device)
        ki = torch.tensor(ks.indices(lay, attn), device=a.device)
        return a[:, qi][:, :, ki].sum(-1).mean(1)

    what = "mean heads" if head is None else f"h{head}"
    return Objective(restrict_to_image(fn, batch), layers, f"attention({attn}:{what}@{qs}->{ks}){batch_suffix(batch)}")
