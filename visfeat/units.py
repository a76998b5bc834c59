"""Unit strings: one grammar for naming a unit everywhere (CLI, Python, file names).

layer:channel            blocks.4:12         mean of channel 12 over positions
layer:channel@y,x        blocks.4:12@3,5     one spatial position (neuron)
logit:class              logit:967, logit:espresso, logit:sports_car

Several units at once (:func:`parse_units`): an inclusive range, a list, or every channel of the layer:
blocks.4:0-15            blocks.4:1,3,7-9         blocks.4:all (needs the model)    blocks.4:0-7@center

ViT token layers ([B, tokens, dim]; see visfeat.vit):
layer:dim@cls            blocks.6.mlp.act:123@cls      class token (also @mean, @patch=r,c, @patch=r0:r1,c0:c1, @reg=i)
attn:hHEAD[.dim]@tokens  blocks.6.attn:h3@cls          one attention head (mean square, or one of its dims)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import objectives as O
from .errors import UnitError
from .hooks import LOGITS
from .preact import preactivation_layer
from .vit.tokens import MEAN, TokenSelector, is_token_selector, parse_selector
from .vit.units import check_token_unit, token_objective

_UNIT = re.compile(r"^(?P<layer>[^:@\s]+):(?P<index>[^@\s]+)(?:@(?P<at>\S+))?$")
_POS = re.compile(r"^(?P<y>\d+),(?P<x>\d+)$")
_HEAD = re.compile(r"^h(?P<head>\d+)(?:\.(?P<dim>\d+))?$")
_INDEX_LIST = re.compile(r"^\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*$")
ALL = "all"


@dataclass(frozen=True)
class Unit:
    """A parsed unit string."""

    layer: str
    index: int | str
    at: str | None = None

    def __str__(self) -> str:
        return f"{self.layer}:{self.index}" + (f"@{self.at}" if self.at else "")

    @property
    def is_logit(self) -> bool:
        return self.layer in ("logit", LOGITS)

    def objective(self, model=None, preact: bool = True) -> O.Objective:
        """The objective that maximizes this unit; given ``model`` (and ``preact``), read before the ReLU-like
        op that ends the layer when there is one (:mod:`visfeat.preact`), so a unit that starts dead still moves."""
        plain = self._objective()
        if model is None or not preact:
            return plain
        pre = preact_objective(model, self)
        return plain if pre is None else pre

    def _objective(self) -> O.Objective:
        """The objective on the unit's own layer."""
        if self.is_logit:
            if self.at:
                raise UnitError(f"{self}: a class logit takes no '@' position")
            return O.class_logit(self.index)
        if is_token_unit(self):
            return token_objective(self.layer, *_token_parts(self))
        if not isinstance(self.index, int):
            raise UnitError(f"{self}: the channel must be a whole number, e.g. {self.layer}:12")
        if self.at is None:
            return O.channel(self.layer, self.index)
        pos = _POS.match(self.at)
        if pos:
            return O.neuron(self.layer, self.index, int(pos["y"]), int(pos["x"]))
        if self.at == "center":
            return O.neuron(self.layer, self.index)
        raise UnitError(f"{self}: unknown position {self.at!r}; use @y,x (e.g. @3,5) or @center")

    def validate(self, model) -> None:
        """Check the layer and channel against ``model``'s catalogue (errors name the valid range)."""
        if self.is_logit:
            if isinstance(self.index, str):
                from .imagenet import class_index

                class_index(self.index, model.labels)
            return
        if is_token_unit(self):
            check_token_unit(model, self.layer, *_token_parts(self), name=str(self))
            return
        info = model.layer(self.layer)
        n = info.channels
        if n is not None and isinstance(self.index, int) and not 0 <= self.index < n:
            raise UnitError(
                f"channel {self.index} is out of range for layer {self.layer!r}, which has {n} channels (0..{n - 1})"
            )

    def filename(self) -> str:
        """A file-system-safe stem, e.g. ``blocks.4_12``."""
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", str(self).replace(":", "_").replace("@", "_at_"))


def is_token_unit(unit: Unit) -> bool:
    """A ViT unit: a token selector after ``@`` or an attention head ``h3`` / ``h3.17`` as the index."""
    return is_token_selector(unit.at) or bool(_HEAD.match(str(unit.index)))


def _token_parts(unit: Unit) -> tuple[int | None, int | None, TokenSelector]:
    """A ViT unit's dim, head and token selector (default: the mean over patches): ``h3.17@cls`` -> 17, 3, cls."""
    tokens = parse_selector(unit.at) if unit.at else MEAN
    head = _HEAD.match(str(unit.index))
    if head:
        return (int(head["dim"]) if head["dim"] is not None else None), int(head["head"]), tokens
    if not isinstance(unit.index, int):
        raise UnitError(f"{unit}: the index must be a whole number (a dim) or hHEAD[.DIM] for an attention head")
    return unit.index, None, tokens


def preact_objective(model, unit: Unit) -> O.Objective | None:
    """``unit``'s objective read on its pre-activation (same channel, position or tokens; sign-corrected through
    a fused BatchNorm), or None when its layer does not end in a ReLU-like op whose input is a named layer (or
    the model cannot be traced): see :mod:`visfeat.preact`."""
    if unit.is_logit or not isinstance(unit.index, int) or "/" in unit.layer:
        return None  # class logits, attention heads and SAE latents have no activation to skip
    found = preactivation_layer(model, unit.layer, unit.index)
    if found is None:
        return None
    layer, sign = found
    pre = Unit(layer, unit.index, unit.at).objective()
    pre = pre if sign > 0 else -pre
    return O.Objective(pre.fn, pre.layers, f"{pre.name}[preact of {unit}]")


def as_objective(obj: O.Objective | str) -> O.Objective:
    """Accept an :class:`~visfeat.objectives.Objective` or a unit string such as ``"blocks.4:12"``."""
    if isinstance(obj, O.Objective):
        return obj
    if isinstance(obj, str):
        return parse_unit(obj).objective()
    raise TypeError(f"expected an Objective or a unit string like 'blocks.4:12', got {type(obj).__name__}")


def parse_unit(text: str) -> Unit:
    """Parse ``"layer:channel[@where]"`` (see the module docstring)."""
    m = _UNIT.match(text.strip())
    if not m:
        raise UnitError(
            f"cannot parse unit {text!r}; expected layer:channel (blocks.4:12), layer:channel@y,x, "
            "or logit:CLASS (logit:967, logit:espresso)"
        )
    index: int | str = m["index"]
    if index.isdigit():
        index = int(index)
    return Unit(m["layer"], index, m["at"])


def parse_units(text: str, model=None) -> list[Unit]:
    """Parse one unit string that may name several units: ``blocks.4:0-15`` (inclusive), ``blocks.4:1,3,7-9``,
    ``blocks.4:all`` (every channel; needs ``model``) or any single unit. With ``model`` every unit is validated."""
    unit = parse_unit(text)
    index = unit.index
    if isinstance(index, str) and (index == ALL or _INDEX_LIST.match(index) or _looks_like_list(unit)):
        n = None if model is None else _channels(model, unit)
        if index == ALL and n is None:
            raise UnitError(
                f"{text}: '{ALL}' means every channel of {unit.layer!r}, which needs the model (pass model=) and a "
                f"layer with a channel count; or list the channels, e.g. {unit.layer}:0-15"
            )
        of = "classes" if unit.is_logit else f"channels in layer {unit.layer!r}"
        try:
            indices = parse_index_list(index, n, of)
        except UnitError as e:
            raise UnitError(f"{text}: {e}") from None
        units = [Unit(unit.layer, i, unit.at) for i in indices]
    else:
        units = [unit]
    if model is not None:
        for u in units:
            u.validate(model)
    return units


def parse_index_list(text: str, n: int | None = None, of: str = "units") -> list[int]:
    """``'0-3,7'`` -> ``[0, 1, 2, 3, 7]`` (ranges inclusive), ``'all'`` -> ``0..n-1``; checked against ``n`` when
    given (errors name the valid range). The one range grammar of unit strings and of the CLI's unit options."""
    text = re.sub(r"\s+", "", text)
    if text == ALL:
        if n is None:
            raise UnitError(f"'{ALL}' needs the number of {of}; list them instead, e.g. '0-15'")
        return list(range(n))
    if not _INDEX_LIST.match(text):
        raise UnitError(f"cannot parse units {text!r}; expected e.g. '0-15', '3,7,9', '1,3,7-9' or '{ALL}'")
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if hi < lo:
            raise UnitError(f"range {part!r} in {text!r} runs backwards; write it low-high: '{hi}-{lo}'")
        out += range(lo, hi + 1)
    bad = [i for i in out if n is not None and not 0 <= i < n]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise UnitError(f"out of range: {shown}; there are {n} {of} (0..{n - 1})")
    return out


def _channels(model, unit: Unit) -> int | None:
    """The number of channels (dims, classes) of ``unit``'s layer in ``model``'s catalogue."""
    return model.layer(LOGITS if unit.is_logit else unit.layer).channels


def _looks_like_list(unit: Unit) -> bool:
    """An index that tries to be a list or range (a comma, or a dash outside a class name) but is malformed."""
    index = str(unit.index)
    return "," in index or ("-" in index and not unit.is_logit)
