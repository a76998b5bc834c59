"""The SAE base class: an encoder, a sparsifying activation (the variant), a unit-norm decoder.

Vectors are normalized by one scalar (``scale``, set from the data so that the mean squared norm is
``d_in``) before encoding; :meth:`SAE.decode` maps back to the layer's units. Variants override
:meth:`SAE.activation` and, where they add a penalty, :meth:`SAE.sparsity_loss`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..errors import VisfeatError


class SAEError(VisfeatError, ValueError):
    """Bad SAE settings, files that do not match, or data of the wrong shape."""


@dataclass
class SAEConfig:
    """Sizes and sparsity settings of an SAE, and the layer it was trained on."""

    d_in: int  # width of the activation vectors (channels of a conv layer, D of a token layer)
    d_sae: int  # number of latents (dictionary size)
    variant: str = "topk"  # topk | batchtopk | relu
    k: int = 32  # active latents per vector (topk; mean per vector for batchtopk)
    l1_coeff: float = 5.0  # L1 weight for the relu variant (on normalized inputs, per vector)
    aux_k: int = 0  # latents in the AuxK loss (0: d_in // 2)
    aux_coeff: float = 1 / 32  # weight of the AuxK loss
    model: str = ""  # model name the SAE was trained on (checked when loading)
    layer: str = ""  # layer name the SAE was trained on (checked when loading)
    tokens: str = "all"  # token layers: all | cls | patch (ignored for conv layers)

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.d_sae < 1:
            raise SAEError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.variant in ("topk", "batchtopk") and not 1 <= self.k <= self.d_sae:
            raise SAEError(
                f"k={self.k} is not in 1..{self.d_sae}: a {self.variant} SAE cannot keep more latents active than "
                f"its dictionary has; lower k or raise the expansion (d_sae = expansion x d_in = {self.d_sae})"
            )
        if self.tokens not in ("all", "cls", "patch"):
            raise SAEError(f"tokens must be 'all', 'cls' or 'patch', got {self.tokens!r}")

    @property
    def aux_latents(self) -> int:
        return min(self.aux_k or max(1, self.d_in // 2), self.d_sae)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SAEError(f"unknown SAE config keys {unknown}; known: {sorted(known)}")
        return cls(**d)


class SAE(nn.Module):
    """Sparse autoencoder ``x -> z = act(W_enc (s x - b_dec) + b_enc) -> (W_dec z + b_dec) / s``."""

    variant = "base"

    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        g = torch.Generator().manual_seed(0)
        w = torch.randn(config.d_sae, config.d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)  # [d_sae, d_in], rows kept at unit norm
        self.W_enc = nn.Parameter(w.T.clone())  # [d_in, d_sae], tied at initialization
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    # --- the model ---------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before the sparsifying activation, ``[..., d_sae]`` (differentiable)."""
        if x.shape[-1] != self.config.d_in:
            raise SAEError(f"expected vectors of width {self.config.d_in}, got shape {tuple(x.shape)}")
        return (self.normalize(x) - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The sparsifying activation: latents ``[..., d_sae]`` (mostly zero)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the layer's units."""
        return (z @ self.W_dec + self.b_dec) / self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    # --- training ----------------------------------------------------------------------------
    def sparsity_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Extra penalty of the variant (none by default)."""
        return z.new_zeros(())

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses on a batch ``[N, d_in]``: ``loss`` (to minimize), ``mse``, ``aux``, ``sparsity``, and ``z``.

        The MSE is in normalized units, per vector summed over dims and divided by ``d_in``.
        ``dead`` marks latents that have not fired lately; AuxK lets the top ``aux_k`` of them
        reconstruct the residual, which brings them back to life.
        """
        xn = self.normalize(x)
        pre = (xn - self.b_dec) @ self.W_enc + self.b_enc
        z = self.activation(pre)
        recon = z @ self.W_dec + self.b_dec
        err = xn - recon
        mse = err.pow(2).sum(-1).mean() / self.config.d_in
        aux = x.new_zeros(())
        if dead is not None and bool(dead.any()) and self.config.aux_coeff > 0:
            k_aux = min(self.config.aux_latents, int(dead.sum()))
            dead_pre = pre.masked_fill(~dead, float("-inf"))
            vals, idx = dead_pre.topk(k_aux, dim=-1)
            z_aux = torch.zeros_like(pre).scatter(-1, idx, vals.clamp(min=0))
            aux_recon = z_aux @ self.W_dec
            target = err.detach()
            aux = (aux_recon - target).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean().clamp(min=1e-12)
            aux = torch.nan_to_num(aux, nan=0.0)
        sparsity = self.sparsity_loss(z)
        loss = mse + self.config.aux_coeff * aux + sparsity
        return {"loss": loss, "mse": mse, "aux": aux, "sparsity": sparsity, "z": z}

    @torch.no_grad()
    def init_from_data(self, sample: torch.Tensor, median_iters: int = 30) -> None:
        """Set ``scale`` (mean squared norm becomes ``d_in``) and ``b_dec`` (geometric median of the sample)."""
        sample = sample.float()
        if sample.dim() != 2 or sample.shape[1] != self.config.d_in:
            raise SAEError(f"expected a sample [N, {self.config.d_in}], got shape {tuple(sample.shape)}")
        ms = sample.pow(2).sum(1).mean()
        if not torch.isfinite(ms) or ms <= 0:
            raise SAEError("activation sample is all zeros or not finite; check the layer")
        self.scale.fill_((self.config.d_in / ms).sqrt())
        xn = sample * self.scale
        med = xn.mean(0)
        for _ in range(median_iters):  # Weiszfeld iterations
            w = 1 / (xn - med).norm(dim=1).clamp(min=1e-6)
            med = (w[:, None] * xn).sum(0) / w.sum()
        self.b_dec.copy_(med)
        self.initialized.fill_(True)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale the decoder rows to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the part of the decoder gradient that would change the rows' norms."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
        self.W_dec.grad.sub_((self.W_dec.grad * w).sum(1, keepdim=True) * w)

    def extra_state(self) -> dict:
        """Scalars a variant needs at inference besides the parameters (saved in the JSON)."""
        return {}

    def __repr__(self) -> str:
        c = self.config
        return f"{type(self).__name__}(d_in={c.d_in}, d_sae={c.d_sae}, k={c.k}, layer={c.layer!r})"
