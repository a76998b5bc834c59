"""Contributors of a unit: the upstream channels (or SAE latents) with the largest positive and negative weights.

A channel's excitation is the sum of the positive taps of its expanded kernel, its inhibition the sum
of the negative taps, so a channel that excites at the top and inhibits at the bottom (a window for a
car detector) appears in both lists. SAE latents take part through :class:`Latents`: an encoder
direction per latent (the latent as a target) and a decoder direction (the latent as a source).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import CircuitError, UnitError
from ..hooks import LOGITS
from .expand import Expanded, expand

#: Default threshold of :meth:`Expanded.cancellation` below which an edge is flagged.
CANCELLATION = 0.25


@dataclass
class Latents:
    """SAE latents of one layer as endpoints: ``encoder[j]`` reads latent j, ``decoder[j]`` writes it (``[n, d]``)."""

    layer: str
    encoder: torch.Tensor
    decoder: torch.Tensor
    name: str = "sae"

    @classmethod
    def from_sae(cls, sae, layer: str | None = None, name: str = "sae") -> Latents:
        """Directions of a visfeat SAE in the layer's own units (its input scale folded in)."""
        scale = float(getattr(sae, "scale", torch.tensor(1.0)))
        enc = sae.W_enc.detach().T * scale  # latent pre-activation = enc . x + const
        dec = sae.W_dec.detach() / scale  # reconstruction = sum_j z_j dec_j + const
        layer = layer or getattr(getattr(sae, "config", None), "layer", "")
        if not layer:
            raise CircuitError("the SAE does not record its layer; pass layer='...'")
        return cls(layer, enc.float(), dec.float(), name)


@dataclass
class Contributor:
    """One upstream channel (or latent) of a unit: its kernel and its summed excitation and inhibition."""

    index: int
    kernel: torch.Tensor  # [kh, kw]
    excite: float  # sum of the positive taps
    inhibit: float  # sum of the negative taps (<= 0)
    cancellation: float | None = None  # |W| / sum of per-path |W|, None when not computed

    @property
    def total(self) -> float:
        return self.excite + self.inhibit


@dataclass
class Contributors:
    """The top contributors of one target unit from one source layer."""

    target: str
    source: str
    mode: str
    linearized: list[str]
    excite: list[Contributor]
    inhibit: list[Contributor]
    warnings: list[str] = field(default_factory=list)
    weights: torch.Tensor | None = None  # the unit's full expanded weights [in, kh, kw]

    def channels(self) -> list[int]:
        """The contributing indices, excitatory first, without repeats."""
        return list(dict.fromkeys([c.index for c in self.excite] + [c.index for c in self.inhibit]))


def _rank(w: torch.Tensor, k: int, ratio: torch.Tensor | None) -> tuple[list[Contributor], list[Contributor]]:
    pos = w.clamp_min(0).flatten(1).sum(1)
    neg = w.clamp_max(0).flatten(1).sum(1)

    def make(i: int) -> Contributor:
        r = None if ratio is None else float(ratio[i])
        return Contributor(i, w[i], float(pos[i]), float(neg[i]), r)

    k = min(k, len(w))
    excite = [make(int(i)) for i in pos.topk(k).indices if pos[i] > 0]
    inhibit = [make(int(i)) for i in (-neg).topk(k).indices if neg[i] < 0]
    return excite, inhibit


def unit_weights(
    model,
    unit: str,
    source: str,
    mode: str = "auto",
    per_path: bool = True,
    latents: Latents | None = None,
) -> Expanded:
    """Expanded weights of one target unit: ``"layer:channel"``, ``"logit:CLASS"`` or SAE latent ``"layer/NAME:j"``."""
    from ..units import parse_unit

    if "/" in unit.split(":", 1)[0]:
        if latents is None:
            raise UnitError(f"{unit} names an SAE latent; pass latents=Latents.from_sae(sae)")
        layer, rest = unit.split("/", 1)
        j = int(rest.split(":", 1)[1])
        if not 0 <= j < len(latents.encoder):
            raise UnitError(f"latent {j} is out of range; the SAE has {len(latents.encoder)} latents")
        return _per_path_fallback(model, source, layer, None, latents.encoder[j : j + 1], mode, per_path)
    u = parse_unit(unit)
    if u.is_logit:
        index = u.index
        if isinstance(index, str):
            from ..imagenet import class_index

            index = class_index(index, getattr(model, "labels", None))
        return _per_path_fallback(model, source, LOGITS, [index], None, mode, per_path)
    if not isinstance(u.index, int):
        raise UnitError(f"{unit}: the channel must be a whole number")
    return _per_path_fallback(model, source, u.layer, [u.index], None, mode, per_path)


def _per_path_fallback(model, source, target, channels, directions, mode, per_path) -> Expanded:
    try:
        return expand(model, source, target, channels=channels, directions=directions, mode=mode, per_path=per_path)
    except CircuitError as e:
        if not per_path or "paths between the layers" not in str(e):
            raise
        return expand(model, source, target, channels=channels, directions=directions, mode=mode)


def contributors(
    model,
    unit: str,
    source: str,
    k: int = 5,
    mode: str = "auto",
    latents: Latents | None = None,
    source_latents: Latents | None = None,
    threshold: float = CANCELLATION,
) -> Contributors:
    """Top-``k`` upstream channels of ``unit`` in layer ``source`` by positive and by negative weight.

    With ``source_latents`` the upstream endpoints are SAE latents of ``source`` (weights projected on
    their decoder directions). Edges whose expanded weight is below ``threshold`` times the sum of
    their per-path norms get a cancellation warning.
    """
    e = unit_weights(model, unit, source, mode, per_path=True, latents=latents)
    w = e.weights[0]
    ratio = e.cancellation()[0] if e.path_weights is not None else None
    if source_latents is not None:
        if source_latents.layer != source:
            raise CircuitError(f"the source latents belong to {source_latents.layer!r}, not {source!r}")
        w = torch.einsum("ikl,ji->jkl", w, source_latents.decoder.to(w))
        if e.path_weights is not None:
            pw = torch.einsum("pikl,ji->pjkl", e.path_weights[:, 0], source_latents.decoder.to(w))
            parts = pw.flatten(2).norm(dim=2).sum(0)
            ratio = torch.where(parts > 0, w.flatten(1).norm(dim=1) / parts.clamp_min(1e-30), torch.ones_like(parts))
    excite, inhibit = _rank(w, k, ratio)
    warnings = []
    for c in {c.index: c for c in excite + inhibit}.values():
        if c.cancellation is not None and c.cancellation < threshold:
            warnings.append(
                f"{source}:{c.index} -> {unit}: the paths cancel (expanded weight is {c.cancellation:.2f} of the "
                f"sum of its {len(e.paths)} per-path norms); the net weight hides larger opposing paths"
            )
    return Contributors(unit, source, e.mode, e.linearized, excite, inhibit, warnings, w)
