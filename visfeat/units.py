"""Unit strings: one grammar for naming a unit everywhere (CLI, Python, file names).

layer:channel            blocks.4:12         mean of channel 12 over positions
layer:channel@y,x        blocks.4:12@3,5     one spatial position (neuron)
logit:class              logit:967, logit:espresso, logit:sports_car

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

_UNIT = re.compile(r"^(?P<layer>[^:@\s]+):(?P<index>[^@\s]+)(?:@(?P<at>\S+))?$")
_POS = re.compile(r"^(?P<y>\d+),(?P<x>\d+)$")
_HEAD = re.compile(r"^h(?P<head>\d+)(?:\.(?P<dim>\d+))?$")


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

    def objective(self) -> O.Objective:
        """The objective that maximizes this unit."""
        if self.is_logit:
            if self.at:
                raise UnitError(f"{self}: a class logit takes no '@' position")
            return O.class_logit(self.index)
        if is_token_unit(self):
            from .vit.units import token_objective

            return token_objective(self)
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
            from .vit.units import validate_token_unit

            validate_token_unit(self, model)
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
    from .vit.tokens import is_token_selector

    return is_token_selector(unit.at) or bool(_HEAD.match(str(unit.index)))


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
