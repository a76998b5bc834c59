"""Objectives on SAE latents: render what a latent of a sparse autoencoder responds to.

Each returns a :class:`visfeat.objectives.Objective` reading ``sae.config.layer``, so a latent renders
through :func:`visfeat.render` like any unit: ``render(model, sae_features(sae, [3, 9]))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import UnitError
from ..objectives import Acts, Objective, batch_suffix, layer_act, restrict_to_image
from .vectors import to_vectors


def sae_feature(sae, latent: int, batch: int | None = None, reduce: str = "mean", activated: bool = False) -> Objective:
    """An SAE latent's pre-activation on ``sae.config.layer``: mean over positions, or at the ``"center"`` one.

    ``activated=True`` reads the latent after the SAE's activation (what ``sae.encode`` and its dataset
    examples report): the score of a picture, where the pre-activation is what optimizes well."""
    latent = int(latent)
    layer, d_sae = sae.config.layer, sae.config.d_sae
    if not 0 <= latent < d_sae:
        raise UnitError(f"latent {latent} is out of range: the SAE has {d_sae} latents (0..{d_sae - 1})")
    if reduce not in ("mean", "center"):
        raise UnitError(f"reduce must be 'mean' or 'center', got {reduce!r}")

    def fn(acts: Acts) -> torch.Tensor:
        act = layer_act(acts, layer)
        v = to_vectors(act, sae.config.tokens)  # [B, P, d_in]
        if sae.W_enc.device != v.device:
            sae.to(v.device)
        if activated:
            pre = sae.encode(v.float())[..., latent]  # [B, P]
        else:
            enc = sae.W_enc[:, latent]
            pre = (sae.normalize(v.float()) - sae.b_dec) @ enc + sae.b_enc[latent]  # [B, P]
        if reduce == "mean":
            return pre.mean(1)
        if act.dim() == 4:
            h, w = act.shape[-2:]
            return pre[:, (h // 2) * w + w // 2]
        return pre[:, pre.shape[1] // 2]

    where = ("" if reduce == "mean" else "@center") + (", activated" if activated else "")
    name = f"sae_feature({layer}/{latent}{where}){batch_suffix(batch)}"
    return Objective(restrict_to_image(fn, batch), frozenset([layer]), name)


def sae_features(sae, latents: Sequence[int], reduce: str = "mean") -> list[Objective]:
    """One :func:`sae_feature` per latent: ``render(model, sae_features(sae, [3, 9]))`` renders them in one batch."""
    return [sae_feature(sae, i, reduce=reduce) for i in latents]
