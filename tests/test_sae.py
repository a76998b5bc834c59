"""SAE package: every variant trains, keeps unit-norm decoders, saves/loads; collection resumes; bad input errors."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import Interrupting, conv_net

import visfeat as vf
from visfeat import sae as S
from visfeat.data import CropSet
from visfeat.errors import UnitError, VisfeatError
from visfeat.hooks import replace
from visfeat.sae.collect import ActivationStore, collect
from visfeat.sae.metrics import downstream_effect, layer_vectors, pca_fvu, reconstruction_metrics
from visfeat.sae.train import lr_factor


def tiny_model() -> vf.Model:
    return conv_net(width=16, extra_conv=True)


def tiny_images(n: int = 12, seed: int = 0) -> CropSet:
    g = torch.Generator().manual_seed(seed)
    photos = {f"p{i}": torch.rand(3, 48, 64, generator=g) for i in range(3)}
    boxes = [(f"p{i % 3}", i % 8, i % 10, 32) for i in range(n)]
    return CropSet(photos, boxes, size=32, label=f"tiny-{n}-{seed}")


def sparse_data(n: int = 6000, d: int = 16, atoms: int = 48, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Vectors that are sums of ``active`` of ``atoms`` random unit directions (a known sparse code)."""
    g = torch.Generator().manual_seed(seed)
    dic = torch.randn(atoms, d, generator=g)
    dic = dic / dic.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, atoms)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) + 0.5)
    return codes @ dic + 0.3


@pytest.mark.parametrize("variant", S.list_variants())
def test_every_variant_learns_a_sparse_code(variant):
    x = sparse_data()
    sae = S.create(variant, 16, 64, k=4, l1_coeff=0.3)
    before = reconstruction_metrics(sae, x)["fvu"]
    log = S.train(sae, x, S.TrainConfig(epochs=15, batch_size=256, lr=5e-3, dead_after=2000), progress=False)
    m = reconstruction_metrics(sae, x)
    assert m["fvu"] < 0.25 < before, (variant, before, m)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)
    assert log.steps == len(log.history) * 10 or log.history[-1]["step"] == log.steps
    assert m["l0"] < 32  # sparse: fewer than half the latents on average
    if variant == "topk":
        assert m["l0"] <= 4
    if variant == "batchtopk":
        assert float(sae.threshold) > 0 and 1 <= m["l0"] <= 12


def test_pca_baseline_and_fvu_extremes():
    x = sparse_data(2000)
    assert pca_fvu(x, x, 16) == pytest.approx(0.0, abs=1e-6)
    assert 0.2 < pca_fvu(x, x, 2) < 1.0

    class Identity(S.topk.TopKSAE):
        def forward(self, v):
            return v, torch.ones(v.shape[0], self.config.d_sae)

    ident = Identity(S.SAEConfig(16, 32, k=2))
    m = reconstruction_metrics(ident, x)
    assert m["fvu"] == 0 and m["dead_fraction"] == 0 and m["l0"] == 32


def test_init_from_data_sets_scale_and_median():
    x = torch.randn(4000, 16) * 3 + 5
    sae = S.create("topk", 16, 32, k=4)
    sae.init_from_data(x)
    assert (x * sae.scale).pow(2).sum(1).mean() == pytest.approx(16, rel=1e-4)
    assert torch.allclose(sae.b_dec / sae.scale, torch.full((16,), 5.0), atol=0.3)
    assert bool(sae.initialized)


def test_auxk_loss_reaches_dead_latents_only():
    x = sparse_data(512)
    sae = S.create("topk", 16, 64, k=4)
    sae.init_from_data(x)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:10] = True
    out = sae.loss(x, dead)
    assert out["aux"] > 0
    sae.zero_grad()
    (out["aux"]).backward()
    g = sae.W_enc.grad.abs().sum(0)
    assert (g[:10] > 0).any() and (g[10:] == 0).all()
    assert sae.loss(x, None)["aux"] == 0


def test_lr_schedule_warms_up_and_decays():
    f = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0
    assert f[80] == pytest.approx(1.0) and f[99] == pytest.approx(0.05) and f[90] < f[85]


def test_bad_settings_are_clear_errors():
    with pytest.raises(S.SAEError, match=r"k=100 is not in 1..64.*expansion"):
        S.create("topk", 16, 64, k=100)
    with pytest.raises(VisfeatError, match="closest: topk"):
        S.create("topkk", 16, 64)
    with pytest.raises(S.SAEError, match="width 16"):
        S.create("topk", 16, 64, k=4).encode(torch.randn(3, 8))
    with pytest.raises(S.SAEError, match="unknown SAE config keys"):
        S.SAEConfig.from_dict({"d_in": 4, "d_sae": 8, "colour": 1})


def test_save_load_round_trip_and_checks(tmp_path):
    model = tiny_model()
    for variant in S.list_variants():
        sae = S.create(variant, 16, 32, k=4, model="tiny", layer="4")
        S.train(sae, sparse_data(1000), S.TrainConfig(epochs=2, batch_size=256), progress=False)
        path = S.save(sae, tmp_path / variant, metrics={"fvu": 0.5})
        back = S.load(path, model=model, layer="4")
        x = torch.randn(5, 16)
        assert torch.allclose(back(x)[0], sae(x)[0], atol=1e-6), variant
        assert json.loads((tmp_path / f"{variant}.json").read_text())["metrics"]["fvu"] == 0.5
    dotted = S.save(S.create("topk", 16, 32, k=4, layer="blocks.4"), tmp_path / "lite0_blocks.4_topk")
    assert dotted.name == "lite0_blocks.4_topk.safetensors" and (tmp_path / "lite0_blocks.4_topk.json").exists()
    assert S.load(tmp_path / "lite0_blocks.4_topk").config.layer == "blocks.4"
    with pytest.raises(S.SAEError, match="trained on layer '4', not '2'"):
        S.load(tmp_path / "topk", layer="2")
    with pytest.raises(S.SAEError, match="model 'tiny', not 'other'"):
        S.load(tmp_path / "topk", model="other")
    wide = S.create("topk", 8, 32, k=4, model="tiny", layer="4")
    S.save(wide, tmp_path / "wide")
    with pytest.raises(S.SAEError, match="expects 8-wide vectors but layer '4' has 16"):
        S.load(tmp_path / "wide", model=model)


def test_corrupt_or_missing_files_are_clear_errors_and_nothing_is_overwritten(tmp_path):
    sae = S.create("topk", 16, 32, k=4, model="tiny", layer="4")
    S.save(sae, tmp_path / "a")
    weights = tmp_path / "a.safetensors"
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(S.SAEError, match="corrupt"):
        S.load(weights)
    assert weights.read_bytes() == b"\x00garbage" * 10  # the bad file is left as it was
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(S.SAEError, match="corrupt"):
        S.load(tmp_path / "b")
    with pytest.raises(S.SAEError, match="not found"):
        S.load(tmp_path / "nothing")
    S.save(sae, tmp_path / "c")
    (tmp_path / "c.safetensors").unlink()
    with pytest.raises(S.SAEError, match="weights .* not found"):
        S.load(tmp_path / "c")


def test_collect_writes_shards_and_resumes(tmp_path):
    model = tiny_model()
    ds = tiny_images(12)
    full = layer_vectors(model, "4", ds, batch_size=4)
    assert full.shape == (12 * 8 * 8, 16)
    broken = Interrupting(ds.photos, ds.boxes, ds.size, ds.label)
    broken.stop_at = 9
    with pytest.raises(KeyboardInterrupt):
        collect(model, "4", broken, tmp_path / "acts", batch_size=4, shard_size=100, progress=False)
    partial = ActivationStore.open(tmp_path / "acts")
    assert 0 < partial.manifest["images_done"] < 12 and not partial.manifest["complete"]
    store = collect(model, "4", ds, tmp_path / "acts", batch_size=4, shard_size=100, progress=False)
    assert store.manifest["complete"] and len(store) == full.shape[0]
    assert torch.allclose(store.load_all(), full, atol=1e-6)
    seen = torch.cat(list(store.batches(50, seed=1)))
    assert seen.shape == full.shape
    assert torch.allclose(seen.sum(0), full.sum(0), atol=1e-3)  # every vector once, shuffled
    with pytest.raises(S.SAEError, match="another collection"):
        collect(model, "2", ds, tmp_path / "acts", progress=False)
    with pytest.raises(VisfeatError, match="unknown layer .blocks.4."):
        collect(model, "blocks.4", ds, tmp_path / "other", progress=False)


def test_token_layers_give_vectors_per_token():
    from visfeat.sae.vectors import from_vectors, grid_shape, to_vectors

    act = torch.randn(2, 1 + 9, 6)
    assert to_vectors(act, "cls").shape == (2, 1, 6) and to_vectors(act, "patch").shape == (2, 9, 6)
    assert torch.equal(from_vectors(to_vectors(act, "patch"), act, "patch"), act)
    assert grid_shape(act) == (3, 3) and grid_shape(torch.randn(2, 7, 4)) is None
    conv = torch.randn(2, 5, 3, 4)
    assert torch.equal(from_vectors(to_vectors(conv), conv), conv)


def test_replace_hook_patches_and_is_removed_even_on_error():
    model = tiny_model()
    x = torch.rand(2, 3, 32, 32)
    clean = model(x)
    with replace(model.module, "4", torch.zeros_like):
        zeroed = model(x)
    assert not torch.allclose(clean, zeroed) and torch.allclose(model(x), clean)

    def boom(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), replace(model.module, "4", boom):
        model(x)
    assert all(not m._forward_hooks for m in model.module.modules())


def test_downstream_effect_is_zero_for_a_perfect_reconstruction():
    model = tiny_model()

    class Perfect(S.topk.TopKSAE):
        def encode(self, v):
            return v

        def decode(self, z):
            return z

    sae = Perfect(S.SAEConfig(16, 16, k=2, layer="4"))
    e = downstream_effect(model, sae, tiny_images(8), batch_size=4)
    assert e["kl"] == pytest.approx(0, abs=1e-6) and e["top1_agreement"] == 1.0
    assert e["kl_mean_ablation"] > 0 and e["kl_recovered"] > 0.95
    noisy = S.create("topk", 16, 32, k=1, layer="4")
    e2 = downstream_effect(model, noisy, tiny_images(8), batch_size=4)
    assert e2["kl"] > 0 and e2["logit_rel_change"] > 0


def test_sae_feature_objective_rises_under_render():
    model = tiny_model()
    vecs = layer_vectors(model, "4", tiny_images(12))
    sae = S.create("topk", 16, 32, k=4, model="tiny", layer="4")
    S.train(sae, vecs, S.TrainConfig(epochs=5, batch_size=128), progress=False)
    objs = S.sae_features(sae, [3, 5])
    res = vf.render(model, objs, steps=24, lr=0.05, progress=False, param=vf.param.fourier(size=32))
    assert res.history.shape == (24, 2)
    assert (res.history[-4:].mean(0) > res.history[:4].mean(0)).all()
    single = S.sae_feature(sae, 7, reduce="center")
    assert single.layers == frozenset(["4"]) and single.name == "sae_feature(4/7@center)"
    with pytest.raises(UnitError, match="latent 32 is out of range.*0..31"):
        S.sae_feature(sae, 32)
