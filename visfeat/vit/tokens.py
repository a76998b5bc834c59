"""Token layouts and token selectors for layers that output ``[batch, tokens, dim]``.

A ViT layer holds ``prefix`` tokens (class token first, then register tokens, as timm orders them)
followed by the patch grid in row-major order. A :class:`TokenSelector` picks tokens from it:

``cls``               the class token
``mean``              the mean over all patch tokens
``patch=r,c``         one patch by row and column (``patch=r0:r1,c0:c1``: mean over a block of patches)
``reg=i``             register token ``i``

Spatial layers ``[B, C, H, W]`` (CNN) and ``[B, H, W, C]`` (Swin) are read as patch grids without prefix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import UnitError

#: Most prefix (class + register) tokens that layout inference considers.
MAX_PREFIX = 8

_SELECTOR = re.compile(
    r"^(?:(?P<simple>cls|mean)|reg=(?P<reg>\d+)|patch=(?P<r0>\d+)(?::(?P<r1>\d+))?,(?P<c0>\d+)(?::(?P<c1>\d+))?)$"
)


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of a ``[B, T, D]`` activation come from."""

    grid: tuple[int, int]  # patch rows, patch columns
    cls: int = 1  # class tokens at the front (0 or 1)
    registers: int = 0  # register tokens after the class token

    @property
    def prefix(self) -> int:
        return self.cls + self.registers

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def __str__(self) -> str:
        parts = (["cls"] if self.cls else []) + ([f"{self.registers} reg"] if self.registers else [])
        return " + ".join(parts + [f"{self.grid[0]}x{self.grid[1]} patches"])


def infer_layout(num_tokens: int, grid: tuple[int, int] | None = None) -> TokenLayout:
    """The layout of ``num_tokens`` tokens: ``grid`` when known, else the largest square patch grid
    leaving at most :data:`MAX_PREFIX` prefix tokens (unambiguous for grids of 4x4 and more)."""
    if grid is not None:
        prefix = num_tokens - grid[0] * grid[1]
        if 0 <= prefix <= MAX_PREFIX:
            return TokenLayout(tuple(grid), cls=min(prefix, 1), registers=max(prefix - 1, 0))
    for prefix in range(min(MAX_PREFIX, num_tokens - 1) + 1):
        side = math.isqrt(num_tokens - prefix)
        if side * side == num_tokens - prefix and side > 0:
            return TokenLayout((side, side), cls=min(prefix, 1), registers=max(prefix - 1, 0))
    raise UnitError(
        f"cannot tell the patch grid of a layer with {num_tokens} tokens (not a square grid plus at most "
        f"{MAX_PREFIX} class/register tokens); pass layout=TokenLayout(grid=(rows, cols), cls=..., registers=...)"
    )


def is_channels_last(act: torch.Tensor) -> bool:
    """A 4-D activation ``[B, H, W, C]`` (Swin) rather than ``[B, C, H, W]``: its two leading
    spatial sizes agree and differ from the last one."""
    return act.dim() == 4 and act.shape[1] == act.shape[2] and act.shape[3] != act.shape[1]


def as_tokens(act: torch.Tensor, layer: str, layout: TokenLayout | None = None) -> tuple[torch.Tensor, TokenLayout]:
    """An activation as ``[B, T, D]`` tokens with its layout (spatial maps become patch-only grids)."""
    if isinstance(act, (tuple, list)):
        act = act[0]
    if act.dim() == 4:
        grid_act = act if is_channels_last(act) else act.permute(0, 2, 3, 1)
        b, h, w, d = grid_act.shape
        return grid_act.reshape(b, h * w, d), TokenLayout((h, w), cls=0)
    if act.dim() != 3:
        raise UnitError(
            f"layer {layer!r} has output shape {tuple(act.shape)}; token selectors need [B, tokens, dim] "
            "(or a spatial [B, C, H, W] / [B, H, W, C] map)"
        )
    lay = layout if layout is not None else infer_layout(act.shape[1])
    if lay.num_tokens != act.shape[1]:
        raise UnitError(f"layer {layer!r} has {act.shape[1]} tokens but the layout ({lay}) has {lay.num_tokens}")
    return act, lay


@dataclass(frozen=True)
class TokenSelector:
    """Which tokens a unit reads: ``cls``, ``mean`` (patches), ``patch`` (rows r0:r1, cols c0:c1) or ``reg``."""

    kind: str
    rows: tuple[int, int] = (0, 0)  # half-open range for kind == "patch"
    cols: tuple[int, int] = (0, 0)
    index: int = 0  # register index for kind == "reg"

    def __post_init__(self) -> None:
        if self.kind not in ("cls", "mean", "patch", "reg"):
            raise UnitError(f"unknown token selector kind {self.kind!r}; use cls, mean, patch or reg")
        if self.kind == "patch" and (self.rows[1] <= self.rows[0] or self.cols[1] <= self.cols[0]):
            raise UnitError(
                f"empty patch range rows {self.rows}, cols {self.cols}; write patch=r,c or patch=r0:r1,c0:c1"
            )

    def __str__(self) -> str:
        if self.kind == "patch":
            r = str(self.rows[0]) if self.rows[1] == self.rows[0] + 1 else f"{self.rows[0]}:{self.rows[1]}"
            c = str(self.cols[0]) if self.cols[1] == self.cols[0] + 1 else f"{self.cols[0]}:{self.cols[1]}"
            return f"patch={r},{c}"
        return f"reg={self.index}" if self.kind == "reg" else self.kind

    def indices(self, layout: TokenLayout, layer: str = "") -> list[int]:
        """Token positions selected in a layer of ``layout``; out-of-range selections raise UnitError."""
        where = f" of layer {layer!r}" if layer else ""
        if self.kind == "cls":
            if not layout.cls:
                raise UnitError(f"@cls: the tokens{where} have no class token ({layout}); use @mean or @patch=r,c")
            return [0]
        if self.kind == "reg":
            if not 0 <= self.index < layout.registers:
                have = f"registers 0..{layout.registers - 1}" if layout.registers else "no register tokens"
                raise UnitError(f"@reg={self.index} is out of range: the tokens{where} have {have} ({layout})")
            return [layout.cls + self.index]
        gh, gw = layout.grid
        if self.kind == "mean":
            return list(range(layout.prefix, layout.prefix + gh * gw))
        if self.rows[1] > gh or self.cols[1] > gw:
            raise UnitError(
                f"@{self} is outside the {gh}x{gw} patch grid{where} (rows 0..{gh - 1}, columns 0..{gw - 1})"
            )
        return [layout.prefix + r * gw + c for r in range(*self.rows) for c in range(*self.cols)]

    def select(self, tokens: torch.Tensor, layout: TokenLayout, layer: str = "") -> torch.Tensor:
        """The selected tokens of ``[B, T, D]``: ``[B, n, D]``."""
        idx = self.indices(layout, layer)
        if idx == list(range(idx[0], idx[-1] + 1)):
            return tokens[:, idx[0] : idx[-1] + 1]
        return tokens[:, torch.tensor(idx, device=tokens.device)]


CLS = TokenSelector("cls")
MEAN = TokenSelector("mean")


def patch(row: int, col: int) -> TokenSelector:
    """One patch token by grid row and column."""
    return TokenSelector("patch", (row, row + 1), (col, col + 1))


def region(rows: tuple[int, int], cols: tuple[int, int]) -> TokenSelector:
    """A block of patch tokens, rows ``r0:r1`` and columns ``c0:c1`` (half-open)."""
    return TokenSelector("patch", tuple(rows), tuple(cols))


def register(index: int) -> TokenSelector:
    """Register token ``index``."""
    return TokenSelector("reg", index=index)


def is_token_selector(text: str | None) -> bool:
    """Whether the text after ``@`` in a unit string is a token selector (not a ``y,x`` position)."""
    return text is not None and _SELECTOR.match(text) is not None


def parse_selector(text: str | TokenSelector) -> TokenSelector:
    """``"cls"``, ``"mean"``, ``"patch=3,5"``, ``"patch=0:4,2:6"``, ``"reg=0"`` -> :class:`TokenSelector`."""
    if isinstance(text, TokenSelector):
        return text
    m = _SELECTOR.match(str(text).strip().lstrip("@"))
    if not m:
        raise UnitError(
            f"cannot parse token selector {text!r}; use cls, mean, patch=ROW,COL, patch=R0:R1,C0:C1 or reg=INDEX"
        )
    if m["simple"]:
        return TokenSelector(m["simple"])
    if m["reg"] is not None:
        return register(int(m["reg"]))
    r0, c0 = int(m["r0"]), int(m["c0"])
    r1 = int(m["r1"]) if m["r1"] is not None else r0 + 1
    c1 = int(m["c1"]) if m["c1"] is not None else c0 + 1
    return TokenSelector("patch", (r0, r1), (c0, c1))
