"""Distinct dataset examples: a unit's top images, top patches and quantile images come from distinct source
photos (one crop per photo) by default; the merge keeps the best crop of each photo whatever the batching;
``distinct`` is a cache setting, a spec key (``[images] distinct``) and a CLI flag (``--no-distinct``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Interrupting, conv_net
from PIL import Image

from visfeat.cli import main
from visfeat.data import FolderImages, Source, default_images, iter_batches, photo_set, source_groups
from visfeat.errors import VisfeatError
from visfeat.examples import Examples, TopK, dataset_examples, dataset_examples_many
from visfeat.gallery import SpecError, make_plan, parse_spec

K = 8


@pytest.fixture(scope="module")
def crops():
    """96 crops (32 px) of the 19 embedded photos: several crops per photo, so duplicates can happen."""
    return default_images(96, size=32, photos=photo_set())


def best_per_photo(values: torch.Tensor, groups: torch.Tensor, k: int) -> torch.Tensor:
    """Brute force ``[U, k]``: per unit the best image of each group, the k best of those (``-1`` pads)."""
    out = torch.full((values.shape[1], k), -1, dtype=torch.long)
    for u in range(values.shape[1]):
        best: dict[int, int] = {}
        for i in range(values.shape[0]):
            g, v = int(groups[i]), float(values[i, u])
            if g not in best or v > float(values[best[g], u]):
                best[g] = i
        top = sorted(best.values(), key=lambda i: (-float(values[i, u]), i))[:k]
        out[u, : len(top)] = torch.tensor(top)
    return out


def photos_of(ex: Examples, ids) -> list[str]:
    return [ex.sources[int(i)].name for i in ids if int(i) >= 0]


def repeats(ex: Examples, kind: str) -> int:
    """Units whose top images (``img``) or patches (``patch``) show some photo twice."""
    ids = getattr(ex.topk, f"{kind}_id")
    return sum(len(set(p)) < len(p) for p in (photos_of(ex, ids[u]) for u in range(ex.units)))


def test_topk_keeps_the_best_of_each_group_whatever_the_batching():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(60, 5, 4, generator=g)
    maps[:, 4] = 0  # a dead unit: all ties, broken by the lowest id
    groups = torch.randint(0, 9, (60,), generator=g)
    want_img = best_per_photo(maps.mean(2), groups, 6)
    want_patch = best_per_photo(maps.amax(2), groups, 6)
    for size in (1, 4, 7, 60):
        for backwards in (False, True):
            t = TopK(5, 6, 4, distinct=True)
            starts = list(range(0, 60, size))
            for s in reversed(starts) if backwards else starts:
                t.update(maps[s : s + size], torch.arange(s, min(s + size, 60)), groups[s : s + size])
            assert torch.equal(t.img_id, want_img) and torch.equal(t.patch_id, want_patch), (size, backwards)
            assert torch.equal(t.img_group, groups[want_img])
            assert torch.equal(t.img_id[4], torch.tensor([0, 1, 3, 4, 5, 7]))  # first image of 6 groups
    few = TopK(2, 4, 4, distinct=True)  # 3 groups for k = 4: the last slot stays empty
    few.update(maps[:12, :2], torch.arange(12), torch.arange(12) % 3)
    assert (few.img_id[:, 3] == -1).all() and (few.img_value[:, 3] == float("-inf")).all()
    assert (few.patch_pos[:, 3] == -1).all() and (few.img_heat[:, 3] == 0).all() and (few.img_group[:, 3] == -1).all()
    with pytest.raises(VisfeatError, match="pass groups"):
        TopK(2, 4, 4, distinct=True).update(maps[:3, :2], torch.arange(3))
    with pytest.raises(VisfeatError, match="pass no groups"):
        TopK(2, 4, 4).update(maps[:3, :2], torch.arange(3), torch.arange(3))


def test_embedded_set_examples_come_from_distinct_photos_and_equal_brute_force(crops):
    model = conv_net(width=16)
    targets = {"conv": "2", "logits": "logits"}
    plain = dataset_examples_many(model, targets, crops, k=K, sample_size=64, distinct=False, progress=False)
    assert repeats(plain["conv"], "img") > 0 and repeats(plain["conv"], "patch") > 0  # the problem is real
    assert repeats(plain["logits"], "img") > 0
    ex = dataset_examples_many(model, targets, crops, k=K, sample_size=64, progress=False)  # distinct by default
    maps = torch.cat([model.activations(x, ["2"])["2"].flatten(2) for _, x in iter_batches(crops, 32)])  # [N, U, P]
    groups = source_groups(crops)
    assert torch.equal(ex["conv"].topk.img_id, best_per_photo(maps.mean(2), groups, K))
    assert torch.equal(ex["conv"].topk.patch_id, best_per_photo(maps.amax(2), groups, K))
    for name, e in ex.items():
        assert e.meta["distinct"] and e.topk.distinct and (e.topk.img_id >= 0).all()  # 19 photos fill k = 8
        assert repeats(e, "img") == 0 and repeats(e, "patch") == 0, name
        for u in range(e.units):
            picks = e.quantile_images(u)
            assert len(set(photos_of(e, [p["id"] for p in picks]))) == len(picks), (name, u)
            values = [p["value"] for p in picks]
            assert values == sorted(values, reverse=True)
    before = [len(set(photos_of(plain["conv"], plain["conv"].topk.img_id[u]))) for u in range(16)]
    assert min(before) < K and all(len(set(photos_of(ex["conv"], ex["conv"].topk.img_id[u]))) == K for u in range(16))
    dup = [
        u
        for u in range(16)
        if len(set(photos_of(plain["conv"], [p["id"] for p in plain["conv"].quantile_images(u)]))) < 4
    ]
    assert dup and all(len({ex["conv"].sources[p["id"]].name for p in ex["conv"].quantile_images(u)}) == 4 for u in dup)


def test_distinct_results_do_not_depend_on_batch_size_and_survive_a_resume(crops, tmp_path):
    model = conv_net(width=16)
    a = dataset_examples(model, "2", crops, k=K, batch_size=5, sample_size=32, progress=False)
    b = dataset_examples(model, "2", crops, k=K, batch_size=32, sample_size=32, progress=False)
    broken = Interrupting(crops.photos, crops.boxes, crops.size, crops.label)
    broken.stop_at = 50
    with pytest.raises(KeyboardInterrupt):
        dataset_examples(
            model, "2", broken, k=K, batch_size=8, sample_size=32, cache=tmp_path, checkpoint_every=1, progress=False
        )
    assert Examples.load(tmp_path).topk.distinct  # the groups are saved with the state
    c = dataset_examples(model, "2", crops, k=K, batch_size=8, sample_size=32, cache=tmp_path, progress=False)
    for other in (b, c):
        for name, value in a.topk.tensors.items():
            if value.dtype == torch.long:
                assert torch.equal(value, other.topk.tensors[name]), name
            else:
                tol = 1e-2 if value.dtype == torch.float16 else 1e-5
                assert torch.allclose(value.double(), other.topk.tensors[name].double(), atol=tol), name


def test_a_cache_of_the_other_setting_is_refused_and_old_caches_count_as_not_distinct(crops, tmp_path):
    model, small = conv_net(width=16), default_images(24, size=32, photos=crops.photos)
    dataset_examples(model, "2", small, k=3, cache=tmp_path / "on", progress=False)
    with pytest.raises(VisfeatError, match="other settings"):
        dataset_examples(model, "2", small, k=3, cache=tmp_path / "on", distinct=False, progress=False)
    old = tmp_path / "old"
    plain = dataset_examples(model, "2", small, k=3, cache=old, distinct=False, progress=False)
    meta = old / "examples.json"
    meta.write_text(meta.read_text().replace('"distinct": false,', ""))  # written before the setting existed
    assert "distinct" not in Examples.load(old).meta
    again = dataset_examples(model, "2", small, k=3, cache=old, distinct=False, progress=False)
    assert torch.equal(again.topk.img_id, plain.topk.img_id)
    with pytest.raises(VisfeatError, match="other settings"):
        dataset_examples(model, "2", small, k=3, cache=old, progress=False)


def _folder(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((30 + i, 40, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def test_each_file_of_a_folder_is_its_own_group(tmp_path):
    ds = FolderImages(_folder(tmp_path / "imgs"), size=32)
    assert torch.equal(source_groups(ds), torch.arange(8))
    model = conv_net(width=6)
    on = dataset_examples(model, "2", ds, k=4, progress=False)
    off = dataset_examples(model, "2", ds, k=4, distinct=False, progress=False)
    assert torch.equal(on.topk.img_id, off.topk.img_id) and torch.equal(on.topk.patch_id, off.topk.patch_id)


def test_quantile_picks_move_to_the_nearest_rank_of_an_unused_photo():
    names = ["a", "a", "b", "b", "a", "c", "c", "c"]  # source of each rank, lowest value first
    assert Examples._distinct_ranks([6, 5, 4], names) == [6, 4, 3]  # 5 shares 6's photo: 4 ('a'); 4 then: 3 ('b')
    assert Examples._distinct_ranks([6, 5, 4, 3, 2], names) == [6, 4, 3, 2, 1]  # 3 photos: then the nearest free ranks
    assert Examples._distinct_ranks([3, 2], list("aaaac")) == [4, 3]  # 2 moved up past 3: the higher goes first
    t = TopK(1, 1, 1, sample_size=4)
    t.update(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1), torch.arange(4))
    srcs = {i: Source(n, (0, 0, 1, 1), (1, 1)) for i, n in enumerate("xxxy")}
    ex = Examples(t, {"distinct": True}, srcs)
    picks = ex.quantile_images(0, (1.0, 0.6))
    assert [p["id"] for p in picks] == [3, 2] and [p["id"] for p in ex.quantile_images(0, (0.6, 0.3))] == [3, 2]
    assert [p["id"] for p in ex.quantile_images(0, (0.6, 0.3), distinct=False)] == [2, 1]


SPEC = """model = "tiny"
[images]
n = 40
{images}
[[layers]]
name = "2"
units = "0-3"
"""


def test_spec_key_images_distinct_is_a_boolean_and_keys_the_examples_only():
    assert parse_spec(SPEC.format(images=""), "spec.toml").distinct is True
    off = parse_spec(SPEC.format(images="distinct = false"), "spec.toml")
    assert off.distinct is False
    with pytest.raises(SpecError, match=r"spec.toml:4: images.distinct: expected true or false, got str \'yes\'"):
        parse_spec(SPEC.format(images='distinct = "yes"'), "spec.toml")
    with pytest.raises(SpecError, match="did you mean 'distinct'"):
        parse_spec(SPEC.format(images="distinc = false"), "spec.toml")
    model = conv_net(width=16)
    on_plan, off_plan = make_plan(parse_spec(SPEC.format(images=""), "spec.toml"), model), make_plan(off, model)
    for stage in ("examples", "render"):
        on_keys, off_keys = {j.key for j in on_plan.by_stage(stage)}, {j.key for j in off_plan.by_stage(stage)}
        assert on_keys and (on_keys == off_keys) == (stage == "render"), stage


def test_cli_no_distinct_reaches_the_cache(tmp_path, capsys):
    imgs, out = _folder(tmp_path / "imgs"), tmp_path / "ex"
    args = ["examples", "tiny_cli", "3", "--images", str(imgs), "-k", "3", "-o", str(out), "--units", "none"]
    assert main([*args, "--no-distinct", "--no-progress"]) == 0, capsys.readouterr().err
    assert Examples.load(out).meta["distinct"] is False
    assert main([*args, "--no-progress"]) == 2 and "other settings" in capsys.readouterr().err
