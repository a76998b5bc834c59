"""SAE-feature visualizations vs. the latents' largest activation over the images (issue 4's figure).

    python benchmarks/sae_render.py [--sae ...] [--latents 8] [--steps 256]

Renders ``--latents`` SAE latents with ``sae.sae_features`` through ``visfeat.render`` (the
defaults: Fourier parameterization, the standard transforms) in one batch. For each, the latent's
activation (the SAE's real encoding, top-k included) on the rendered image is compared with its
largest activation over the images of the dataset-examples run of sae_monosemanticity.py (max over
600 crops and all 14x14 positions). Prints the ratios (render max-position / images max, and the
stricter render mean-over-positions / images max); writes docs/img/sae_features.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import visfeat as vf
from visfeat import sae as S
from visfeat.examples import Examples
from visfeat.figures import compact_png
from visfeat.images import atomic_write
from visfeat.sae import sae_features
from visfeat.sae.vectors import to_vectors

DEFAULT_SAE = "bench_out/sae/sae_efficientnet_lite0_blocks.4_topk_x8_k32"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", default=DEFAULT_SAE)
    ap.add_argument("--examples", default="bench_out/sae/examples/SAE_latents_600_k16")
    ap.add_argument("--latents", type=int, default=8)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--reduce", default="center", choices=["center", "mean"], help="sae_feature objective")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--docs", default="docs/img")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = S.io.read_meta(args.sae)
    model = vf.load_model(meta["config"]["model"])
    layer = meta["config"]["layer"]
    sae = S.load(args.sae, model=model, layer=layer)
    ex = Examples.load(args.examples)
    alive = (ex.topk.patch_value[:, -1] > 0).nonzero().flatten()
    latents = alive[torch.linspace(0, len(alive) - 1, args.latents).long()].tolist()  # evenly over the alive ones
    result = vf.render(model, sae_features(sae, latents, reduce=args.reduce), steps=args.steps, seed=0)
    with torch.no_grad():  # the renders are 128 px: the model sees them resized to its input size, as in render
        x = torch.nn.functional.interpolate(result.images, size=model.spec.size, mode="bilinear", align_corners=False)
        act = model.activations(x, [layer])[layer]
        z = sae.encode(to_vectors(act))  # [N, P, d_sae]
    ratios_max, ratios_mean = [], []
    for j, u in enumerate(latents):
        img_max = float(ex.topk.max[u])
        r_max = float(z[j, :, u].max()) / img_max
        r_mean = float(z[j, :, u].mean()) / img_max
        ratios_max.append(r_max)
        ratios_mean.append(r_mean)
        print(
            f"latent {u:4d}: images max {img_max:7.3f}  render max {float(z[j, :, u].max()):8.3f} ({r_max:5.1f}x)  "
            f"render mean {float(z[j, :, u].mean()):8.3f} ({r_mean:5.1f}x)"
        )
    rm, rn = torch.tensor(ratios_max), torch.tensor(ratios_mean)
    print(
        f"\n{len(latents)} latents, {args.steps} steps ({result.seconds:.0f} s): render/images max ratio "
        f"min {rm.min():.1f}x median {rm.median():.1f}x; mean-over-positions ratio min {rn.min():.1f}x "
        f"median {rn.median():.1f}x"
    )
    _grid(result.images, ex, latents, Path(args.docs) / "sae_features.png")


def _grid(images: torch.Tensor, ex: Examples, latents: list[int], path: Path) -> None:
    """Row 1: the renders; row 2: each latent's best dataset patch."""
    import torch.nn.functional as F

    from visfeat.data import default_images
    from visfeat.images import save_image

    ds = default_images(ex.meta["images"], split="test", seed=1)
    tile = 112
    top = F.interpolate(images, size=(tile, tile), mode="bilinear", antialias=True)
    bottom = []
    for u in latents:
        p = ex.top_patches(u)[0]
        t, left, h, w = p["box"]
        crop = ds[p["id"]][:, t : t + h, left : left + w]
        bottom.append(F.interpolate(crop[None], size=(tile, tile), mode="bilinear", antialias=True)[0])
    grid = torch.cat([torch.cat(list(top), 2), torch.cat(bottom, 2)], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    atomic_write(path, compact_png(path.read_bytes()))
    print(f"wrote {path} (top: renders; bottom: each latent's top dataset patch)")


if __name__ == "__main__":
    main()
