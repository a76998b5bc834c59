"""Transforms: output shapes, per-image randomness within a batch, seeding, gradients, and device placement."""

from __future__ import annotations

import pytest
import torch

from visfeat import transforms as T

# name -> (transform, output side for a 32x32 input, random?)
TRANSFORMS = {
    "pad": (lambda: T.pad(4), 40, False),
    "pad reflect": (lambda: T.pad(3, mode="reflect"), 38, False),
    "jitter": (lambda: T.jitter(6), 26, True),
    "random_affine": (lambda: T.random_affine([0.9, 1.0, 1.1], [-10, 0, 10], 0.1), 32, True),
    "random_scale": (lambda: T.random_scale([0.8, 0.9, 1.1, 1.2]), 32, True),
    "random_rotate": (lambda: T.random_rotate(range(-20, 21)), 32, True),
    "crops_with_noise": (lambda: T.crops_with_noise((0.3, 0.8), 0.05), 32, True),
    "crops_with_noise out_size": (lambda: T.crops_with_noise(out_size=20), 20, True),
    "resize": (lambda: T.resize(48), 48, False),
    "compose": (lambda: T.compose(T.pad(2), T.jitter(4)), 32, True),
    "standard": (T.standard, 32 + 24 - 8 - 4, True),
    "standard reflect": (lambda: T.standard("reflect"), 32 + 24 - 8 - 4, True),
    "maco_crops": (T.maco_crops, 28, True),
}


def _images(batch: int = 4, same: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    one = torch.rand(1, 3, 32, 32, generator=g)
    return one.repeat(batch, 1, 1, 1) if same else torch.rand(batch, 3, 32, 32, generator=g)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_shape(name):
    make, side, _ = TRANSFORMS[name]
    y = make()(_images(), _gen())
    assert y.shape == (4, 3, side, side) and y.dtype == torch.float32


def test_standard_pads_grey_or_by_reflection():
    """A flat red image stays flat red under the reflect-padded set; the default brings in grey borders."""
    red = torch.zeros(4, 3, 32, 32)
    red[:, 0] = 1.0
    reflect = T.standard("reflect")(red, _gen())
    grey = T.standard()(red, _gen())
    assert torch.allclose(reflect, torch.ones_like(reflect) * red[:1, :, :1, :1], atol=1e-5)
    assert ((grey[:, 1] - 0.5).abs() < 1e-5).any()


def test_resize_rectangular_and_noop():
    x = _images(2)
    assert T.resize((20, 30))(x, _gen()).shape == (2, 3, 20, 30)
    assert T.resize(32)(x, _gen()) is x


@pytest.mark.parametrize("name", [n for n, (_, _, rnd) in TRANSFORMS.items() if rnd])
def test_each_image_draws_its_own_randomness(name):
    """Four copies of one image come out different: the parameters are drawn per image, not per batch."""
    y = TRANSFORMS[name][0]()(_images(4), _gen())
    diffs = [(y[i] - y[j]).abs().max().item() for i in range(4) for j in range(i + 1, 4)]
    assert sum(d > 1e-4 for d in diffs) >= 5, diffs


@pytest.mark.parametrize("name", [n for n, (_, _, rnd) in TRANSFORMS.items() if not rnd])
def test_deterministic_transforms_treat_every_image_alike(name):
    y = TRANSFORMS[name][0]()(_images(4), _gen())
    assert all(torch.equal(y[0], y[i]) for i in range(1, 4))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_same_seed_same_output(name):
    make, _, random = TRANSFORMS[name]
    x = _images(3, same=False)
    a, b, c = make()(x, _gen(5)), make()(x, _gen(5)), make()(x, _gen(6))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4 if random else torch.equal(a, c)


def test_jitter_is_an_integer_crop():
    x = _images(3, same=False)
    y = T.jitter(5)(x, _gen())
    for i in range(3):
        crops = [x[i, :, dy : dy + 27, dx : dx + 27] for dy in range(6) for dx in range(6)]
        assert any(torch.equal(y[i], c) for c in crops)


def test_identity_settings_keep_the_image():
    x = _images(2, same=False)
    torch.testing.assert_close(T.random_affine()(x, _gen()), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(T.crops_with_noise((1.0, 1.0), noise=0)(x, _gen()), x, atol=1e-5, rtol=0)
    assert torch.equal(T.jitter(0)(x, _gen()), x)


def test_pad_values():
    x = torch.zeros(1, 3, 4, 4)
    y = T.pad(2, value=0.25)(x, _gen())
    assert y[0, :, 0, 0].tolist() == [0.25] * 3 and y[0, :, 2:6, 2:6].abs().sum() == 0


def test_rotation_by_180_degrees():
    x = _images(1, same=False)
    y = T.random_rotate([180])(x, _gen())
    torch.testing.assert_close(y, x.flip(-1, -2), atol=1e-5, rtol=0)


def test_compose_order_and_parts():
    a, b = T.pad(2), T.resize(10)
    t = T.compose(a, b)
    assert t.parts == (a, b)
    assert t(_images(1), _gen()).shape == (1, 3, 10, 10)
    assert T.compose(b, a)(_images(1), _gen()).shape == (1, 3, 14, 14)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_gradients_flow_back_to_the_images(name):
    x = _images(2, same=False).requires_grad_()
    TRANSFORMS[name][0]()(x, _gen()).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_runs_on_the_images_device(name):
    """On the ``meta`` device (any non-CPU device behaves alike here): every tensor a transform makes for the images
    must live on the images' device, else PyTorch raises. The generator stays a CPU generator."""
    x = torch.empty(2, 3, 32, 32, device="meta")
    make, side, _ = TRANSFORMS[name]
    y = make()(x, _gen())
    assert y.device.type == "meta" and y.shape == (2, 3, side, side)
