"""Sparse autoencoders on a layer's activations: collect, train, evaluate, save, load, visualize.

One module per concept: ``base`` (the SAE class and its config), ``registry`` (variants by name:
:func:`create`), one file per variant (``topk``, ``batchtopk``, ``relu``), ``vectors`` (layer output <->
activation vectors), ``collect`` (activations to disk shards), ``train`` (the training loop), ``metrics``
(FVU, L0, dead latents, downstream effect), ``io`` (safetensors + JSON), ``objectives`` (render a latent).
"""

from __future__ import annotations

from . import batchtopk, relu, topk  # noqa: F401  (register the variants)
from .base import SAE, SAEConfig, SAEError
from .io import load, save
from .objectives import sae_feature, sae_features
from .registry import create, from_config, list_variants, register_variant
from .train import TrainConfig, train

__all__ = [
    "SAE",
    "SAEConfig",
    "SAEError",
    "TrainConfig",
    "create",
    "from_config",
    "list_variants",
    "load",
    "register_variant",
    "sae_feature",
    "sae_features",
    "save",
    "train",
]
