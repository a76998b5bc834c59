"""``iter_batches(workers=N)``: decoding in DataLoader worker processes gives the very batches of the in-process
loop (unreadable files dropped the same way, the same error when nothing can be read), and dataset examples
streamed through workers equal the in-process ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import conv_net
from PIL import Image

from visfeat.data import FolderImages, iter_batches
from visfeat.errors import VisfeatError
from visfeat.examples import dataset_examples_many
from visfeat.examples.topk import FIELDS


def _folder(root, n: int = 9, bad: tuple[int, ...] = (4,)):
    """``n`` image files named in listing order, the ones at ``bad`` not images at all."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = root / f"{i:02d}.png"
        if i in bad:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray((rng.random((30 + i, 40, 3)) * 255).astype(np.uint8)).save(path)
    return FolderImages(root, size=32)


def _batches(ds, **kw) -> list[tuple[list[int], torch.Tensor]]:
    return list(iter_batches(ds, 4, **kw))


@pytest.mark.parametrize("start, stop", [(0, None), (3, 8)])
def test_workers_yield_the_batches_of_the_in_process_loop(tmp_path, start, stop):
    ds = _folder(tmp_path / "images")
    want = _batches(ds, start=start, stop=stop)
    got = _batches(ds, start=start, stop=stop, workers=2)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert 4 not in sum((i for i, _ in got), [])  # the corrupt file is dropped, its batch still comes
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_workers_raise_the_same_error_when_nothing_can_be_read(tmp_path):
    ds = _folder(tmp_path / "bad", n=3, bad=(0, 1, 2))
    errors = []
    for workers in (0, 2):
        with pytest.raises(VisfeatError, match="none of the 3 images") as e:
            _batches(ds, workers=workers)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "first error: " in errors[0] and not errors[0].endswith("first error: ?")
    with pytest.raises(VisfeatError, match="workers must be 0"):
        _batches(ds, workers=-1)


def test_dataset_examples_through_workers_equal_the_in_process_ones(tmp_path):
    ds = _folder(tmp_path / "images", n=10, bad=(2, 7))
    model = conv_net(width=6)
    opts = {"k": 3, "batch_size": 3, "progress": False}
    want = dataset_examples_many(model, {"a": "2", "b": "logits"}, ds, **opts)  # CPU model: workers default 0
    got = dataset_examples_many(model, {"a": "2", "b": "logits"}, ds, workers=2, **opts)
    for name in want:
        assert want[name].meta["skipped"] == got[name].meta["skipped"] == [2, 7]
        for f in FIELDS:
            assert torch.equal(want[name].topk.tensors[f], got[name].topk.tensors[f]), (name, f)
    with pytest.raises(VisfeatError, match="workers must be 0"):
        dataset_examples_many(model, {"a": "2"}, ds, workers=-2, **opts)
