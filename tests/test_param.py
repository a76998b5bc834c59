"""Parameterizations: shapes and range, per-image random init, seeding, gradients, MACO spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visfeat import param as P
from visfeat.errors import VisfeatError
from visfeat.images import save_image
from visfeat.param.maco import resize_spectrum
from visfeat.param.spatial import lowpass

PARAMS = {
    "pixel": lambda size: P.pixel(size, sd=0.5),
    "fourier": lambda size: P.fourier(size, sd=0.5),
    "maco": lambda size: P.maco(size),
}


def _build(kind: str, size, batch: int = 3, seed: int = 0) -> torch.nn.Module:
    return PARAMS[kind](size).build(batch, torch.Generator().manual_seed(seed), "cpu")


@pytest.mark.parametrize("kind", list(PARAMS))
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_shape_and_range(kind, size):
    img = _build(kind, size)()
    h, w = (size, size) if isinstance(size, int) else size
    assert img.shape == (3, 3, h, w) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    assert img.std() > 1e-3  # not a constant image


@pytest.mark.parametrize("kind", list(PARAMS))
def test_each_image_starts_from_its_own_init(kind):
    img = _build(kind, 32, batch=4)().detach()
    for i in range(4):
        for j in range(i + 1, 4):
            assert (img[i] - img[j]).abs().max() > 1e-3, (i, j)


@pytest.mark.parametrize("kind", list(PARAMS))
def test_same_seed_same_init_other_seed_other_init(kind):
    a = _build(kind, 32, seed=7)().detach()
    b = _build(kind, 32, seed=7)().detach()
    c = _build(kind, 32, seed=8)().detach()
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(PARAMS))
def test_gradients_reach_the_parameters(kind):
    module = _build(kind, 16, batch=2)
    params = list(module.parameters())
    assert len(params) == 1
    module()[:, 0].mean().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_create_by_name_and_unknown_name():
    assert P.list_params() == ["fourier", "maco", "pixel", "seeded", "trigger"]
    assert P.create("fourier", size=48) == P.Fourier(size=48)
    assert isinstance(P.create("maco"), P.Maco) and P.create("maco").size == 224
    with pytest.raises(VisfeatError, match="unknown parameterization 'fouriers'; closest: fourier"):
        P.create("fouriers")


def test_fourier_decay_shapes_the_spectrum():
    """With decay=1 the low frequencies dominate; decay=0 gives white noise."""

    def low_high(decay: float) -> float:
        img = P.fourier(64, sd=1.0, decay=decay, decorrelate=False).build(4, torch.Generator().manual_seed(0))()
        mag = torch.fft.rfft2(img - img.mean((2, 3), keepdim=True)).abs()
        return (mag[..., 1:4, 1:4].mean() / mag[..., 24:32, 24:32].mean()).item()

    assert low_high(1.0) > 5 * low_high(0.0)


def test_fourier_cutoff_draws_no_fine_scales():
    """cutoff=0.5 leaves the finest half of the frequencies out of the picture (up to the sigmoid's harmonics)."""

    def hf_share(cutoff: float | None) -> float:
        img = P.fourier(64, sd=0.05, decay=0.0, cutoff=cutoff).build(4, torch.Generator().manual_seed(0))()
        power = torch.fft.fft2(img - img.mean((2, 3), keepdim=True)).abs() ** 2
        f = torch.fft.fftfreq(64)
        high = (f[:, None] ** 2 + f[None, :] ** 2).sqrt() > 0.25
        return (power[..., high].sum() / power.sum()).item()

    assert hf_share(None) > 0.5  # white noise: most of the power lies above half Nyquist
    assert hf_share(0.5) < 0.01
    f = torch.linspace(0, 0.5, 11)
    assert lowpass(f, 0.8).tolist()[:4] == [1, 1, 1, 1] and lowpass(f, 0.8)[8:].sum() == 0  # 1 to 0.16, 0 from 0.4
    assert 0 < lowpass(f, 0.8)[6] < lowpass(f, 0.8)[5] < 1  # a smooth fall between
    assert lowpass(f, 0.8, taper=1.0).tolist() == [1.0] * 9 + [0.0] * 2  # a step
    with pytest.raises(VisfeatError, match="cutoff is a share of the Nyquist frequency"):
        P.fourier(64, cutoff=0.0)


def test_fourier_grow_opens_the_pass_band_coarse_to_fine():
    """grow=8: at the first step only the coarsest scales are drawn, after 8 steps (at most half of a run) the band
    reaches the cutoff, and the final picture is the plain low-passed image; without grow the image ignores where
    the run is."""

    def hf_share(img: torch.Tensor) -> float:
        power = torch.fft.fft2(img - img.mean((2, 3), keepdim=True)).abs() ** 2
        f = torch.fft.fftfreq(64)
        return (power[..., (f[:, None] ** 2 + f[None, :] ** 2).sqrt() > 0.1].sum() / power.sum()).item()

    def image(grow: int, cutoff: float | None = 0.8):
        return P.fourier(64, sd=0.05, decay=0.0, cutoff=cutoff, grow=grow).build(2, torch.Generator().manual_seed(0))

    plain, growing = image(0)(), image(8)
    growing.set_progress(0, 100)
    first = hf_share(growing())
    growing.set_progress(4, 100)
    halfway = hf_share(growing())
    assert first < 0.02 < halfway < hf_share(plain)  # the band opens with the steps
    growing.set_progress(8, 100)
    assert torch.allclose(growing(), plain)  # open after 8 steps ...
    growing.set_progress(4, 8)
    assert torch.allclose(growing(), plain)  # ... or half of a short run
    growing.set_progress(100, 100)
    assert torch.allclose(growing(), plain)  # the final picture
    fixed = image(0)
    fixed.set_progress(0, 100)
    assert torch.allclose(fixed(), plain)
    unlimited = image(8, cutoff=None)
    unlimited.set_progress(0, 100)
    assert hf_share(unlimited()) < 0.02  # coarse first, also without a cutoff ...
    unlimited.set_progress(100, 100)
    assert torch.allclose(unlimited(), image(0, cutoff=None)())  # ... and every frequency at the end
    for bad in (-1, 0.5, True):
        with pytest.raises(VisfeatError, match="grow is the number of first steps"):
            P.fourier(64, grow=bad)


def test_fourier_headroom_penalizes_only_logits_near_black_and_white():
    """penalty(): headroom x the mean squared excess of the colour logits beyond +-4, per image, read from the last
    picture drawn; a picture inside the band costs nothing, and headroom 0 costs nothing anywhere."""
    gen = torch.Generator().manual_seed(0)
    image = P.fourier(32, sd=10.0, decay=0.0, headroom=10.0).build(2, gen)
    with torch.no_grad():
        image.spectrum[1] *= 0.05  # the second picture stays near grey
    pictures = image()
    logits = (torch.log(pictures) - torch.log1p(-pictures)).detach()  # the sigmoid's inverse
    assert logits[0].abs().max() > 5 and logits[1].abs().max() < 4
    expected = 10.0 * (logits.abs() - 4).clamp(min=0).pow(2).mean((1, 2, 3))
    penalty = image.penalty()
    assert penalty.shape == (2,) and penalty[0] > 0 and penalty[1] == 0
    assert torch.allclose(penalty, expected, rtol=1e-3)
    penalty[0].backward()  # it pulls on the spectrum
    assert image.spectrum.grad[0].abs().sum() > 0
    free = P.fourier(32, sd=10.0, decay=0.0).build(2, torch.Generator().manual_seed(0))
    assert torch.allclose(free()[0], pictures[0]) and torch.equal(free.penalty(), torch.zeros(2))
    for bad in (-1.0, float("inf"), True, "1"):
        with pytest.raises(VisfeatError, match="headroom is the weight"):
            P.fourier(64, headroom=bad)


def test_default_spectrum_ships_and_loads():
    spec = P.default_spectrum()
    assert spec.shape == (3, 224, 113) and spec.dtype == torch.float32
    assert torch.isfinite(spec).all() and (spec >= 0).all()
    # natural images: the magnitude falls with frequency
    assert spec[:, 1:4, 1:4].mean() > 10 * spec[:, 100:112, 100:112].mean()
    assert torch.equal(P.Maco().magnitude((224, 224)), spec)


def test_maco_keeps_the_magnitude_fixed():
    """Only the phase is a parameter: the image's spectrum magnitude follows the given one, not the init."""
    m = P.maco(32).build(2, torch.Generator().manual_seed(0))
    assert [n for n, _ in m.named_parameters()] == ["phase"]
    assert m.magnitude.shape == (3, 32, 17)
    ratio = m.magnitude[:, 1, 1] / m.magnitude[:, 10, 10]
    assert (ratio > 2).all()


def test_resize_spectrum():
    spec = P.default_spectrum()
    small = resize_spectrum(spec, (64, 48))
    assert small.shape == (3, 64, 25)
    assert resize_spectrum(spec, (224, 224)) is spec
    # the DC and the lowest frequencies stay the largest
    assert small[:, 0, 0].min() >= small[:, 20:44, 10:].max()


def _write_photos(folder, n: int = 3) -> list[torch.Tensor]:
    """Smooth random pictures (strong low frequencies) as PNG files, next to a file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    imgs = []
    for i in range(n):
        low = torch.rand(1, 3, 6, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(48, 64), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        save_image(img, folder / f"photo{i}.png")
        imgs.append(img)
    (folder / "notes.txt").write_text("not an image")
    return imgs


def test_spectrum_from_images_folder(tmp_path):
    imgs = _write_photos(tmp_path / "photos")
    spec = P.spectrum_from_images(tmp_path / "photos", size=32)
    assert spec.shape == (3, 32, 17)
    assert torch.isfinite(spec).all()
    assert spec[:, 1, 1].mean() > 5 * spec[:, 12:20, 8:].mean()  # smooth pictures: low frequencies dominate
    # same answer from the tensors (files are 8-bit, hence the tolerance)
    from_tensors = P.spectrum_from_images(imgs, size=32)
    torch.testing.assert_close(spec, from_tensors, atol=5e-3, rtol=0.05)
    # and it plugs into MACO, as a tensor or as a .npy file
    np.save(tmp_path / "spec.npy", spec.numpy())
    for s in (spec, tmp_path / "spec.npy", str(tmp_path / "spec.npy")):
        img = P.maco(32, spectrum=s).build(2, torch.Generator().manual_seed(0))()
        assert img.shape == (2, 3, 32, 32) and img.min() >= 0 and img.max() <= 1


def test_spectrum_from_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VisfeatError, match="contains no images"):
        P.spectrum_from_images(tmp_path / "empty")
    with pytest.raises(VisfeatError, match="found no images"):
        P.spectrum_from_images([])
    with pytest.raises(VisfeatError, match=r"shape \[3, H, W//2\+1\]"):
        P.maco(32, spectrum=torch.ones(32, 17)).build(1, torch.Generator())


@pytest.mark.parametrize("kind", ["pixel", "fourier", "maco"])
@pytest.mark.parametrize("size", [0, -3, (32, 0)])
def test_size_must_be_positive(kind, size):
    with pytest.raises(VisfeatError, match=f"{kind} image size must be a positive number of pixels"):
        P.create(kind, size=size)
