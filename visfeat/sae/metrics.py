"""SAE quality on held-out data: FVU, mean L0, dead latents, and the effect on the model's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import iter_batches
from ..hooks import replace
from .base import SAE
from .vectors import from_vectors, to_vectors


@torch.no_grad()
def layer_vectors(model, layer: str, dataset, tokens: str = "all", batch_size: int = 32) -> torch.Tensor:
    """All activation vectors ``[N, d]`` of ``layer`` over ``dataset`` (in memory: for held-out sets)."""
    parts = []
    for _, images in iter_batches(dataset, batch_size):
        act = model.activations(images.to(model.device), [layer])[layer]
        v = to_vectors(act, tokens)
        parts.append(v.reshape(-1, v.shape[-1]).float().cpu())
    return torch.cat(parts)


@torch.no_grad()
def reconstruction_metrics(sae: SAE, vectors: torch.Tensor, batch_size: int = 8192) -> dict[str, float]:
    """FVU (squared error over total variance, layer units), mean L0, fraction of latents that never fire."""
    sae.eval()
    dev = sae.W_dec.device
    mean = vectors.float().mean(0).to(dev)
    err = var = l0 = 0.0
    fired = torch.zeros(sae.config.d_sae, dtype=torch.bool, device=dev)
    for x in vectors.split(batch_size):
        x = x.to(dev, torch.float32)
        recon, z = sae(x)
        err += float((x - recon).pow(2).sum())
        var += float((x - mean).pow(2).sum())
        active = z > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    n = vectors.shape[0]
    return {
        "fvu": err / max(var, 1e-12),
        "l0": l0 / n,
        "dead_fraction": float((~fired).float().mean()),
        "vectors": n,
    }


@torch.no_grad()
def pca_fvu(train: torch.Tensor, test: torch.Tensor, n_components: int) -> float:
    """FVU on ``test`` of the best ``n_components``-dimensional linear reconstruction fitted on ``train``."""
    train, test = train.double(), test.double()
    mean = train.mean(0)
    cov = (train - mean).T @ (train - mean) / train.shape[0]
    _, vecs = torch.linalg.eigh(cov)
    basis = vecs[:, -n_components:]
    xc = test - mean
    recon = xc @ basis @ basis.T
    return float((xc - recon).pow(2).sum() / (test - test.mean(0)).pow(2).sum())


@torch.no_grad()
def downstream_effect(model, sae: SAE, dataset, batch_size: int = 32) -> dict[str, float]:
    """How the model's output changes when the layer is replaced by the SAE reconstruction.

    ``kl``: mean KL(clean || patched) of the class distribution; ``kl_mean_ablation``: the same with the
    layer replaced by its mean vector; ``kl_recovered`` = 1 - kl / kl_mean_ablation; ``top1_agreement``;
    ``logit_rel_change`` = |patched - clean| / |clean| of the logits.
    """
    layer, tokens = sae.config.layer, sae.config.tokens
    sae.eval()

    def recon(out):
        v = to_vectors(out, tokens)
        r = sae.decode(sae.encode(v.reshape(-1, v.shape[-1]).float())).to(v.dtype).view_as(v)
        return from_vectors(r, out, tokens)

    mean_vec = None
    kl = kl_mean = agree = rel = 0.0
    n = 0
    for _, images in iter_batches(dataset, batch_size):
        x = model.preprocess(images.to(model.device))
        clean = model.module(x).float()
        if mean_vec is None:
            v = to_vectors(model.activations(images.to(model.device), [layer])[layer], tokens)
            mean_vec = v.reshape(-1, v.shape[-1]).mean(0)
        with replace(model.module, layer, recon, model.logits_layer):
            patched = model.module(x).float()
        with replace(
            model.module, layer, lambda out, m=mean_vec: from_vectors(m.expand_as(to_vectors(out, tokens)), out, tokens)
        ):
            ablated = model.module(x).float()
        logp = F.log_softmax(clean, -1)
        kl += float(F.kl_div(F.log_softmax(patched, -1), logp, log_target=True, reduction="sum"))
        kl_mean += float(F.kl_div(F.log_softmax(ablated, -1), logp, log_target=True, reduction="sum"))
        agree += float((clean.argmax(-1) == patched.argmax(-1)).sum())
        rel += float(((patched - clean).norm(dim=-1) / clean.norm(dim=-1).clamp(min=1e-12)).sum())
        n += clean.shape[0]
    return {
        "kl": kl / n,
        "kl_mean_ablation": kl_mean / n,
        "kl_recovered": 1 - kl / max(kl_mean, 1e-12),
        "top1_agreement": agree / n,
        "logit_rel_change": rel / n,
        "images": n,
    }
