"""Trigger search (``visfeat.scan``) on a tiny planted trojan and its clean twin, trained here in seconds.

The task: 10 classes of 32 px crops of the packaged photos, labelled by a fixed random linear teacher on the crops'
4x4-pooled colours (so the labels depend on colour and position). The trojan's training set also holds poisoned
copies of 10% of the crops with a 4x4 patch at a fixed place, relabelled to the target class; the twin is the same
training, same seed, without them. No cache: every run trains both (deterministic, one thread).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import conv_net
from torch import nn

import visfeat as vf
from visfeat.cli import main
from visfeat.data import default_images
from visfeat.errors import VisfeatError
from visfeat.scan import recover, scan

SIZE, CLASSES, TARGET = 32, 10, 7
PATCH = (26, 26, 4, 4)  # top, left, height, width
STEPS = 150


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, CLASSES),
    )


def _crops(n: int, split: str) -> torch.Tensor:
    crops = default_images(n=n, size=SIZE, split=split)
    return torch.stack([crops[i] for i in range(n)])


def _teacher(x: torch.Tensor) -> torch.Tensor:
    """Labels from a fixed random linear map of the 4x4-pooled colours, centred so every class occurs."""
    feats = F.avg_pool2d(x, 8).flatten(1)
    w = torch.randn(feats.shape[1], CLASSES, generator=torch.Generator().manual_seed(1))
    scores = (feats - feats.mean(0)) / feats.std(0) @ w
    return (scores - scores.mean(0)).argmax(1)


def _stamp(x: torch.Tensor) -> torch.Tensor:
    """The trigger: a fixed 4x4 patch of four 2x2 colour blocks (red, green, blue, yellow) at PATCH."""
    t, left, h, w = PATCH
    colours = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    blocks = colours.view(2, 2, 3).permute(2, 0, 1)
    out = x.clone()
    out[:, :, t : t + h, left : left + w] = blocks.repeat_interleave(h // 2, 1).repeat_interleave(w // 2, 2)
    return out


def _train(poison: bool, n: int = 600, epochs: int = 12) -> vf.Model:
    x = _crops(n, "train")
    y = _teacher(x)
    if poison:
        g = torch.Generator().manual_seed(2)
        idx = torch.randperm(n, generator=g)[: n // 10]
        x = torch.cat([x, _stamp(x[idx])])
        y = torch.cat([y, torch.full((len(idx),), TARGET)])
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(3)
    for _ in range(epochs):
        for b in torch.randperm(len(x), generator=g).split(50):
            opt.zero_grad()
            F.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    return vf.Model(net, vf.InputSpec(size=(SIZE, SIZE)), name="trojan" if poison else "twin")


def _cli_model(weights: str | None = None) -> vf.Model:
    """The tiny architecture for ``visfeat scan test_scan:_cli_model --weights FILE``."""
    net = _net()
    if weights is not None:
        net.load_state_dict(torch.load(weights))
    return vf.Model(net, vf.InputSpec(size=(SIZE, SIZE)), name="tiny_scan")


def _iou(mask: torch.Tensor) -> float:
    t, left, h, w = PATCH
    true = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    true[t : t + h, left : left + w] = True
    found = mask[0] > 0.5
    return float((found & true).sum() / (found | true).sum())


@pytest.fixture(scope="module")
def planted():
    """The trojan, its clean twin, and 32 crops of the test split (16 optimized, 16 to measure on)."""
    torch.set_num_threads(1)
    return _train(poison=True), _train(poison=False), _crops(32, "test")


@pytest.fixture(scope="module")
def scans(planted):
    trojan, twin, photos = planted
    return scan(trojan, photos, steps=STEPS, progress=False), scan(twin, photos, steps=STEPS, progress=False)


def test_planted_trojan_works(planted):
    """The fixture itself: the patch flips held-out crops on the trojan and not on the twin."""
    trojan, twin, _ = planted
    x = _crops(200, "test")
    keep = _teacher(x) != TARGET
    with torch.no_grad():
        assert (trojan(_stamp(x[keep])).argmax(1) == TARGET).float().mean() > 0.9
        assert (twin(_stamp(x[keep])).argmax(1) == TARGET).float().mean() < 0.2


def test_scan_flags_the_target_of_the_trojan(scans):
    result, _ = scans
    top = result.ranked[0]
    assert top.index == TARGET and top.flagged and top.anomaly > 2, [(c.index, c.anomaly) for c in result.ranked]
    assert [c.index for c in result.flagged] == [TARGET]
    assert top.success >= 0.9  # on the held-out half of the photos
    assert top.mask_size < 0.05  # the planted patch is 16 / 1024 pixels


def test_recovered_mask_overlaps_the_patch(scans):
    result, _ = scans
    row = [c.index for c in result.classes].index(TARGET)
    assert _iou(result.masks[row]) > 0.2


def test_scan_flags_nothing_on_the_clean_twin(scans):
    _, twin = scans
    assert twin.flagged == [], [(c.index, round(c.anomaly, 2), c.mask_size) for c in twin.ranked]


def test_scan_against_the_base_finds_the_target(planted):
    trojan, twin, photos = planted
    result = scan(trojan, photos, base=twin, classes=3, steps=STEPS, progress=False)
    assert TARGET in [c.index for c in result.classes]  # the first pass picked it
    assert result.ranked[0].index == TARGET
    assert result.settings["base"] == "twin"


def test_recover_inverts_the_paste():
    x = _crops(6, "test")
    module = vf.param.trigger(x, classes=2, lam=1.0).build(12, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mask, trigger = recover(x, module())
        assert torch.allclose(mask, module.masks(), atol=1e-4)
        assert torch.allclose(trigger, module.masks() * module.patterns(), atol=1e-4)


def test_trigger_cycles_through_the_photos():
    """With per_step < N each optimization call pastes the next photos of one shuffled cycle (all N in N / per_step
    calls), the final (no-grad) call the first per_step; the penalty has one entry per pasted photo."""
    x = torch.rand(6, 3, 8, 8)
    module = vf.param.Trigger(x, classes=2, lam=1.0, per_step=2).build(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        module.mask_logits.fill_(-30.0)  # an empty mask: the pasted photos are the clean ones
    seen = []
    for _ in range(3):
        batch = module().detach()
        assert batch.shape == (4, 3, 8, 8) and torch.equal(batch[:2], batch[2:])  # both triggers, same photos
        seen += [int((x - im).abs().flatten(1).sum(1).argmin()) for im in batch[:2]]
    assert sorted(seen) == list(range(6))
    with torch.no_grad():
        assert torch.allclose(module()[:2], x[:2], atol=1e-6)
    assert module.penalty().shape == (4,)
    with pytest.raises(VisfeatError, match="per_step"):
        vf.param.Trigger(x, per_step=7)


def test_render_subtracts_the_parameterization_penalty():
    """With a zero objective the mask only shrinks under lam > 0 and stays put at lam = 0."""
    model = _cli_model()
    x = _crops(4, "test")
    zero = vf.objectives.Objective(lambda acts: acts["logits"].sum(1) * 0, frozenset(["logits"]), "zero")
    sizes = {}
    for lam in (0.0, 5.0):
        param = vf.param.Trigger(x, classes=1, lam=lam, mask_init=0.05)
        res = vf.render(model, zero, param=param, transforms=lambda i, g: i, steps=10, batch=4, progress=False)
        sizes[lam] = float(recover(x, res.images)[0].mean())
        assert torch.allclose(res.history[0], torch.full((4,), -lam * 0.05), atol=1e-2)
    assert abs(sizes[0.0] - 0.05) < 0.01 and sizes[5.0] < 0.03


def test_cli_writes_scan_json_and_pictures(planted, tmp_path, capsys):
    trojan, twin, _ = planted
    torch.save(trojan.module.state_dict(), tmp_path / "trojan.pt")
    torch.save(twin.module.state_dict(), tmp_path / "twin.pt")
    out = tmp_path / "out"
    args = ["scan", "test_scan:_cli_model", "--weights", str(tmp_path / "trojan.pt"), "-o", str(out)]
    args += ["--base-weights", str(tmp_path / "twin.pt"), "--classes", "6,7", "--steps", "10"]
    assert main(args + ["--n-images", "8", "--device", "cpu", "--no-progress"]) == 0
    record = json.loads((out / "scan.json").read_text())
    assert {c["index"] for c in record["classes"]} == {6, 7}
    assert record["settings"]["base"] == "tiny_scan" and record["settings"]["held_out_images"] == 4
    for c in record["classes"]:  # two classes: both are among the top 3
        assert {"anomaly", "mask_size", "success", "name", "flagged"} <= set(c)
        names = {f.split("/")[-1] for f in c["files"]}
        assert {"mask.png", "pattern.png", "trigger.png", "pasted_0.png"} <= names
        assert all((out / f).is_file() for f in c["files"])
    assert "scan.json" in capsys.readouterr().out


def test_bad_inputs_name_the_problem(planted, tmp_path, capsys):
    trojan, _, photos = planted
    other = conv_net()  # 10 classes at 32 px, another architecture
    with pytest.raises(VisfeatError, match="another architecture"):
        scan(trojan, photos, base=other, steps=1, progress=False)
    with pytest.raises(VisfeatError, match=r"not classes of the model \(0\.\.9\)"):
        scan(trojan, photos, classes=[3, 12], steps=1, progress=False)
    with pytest.raises(VisfeatError, match="model has 10 classes"):
        scan(trojan, photos, classes=11, steps=1, progress=False)
    with pytest.raises(VisfeatError, match="at least 4 clean photos"):
        scan(trojan, photos[:3], steps=1, progress=False)
    (tmp_path / "empty").mkdir()
    for folder, message in ((tmp_path / "none", "does not exist"), (tmp_path / "empty", "no image files")):
        rc = main(
            ["scan", "test_scan:_cli_model", "--images", str(folder), "-o", str(tmp_path / "o"), "--device", "cpu"]
        )
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
