"""Are SAE latents more monosemantic than the layer's neurons? (issue 4's figure)

    python benchmarks/sae_monosemanticity.py [--sae bench_out/sae/sae_efficientnet_lite0_blocks.4_topk_x8_k32]

Dataset examples (top-16 patches per unit) over fresh crops of the embedded photo set, for the
layer's channels (neurons), for the SAE's latents, and for a random rotation of the neuron basis
(a baseline: directions with no privileged meaning). Each unit's top patches are traced back to
their source photo and to a cell of a 3x3 grid on it; concentration = the largest share of the 16
patches from one photo (``photo``) or one cell (``region``). Prints the means over units that have
16 positive examples; writes docs/img/sae_concentration.png and docs/img/sae_examples.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import visfeat as vf
from visfeat import sae as S
from visfeat.data import default_images
from visfeat.examples import dataset_examples
from visfeat.examples.concentration import concentration, summary
from visfeat.examples.montage import unit_strip
from visfeat.figures import compact_png
from visfeat.images import atomic_write

DEFAULT_SAE = "bench_out/sae/sae_efficientnet_lite0_blocks.4_topk_x8_k32"


class Rotation:
    """Random orthonormal directions of the layer's space, scored like SAE latents (projection)."""

    def __init__(self, d: int, layer: str, seed: int = 0):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
        self.W_enc = q
        self.config = S.SAEConfig(d, d, variant="rotation", k=d, layer=layer)

    def to(self, device):
        self.W_enc = self.W_enc.to(device)
        return self

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.W_enc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", default=DEFAULT_SAE)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--out", default="bench_out/sae/examples")
    ap.add_argument("--docs", default="docs/img")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = S.io.read_meta(args.sae)
    model = vf.load_model(meta["config"]["model"])
    layer = meta["config"]["layer"]
    sae = S.load(args.sae, model=model, layer=layer)
    ds = default_images(args.images, split="test", seed=1)  # neither the SAE's training nor its test crops
    out = Path(args.out)
    kinds = {
        "neurons": None,
        "SAE latents": sae,
        "random directions": Rotation(sae.config.d_in, layer),
    }
    results, scores = {}, {}
    for name, feats in kinds.items():
        cache = out / f"{name.replace(' ', '_')}_{args.images}_k{args.k}"
        # distinct=False: the measure is how concentrated on one photo the top examples are
        ex = dataset_examples(model, layer, ds, k=args.k, sae=feats, cache=cache, distinct=False)
        results[name] = ex
        scores[name] = concentration(ex, grid=args.grid)
        s = summary(scores[name])
        print(
            f"{name:18s}: {s['units']:4d} units with {args.k} positive examples; "
            f"photo concentration {s['photo']:.3f}, region concentration {s['region']:.3f}"
        )
    n, lat = summary(scores["neurons"]), summary(scores["SAE latents"])
    print(
        f"\nSAE latents vs neurons: region {lat['region']:.3f} vs {n['region']:.3f} "
        f"({lat['region'] / n['region']:.2f}x), photo {lat['photo']:.3f} vs {n['photo']:.3f}"
    )
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    _histogram(scores, docs / "sae_concentration.png", args.k)
    _strips(results, scores, ds, docs / "sae_examples.png")


def _histogram(scores: dict, path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    bins = torch.linspace(0, 1, k + 2).numpy()
    for name, sc in scores.items():
        for j, key in enumerate(("region", "photo")):
            v = sc[key][~torch.isnan(sc[key])].numpy()
            ax[j].hist(
                v, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{name} (mean {v.mean():.2f})"
            )
            ax[j].set_xlabel(f"{key} concentration of the top-{k} patches")
    ax[0].legend(fontsize=7)
    ax[0].set_ylabel("density over units")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


def _strips(results: dict, scores: dict, ds, path: Path, per_kind: int = 4, tiles: int = 8) -> None:
    """Top patches of units picked evenly over each kind's alive units (no cherry-picking), labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * per_kind, 1, figsize=(tiles * 0.75 + 1.2, 2 * per_kind * 0.8))
    row = 0
    for name, short in (("neurons", "neuron"), ("SAE latents", "latent")):
        ex = results[name]
        alive = (ex.topk.patch_value[:, -1] > 0).nonzero().flatten()
        pick = alive[torch.linspace(0, len(alive) - 1, per_kind).long()]
        for u in pick.tolist():
            strip = unit_strip(ex, ds, u, tile=48, n=tiles)[:, 48:]  # the patch row
            ax = axes[row]
            ax.imshow(strip.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            region = float(scores[name]["region"][u])
            ax.set_ylabel(f"{short} {u}\nregion {region:.2f}", rotation=0, ha="right", va="center", fontsize=7)
            row += 1
    fig.suptitle("top-8 dataset patches: 4 neurons (top), 4 SAE latents (bottom)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    atomic_write(path, compact_png(path.read_bytes()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
