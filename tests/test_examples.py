"""Dataset examples: streaming top-k equals brute force, bounded memory, resume, folders, bad input; one pass over
many targets, the uniform sample (histogram, quantile images), predictions and the logits target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Interrupting, conv_net
from PIL import Image
from torch import nn

import visfeat as vf
from visfeat.data import CropSet, FolderImages, default_images, iter_batches
from visfeat.errors import VisfeatError
from visfeat.examples import Examples, Target, TopK, dataset_examples, dataset_examples_many, receptive_field
from visfeat.examples.concentration import concentration, summary
from visfeat.examples.montage import unit_strip
from visfeat.examples.topk import priority
from visfeat.sae import create as create_sae


def tiny_model() -> vf.Model:
    return conv_net(width=6)


def tiny_images(n: int = 20, seed: int = 0) -> CropSet:
    g = torch.Generator().manual_seed(seed)
    photos = {f"p{i}": torch.rand(3, 48, 64, generator=g) for i in range(3)}
    boxes = [(f"p{i % 3}", i % 9, (3 * i) % 17, 32 + i % 5) for i in range(n)]
    return CropSet(photos, boxes, size=32, label=f"tiny-{n}-{seed}")


def brute_force(model, layer, ds, k):
    maps = torch.cat([model.activations(x, [layer])[layer].flatten(2) for _, x in iter_batches(ds, 64)])  # [N, U, P]
    img = maps.mean(2).T.topk(k, dim=1)
    patch = maps.amax(2).T.topk(k, dim=1)
    return img, patch, maps


def test_streaming_topk_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(50, 4, 9, generator=g)
    t = TopK(units=4, k=5, positions=9)
    for s in range(0, 50, 7):
        t.update(maps[s : s + 7], torch.arange(s, min(s + 7, 50)))
    want = maps.mean(2).T.topk(5, dim=1)
    assert torch.allclose(t.img_value, want.values) and torch.equal(t.img_id, want.indices)
    best, pos = maps.max(2)
    wantp = best.T.topk(5, dim=1)
    assert torch.equal(t.patch_id, wantp.indices)
    assert torch.equal(t.patch_pos, pos.T.gather(1, wantp.indices))
    assert torch.allclose(t.patch_heat[2, 0].float(), maps[wantp.indices[2, 0], 2].half().float())
    assert torch.allclose(t.max, maps.amax((0, 2)))
    assert t.frequency.shape == (4,) and t.images_seen == 50


def test_dataset_examples_on_a_model_match_brute_force_and_memory_is_bounded():
    model = tiny_model()
    ds = tiny_images(20)
    ex = dataset_examples(model, "2", ds, k=4, batch_size=6, distinct=False, progress=False)  # pre-ReLU: no ties
    img, patch, maps = brute_force(model, "2", ds, 4)  # the plain top k (3 photos: distinct would keep 3)
    assert torch.allclose(ex.topk.img_value, img.values, atol=1e-5)
    assert torch.equal(ex.topk.img_id, img.indices) and torch.equal(ex.topk.patch_id, patch.indices)
    assert ex.grid() == (8, 8) and ex.heatmap(1, 0).shape == (8, 8)
    shown = set(ex.topk.img_id.flatten().tolist()) | set(ex.topk.patch_id.flatten().tolist())
    assert set(ex.sources) == shown | set(ex.topk.sample_id.tolist()) - {-1}  # top-k and the sample
    big = dataset_examples(model, "2", tiny_images(60, seed=1), k=4, batch_size=6, distinct=False, progress=False)
    assert {k: v.shape for k, v in big.topk.tensors.items()} == {k: v.shape for k, v in ex.topk.tensors.items()}
    top, left, h, w = ex.patch_box(int(ex.topk.patch_pos[0, 0]))
    assert 0 <= top <= 32 - h and 0 <= left <= 32 - w and h == ex.meta["patch_size"]
    strip = unit_strip(ex, ds, 0, tile=16)
    assert strip.shape == (3, 32, 64) and strip.min() >= 0


def test_cache_resumes_after_an_interruption_and_checks_settings(tmp_path):
    model = tiny_model()
    ds = tiny_images(30)
    want = dataset_examples(model, "3", ds, k=3, batch_size=4, progress=False)
    broken = Interrupting(ds.photos, ds.boxes, ds.size, ds.label)
    broken.stop_at = 22
    with pytest.raises(KeyboardInterrupt):
        dataset_examples(model, "3", broken, k=3, batch_size=4, cache=tmp_path, checkpoint_every=2, progress=False)
    partial = Examples.load(tmp_path)
    assert not partial.meta["complete"] and 0 < partial.meta["next"] < 30
    got = dataset_examples(model, "3", ds, k=3, batch_size=4, cache=tmp_path, progress=False)
    assert got.meta["complete"] and got.topk.images_seen == 30
    for name, value in want.topk.tensors.items():
        assert torch.allclose(got.topk.tensors[name].double(), value.double()), name
    again = dataset_examples(model, "3", ds, k=3, cache=tmp_path, progress=False)  # finished: read back
    assert torch.equal(again.topk.img_id, got.topk.img_id)
    with pytest.raises(VisfeatError, match="other settings"):
        dataset_examples(model, "3", ds, k=5, cache=tmp_path, progress=False)
    (tmp_path / "examples.safetensors").write_bytes(b"broken")
    with pytest.raises(VisfeatError, match="corrupt"):
        Examples.load(tmp_path)


def _write_folder(root, n=6, bad=0):
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(sub / f"{i}.{'png' if i % 3 else 'jpg'}")
    for j in range(bad):
        (root / f"broken{j}.png").write_bytes(b"not an image")


def test_folder_images_with_class_subfolders_and_an_unreadable_file(tmp_path):
    _write_folder(tmp_path, n=6, bad=1)
    ds = FolderImages(tmp_path, size=32)
    assert len(ds) == 7 and ds[-1].shape == (3, 32, 32)
    ex = dataset_examples(tiny_model(), "3", ds, k=2, batch_size=3, progress=False)
    assert ex.topk.images_seen == 6 and len(ex.meta["skipped"]) == 1
    src = ex.sources[int(ex.topk.img_id[0, 0])]
    assert src.name.endswith((".png", ".jpg")) and src.box[2] == min(src.size)


def test_empty_missing_and_unreadable_folders_are_clear_errors(tmp_path):
    with pytest.raises(VisfeatError, match="does not exist"):
        FolderImages(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(VisfeatError, match="contains no image files"):
        dataset_examples(tiny_model(), "3", tmp_path / "empty", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    for j in range(3):
        (bad / f"{j}.jpg").write_bytes(b"garbage")
    with pytest.raises(VisfeatError, match="none of the 3 images"):
        dataset_examples(tiny_model(), "3", bad, progress=False)
    with pytest.raises(VisfeatError, match="unknown layer"):
        dataset_examples(tiny_model(), "blocks.9", tiny_images(4), progress=False)


def test_embedded_set_is_deterministic_with_disjoint_held_out_crops():
    photos = {"a": torch.rand(3, 120, 160), "b": torch.rand(3, 100, 100)}
    train = default_images(30, size=32, photos=photos)
    again = default_images(30, size=32, photos=photos)
    test = default_images(30, size=32, split="test", photos=photos)
    assert train.boxes == again.boxes and torch.equal(train[3], again[3])
    assert not set(train.boxes) & set(test.boxes)
    sides = [b[3] / 100 for b in train.boxes]
    assert min(sides) < 0.36 and max(sides) > 0.65  # the three scale ranges are all there
    s = train.source(0)
    assert s.name in photos and s.box[2] == s.box[3] and train[0].shape == (3, 32, 32)
    with pytest.raises(VisfeatError, match="split"):
        default_images(3, split="val", photos=photos)


def test_concentration_scores_one_place_high_and_spread_low():
    photos = {f"p{i}": torch.rand(3, 90, 90) for i in range(4)}
    boxes = [(f"p{i % 4}", 0, 0, 30) for i in range(8)] + [("p0", 60, 60, 30)] * 4
    ds = CropSet(photos, boxes, size=32)
    topk = TopK(2, 4, 1)
    maps = torch.zeros(12, 2, 1)
    maps[:4, 0] = torch.arange(4, 0, -1)[:, None].float()  # unit 0: images 0-3, four photos
    maps[8:, 1] = torch.arange(4, 0, -1)[:, None].float()  # unit 1: images 8-11, same corner of p0
    topk.update(maps, torch.arange(12))
    ex = Examples(topk, {"image_size": 32, "patch_size": 32, "grid": None}, {i: ds.source(i) for i in range(12)})
    sc = concentration(ex, grid=3)
    assert sc["photo"][0] == 0.25 and sc["photo"][1] == 1.0 and sc["region"][1] == 1.0
    assert summary(sc)["units"] == 2
    ex.meta["distinct"] = True  # one crop per photo would score every unit 1/k: refused with the fix named
    with pytest.raises(ValueError, match="distinct=False"):
        concentration(ex)


def test_receptive_field_grows_with_depth():
    model = tiny_model()
    assert receptive_field(model, "0", 32) < receptive_field(model, "2", 32) <= 32


class TinyTokens(nn.Module):
    """Patch embedding (8x8 patches of a 32x32 image -> 4x4 grid) with a CLS token in front: [B, 17, 6]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.mix = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.mix(torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1))
        return self.head(t[:, 0])


def test_token_layer_examples_map_patches_to_the_grid():
    torch.manual_seed(0)
    model = vf.Model(TinyTokens(), vf.InputSpec(size=(32, 32)), name="tinytok")
    ds = tiny_images(10)
    ex = dataset_examples(model, "mix", ds, k=3, batch_size=4, progress=False)
    assert ex.grid() == (4, 4) and ex.meta["grid_offset"] == 1 and ex.heatmap(0, 0).shape == (4, 4)
    assert ex.meta["patch_size"] == 24  # three 8-px patches
    p = ex.top_patches(2)[0]
    if p["pos"] >= 1:  # a patch token: the box is centred on its cell
        y, x = divmod(p["pos"] - 1, 4)
        top, left, h, _ = p["box"]
        assert abs(top + h / 2 - (y + 0.5) * 8) <= 8 and abs(left + h / 2 - (x + 0.5) * 8) <= 8
    only_patches = dataset_examples(model, "mix", ds, k=3, tokens="patch", progress=False)
    assert only_patches.topk.img_heat.shape[-1] == 16 and only_patches.meta["grid_offset"] == 0


def assert_same(a: Examples, b: Examples, atol: float = 1e-5) -> None:
    """Two results hold the same state: ids exactly, values (and fp16 heatmaps) up to float noise."""
    for name, value in a.topk.tensors.items():
        other = b.topk.tensors[name]
        if value.dtype == torch.long:
            assert torch.equal(value, other), name
        else:
            assert torch.allclose(value.double(), other.double(), atol=atol if value.dtype != torch.float16 else 1e-2)


def test_one_pass_over_two_layers_equals_separate_passes_also_with_in_place_ops():
    model = tiny_model()
    model.module[1].inplace = True  # ReLU(inplace=True) overwrites layer "0" after it was captured
    ds = tiny_images(20)
    sae = create_sae("topk", 6, 12, k=3, layer="2")
    targets = {"a": Target("0"), "b": "2", "s": Target("2", sae=sae)}
    both = dataset_examples_many(model, targets, ds, k=4, batch_size=6, progress=False)
    assert set(both) == {"a", "b", "s"} and both["s"].units == 12
    for name, layer, s in (("a", "0", None), ("b", "2", None), ("s", "2", sae)):
        alone = dataset_examples(model, layer, ds, k=4, sae=s, batch_size=6, progress=False)
        assert_same(both[name], alone)
        assert both[name].meta["layer"] == layer and both[name].meta["complete"]
    assert float(both["a"].topk.img_value.min()) < 0  # pre-ReLU values: the in-place ReLU did not reach them


def test_many_target_pass_resumes_from_the_smallest_point_without_double_counting(tmp_path):
    model = tiny_model()
    ds = tiny_images(30)
    opts = {"k": 3, "sample_size": 8, "predictions": True, "progress": False}
    want = dataset_examples_many(model, {"a": "2", "b": "0"}, ds, batch_size=4, **opts)
    ca, cb = tmp_path / "a", tmp_path / "b"
    broken = Interrupting(ds.photos, ds.boxes, ds.size, ds.label)
    broken.stop_at = 20
    with pytest.raises(KeyboardInterrupt):  # target a alone gets to image 18 (batches of 6)
        dataset_examples(model, "2", broken, cache=ca, batch_size=6, checkpoint_every=1, **opts)
    broken.stop_at = 10
    targets = {"a": Target("2", cache=ca), "b": Target("0", cache=cb)}
    with pytest.raises(KeyboardInterrupt):  # b gets to image 8, a stays at 18
        dataset_examples_many(model, targets, broken, batch_size=4, checkpoint_every=1, **opts)
    assert Examples.load(ca).meta["next"] == 18 and Examples.load(cb).meta["next"] == 8
    got = dataset_examples_many(model, targets, ds, batch_size=4, **opts)  # a resumes inside batch 16-19
    for name in ("a", "b"):
        assert got[name].meta["complete"] and got[name].topk.images_seen == 30 and got[name].meta["skipped"] == []
        assert_same(got[name], want[name])
        assert torch.equal(got[name].pred_class, want[name].pred_class)
    again = dataset_examples_many(model, targets, ds, **opts)  # both finished: read back
    assert torch.equal(again["b"].topk.img_id, got["b"].topk.img_id)
    with pytest.raises(VisfeatError, match=f"{ca}.*other settings"):
        dataset_examples_many(model, {"a": Target("2", cache=ca)}, ds, **{**opts, "sample_size": 9})


def test_targets_are_checked_before_any_work(tmp_path):
    model = tiny_model()
    with pytest.raises(VisfeatError, match="non-empty mapping"):
        dataset_examples_many(model, {}, tiny_images(4), progress=False)
    with pytest.raises(VisfeatError, match="unknown layer"):
        dataset_examples_many(model, {"a": "2", "b": Target("blocks.9")}, tiny_images(4), progress=False)
    with pytest.raises(VisfeatError, match="share a cache"):
        dataset_examples_many(model, {"a": Target("2", cache=tmp_path), "b": Target("0", cache=tmp_path)}, None)


def test_sample_is_a_bottom_r_sketch_independent_of_batch_size_and_order():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(50, 3, 4, generator=g)
    ids = torch.arange(50)
    forward, backward = TopK(3, 2, 4, sample_size=10), TopK(3, 2, 4, sample_size=10)
    for s in range(0, 50, 7):
        forward.update(maps[s : s + 7], ids[s : s + 7])
    for s in range(45, -5, -5):
        backward.update(maps[max(s, 0) : s + 5], ids[max(s, 0) : s + 5])
    want = priority(ids).argsort()[:10]
    assert torch.equal(forward.sample_id, want) and torch.equal(backward.sample_id, want)
    assert torch.allclose(forward.sample_value, maps.mean(2).T[:, want])
    assert torch.equal(forward.sample_value, backward.sample_value)
    model, ds = tiny_model(), tiny_images(40)
    a = dataset_examples(model, "2", ds, k=2, batch_size=3, sample_size=16, progress=False)
    b = dataset_examples(model, "2", ds, k=2, batch_size=7, sample_size=16, progress=False)
    assert torch.equal(a.topk.sample_id, b.topk.sample_id) and (a.topk.sample_id >= 0).all()
    assert torch.allclose(a.topk.sample_value, b.topk.sample_value, atol=1e-5)
    j = int(a.topk.sample_id[0])
    assert torch.allclose(a.topk.sample_value[:, 0], model.activations(ds[j][None], ["2"])["2"][0].mean((1, 2)))


def test_histogram_sums_to_the_sample_and_quantile_images_are_ordered(tmp_path):
    model, ds = tiny_model(), tiny_images(40)
    ex = dataset_examples(model, "2", ds, k=3, sample_size=16, cache=tmp_path, progress=False)
    ex = Examples.load(tmp_path)  # the sample survives a save and load
    for unit in range(ex.units):
        counts, edges = ex.histogram(unit, bins=8)
        assert sum(counts) == 16 and len(counts) == 8 and len(edges) == 9
        assert edges[0] <= min(s["value"] for s in ex.sample(unit)) and edges[-1] >= ex.top_images(unit)[0]["value"]
        picks = ex.quantile_images(unit)
        values = [p["value"] for p in picks]
        assert values == sorted(values, reverse=True) and [p["quantile"] for p in picks] == [0.9, 0.75, 0.5, 0.25]
        assert {p["id"] for p in picks} <= set(ex.topk.sample_id.tolist()) and all(p["id"] in ex.sources for p in picks)
    with pytest.raises(VisfeatError, match="quantiles"):
        ex.quantile_images(0, (1.5,))
    with pytest.raises(VisfeatError, match="out of range"):
        ex.histogram(ex.units)
    none = dataset_examples(model, "2", tiny_images(8), k=2, sample_size=0, progress=False)
    with pytest.raises(VisfeatError, match="no image sample"):
        none.histogram(0)


def test_old_caches_without_the_sample_are_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    dataset_examples(tiny_model(), "2", tiny_images(8), k=2, cache=tmp_path, progress=False)
    tensors = load_file(str(tmp_path / "examples.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("sample")}, str(tmp_path / "examples.safetensors"))
    with pytest.raises(VisfeatError, match="older format.*delete the folder"):
        dataset_examples(tiny_model(), "2", tiny_images(8), k=2, cache=tmp_path, progress=False)


class Boom(nn.Module):
    """Identity that raises once armed: proves that a forward pass stopped before reaching it."""

    armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("the forward pass went past the requested layers")
        return x


def test_predictions_match_the_model_and_logits_do_not_break_the_early_stop(tmp_path):
    model = tiny_model()
    model.labels = tuple(f"class{i}" for i in range(10))  # with labels, predictions are recorded by default
    ds = tiny_images(12)
    ex = dataset_examples_many(model, {"a": "2", "b": "0"}, ds, k=2, batch_size=5, progress=False)
    x = torch.stack([ds[i] for i in range(len(ds))])
    probs = model(x).softmax(1)
    for i in range(len(ds)):
        c, p = ex["a"].prediction(i)
        assert c == int(probs[i].argmax()) and abs(p - float(probs[i].max())) < 1e-5 and ex["b"].prediction(i) == (c, p)
    dataset_examples(model, "2", ds, k=2, cache=tmp_path, progress=False)
    assert Examples.load(tmp_path).prediction(3)[0] == int(probs[3].argmax())  # saved in the cache
    with pytest.raises(VisfeatError, match="no prediction for image 99"):
        ex["a"].prediction(99)
    torch.manual_seed(0)
    boom = Boom()
    early = vf.Model(nn.Sequential(nn.Conv2d(3, 4, 3), boom, nn.Flatten()), vf.InputSpec(size=(32, 32)), name="boom")
    assert "1" in early.layers  # the catalogue's dry run goes through the whole model
    boom.armed = True
    plain = dataset_examples(early, "0", ds, k=2, progress=False)  # no labels: no predictions, stops after "0"
    with pytest.raises(VisfeatError, match="no predictions"):
        plain.prediction(0)
    with pytest.raises(RuntimeError, match="went past"):
        dataset_examples(early, "0", ds, k=2, predictions=True, progress=False)


def test_logits_target_has_one_unit_per_class_and_one_position_per_image():
    model, ds = tiny_model(), tiny_images(16)
    targets = {"logits": "logits", "conv": "2"}
    ex = dataset_examples_many(model, targets, ds, k=3, predictions=True, distinct=False, progress=False)
    lg = ex["logits"]
    x = torch.stack([ds[i] for i in range(len(ds))])
    logits = model(x)  # [N, 10]
    assert lg.units == 10 and lg.topk.positions == 1 and lg.grid() is None and lg.meta["patch_size"] == 32
    assert torch.equal(lg.topk.img_id, logits.T.topk(3, dim=1).indices)
    assert torch.allclose(lg.topk.img_value, logits.T.topk(3, dim=1).values, atol=1e-5)
    assert lg.top_patches(4)[0]["box"] == (0, 0, 32, 32) and lg.heatmap(4, 0).shape == (1,)
    assert lg.prediction(5)[0] == int(logits[5].argmax()) and sum(lg.histogram(2)[0]) == 16


def test_efficientnet_lite0_layers_logits_and_predictions_in_one_pass():
    model = vf.load_model("efficientnet_lite0")
    ds = default_images(n=12)
    ex = dataset_examples_many(model, {"b1": "blocks.1", "logits": "logits"}, ds, k=4, batch_size=6, progress=False)
    alone = dataset_examples(model, "blocks.1", ds, k=4, batch_size=6, predictions=False, progress=False)
    assert_same(ex["b1"], alone, atol=1e-4)
    assert ex["logits"].units == 1000 and alone.pred_class is None  # predictions: on by default with labels
    x = torch.stack([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        want = model(x).argmax(1)
    assert [ex["b1"].prediction(i)[0] for i in range(len(ds))] == want.tolist()
