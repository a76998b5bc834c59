"""SAE on EfficientNet-Lite0 middle-block activations (issue 4's figures).

    python benchmarks/sae_efficientnet.py [--layer blocks.4] [--variant topk] [--train-images 1200]

Collects ``--layer`` activation vectors (every spatial position) of the embedded image set (random
crops of the photos that scikit-image / scikit-learn / matplotlib ship), trains an SAE with
``--expansion`` x latents and ``--k`` active ones, and prints, on held-out crops (another seed):
FVU, FVU of PCA with k components fitted on the same training vectors, mean L0, dead-latent
fraction, and the effect on the class prediction when the layer is replaced by the reconstruction.
Activations and the SAE are kept under ``bench_out/sae/`` (reruns reuse them; ``--retrain``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import visfeat as vf
from visfeat import sae as S
from visfeat.data import default_images
from visfeat.sae.collect import collect
from visfeat.sae.metrics import downstream_effect, layer_vectors, pca_fvu, reconstruction_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--variant", default="topk")
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--train-images", type=int, default=1200)
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--effect-images", type=int, default=100)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--l1", type=float, default=5.0, help="l1_coeff for --variant relu")
    ap.add_argument("--out", default="bench_out/sae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", default="all", choices=["all", "cls", "patch"], help="token layers (ViT)")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    model = vf.load_model(args.model)
    tag = f"{args.model}_{args.layer}" + ("" if args.tokens == "all" else f"_{args.tokens}")
    t0 = time.perf_counter()
    store = collect(
        model,
        args.layer,
        default_images(args.train_images),
        out / f"acts_{tag}_{args.train_images}",
        tokens=args.tokens,
    )
    print(
        f"train vectors: {len(store)} x {store.d_in} from {args.train_images} crops ({time.perf_counter() - t0:.0f} s)"
    )
    test_set = default_images(args.test_images, split="test")
    test_file = out / f"test_{tag}_{args.test_images}.pt"
    if test_file.exists():
        test = torch.load(test_file)
    else:
        test = layer_vectors(model, args.layer, test_set, tokens=args.tokens)
        torch.save(test, test_file)
    print(f"held-out vectors: {test.shape[0]} from {args.test_images} crops of another seed")

    name = out / f"sae_{tag}_{args.variant}_x{args.expansion}_k{args.k}"
    if S.io.paths(name)[0].exists() and not args.retrain:
        sae = S.load(name, model=model, layer=args.layer)
        meta = S.io.read_meta(name)
        print(f"loaded {name}.safetensors (trained {meta.get('train', {})})")
    else:
        sae = S.create(
            args.variant,
            store.d_in,
            args.expansion * store.d_in,
            k=args.k,
            l1_coeff=args.l1,
            model=model.name,
            layer=args.layer,
            tokens=args.tokens,
        )
        log = S.train(sae, store, S.TrainConfig(epochs=args.epochs, lr=args.lr))
        meta = {
            "train": {
                "steps": log.steps,
                "vectors": log.vectors,
                "seconds": round(log.seconds, 1),
                "vectors_per_second": round(log.vectors_per_second),
            }
        }
        print(f"trained: {meta['train']}")
    rec = reconstruction_metrics(sae, test)
    pca = pca_fvu(store.load_all(), test, args.k)
    effect = downstream_effect(model, sae, default_images(args.effect_images, split="test"))
    metrics = {**rec, "pca_fvu": pca, "pca_components": args.k, **{f"effect_{k}": v for k, v in effect.items()}}
    S.save(sae, name, metrics=metrics, extra={"train": meta.get("train", {})})
    print(json.dumps(metrics, indent=1))
    if model.labels is None:  # no classifier (e.g. DINOv2): the output embedding's relative change
        print(
            f"\n{args.variant} SAE {args.model} {args.layer} d_sae={sae.config.d_sae} k={args.k}: held-out FVU "
            f"{rec['fvu']:.4f} vs PCA-{args.k} {pca:.4f}; L0 {rec['l0']:.1f}; dead {100 * rec['dead_fraction']:.1f}%; "
            f"output embedding relative change {effect['logit_rel_change']:.3f}"
        )
        return
    print(
        f"\n{args.variant} SAE {args.layer} d_sae={sae.config.d_sae} k={args.k}: held-out FVU {rec['fvu']:.4f} "
        f"vs PCA-{args.k} {pca:.4f}; L0 {rec['l0']:.1f}; dead {100 * rec['dead_fraction']:.1f}%; "
        f"top-1 agreement {100 * effect['top1_agreement']:.1f}%, KL {effect['kl']:.3f} "
        f"(mean-ablation KL {effect['kl_mean_ablation']:.3f}, recovered {100 * effect['kl_recovered']:.1f}%)"
    )


if __name__ == "__main__":
    main()
