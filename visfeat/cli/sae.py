"""``visfeat sae train MODEL LAYER -o NAME`` and ``visfeat sae inspect NAME``: sparse autoencoders on a layer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import VisfeatError
from .options import add_model_args, add_render_options, load_model_from_args, render_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sae", help="train and inspect sparse autoencoders on a layer's activations")
    cmds = p.add_subparsers(dest="sae_command", required=True)
    t = cmds.add_parser("train", help="collect activations, train an SAE, evaluate it on held-out images")
    add_model_args(t)
    t.add_argument("layer", help="layer name (see `visfeat layers MODEL`)")
    t.add_argument("-o", "--out", required=True, help="SAE name: writes NAME.safetensors and NAME.json")
    t.add_argument("--images", default=None, help="folder of training images; default: the embedded set")
    t.add_argument("--test-images", default=None, help="folder of held-out images; default: embedded held-out crops")
    t.add_argument("-n", "--n-images", type=int, default=1200, help="embedded training crops (without --images)")
    t.add_argument("--n-test", type=int, default=200, help="embedded held-out crops")
    t.add_argument("--variant", default="topk", help="topk, batchtopk or relu")
    t.add_argument("--expansion", type=int, default=8, help="latents per input dimension")
    t.add_argument("-k", type=int, default=32, help="active latents per vector (topk, batchtopk)")
    t.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (relu)")
    t.add_argument("--tokens", default="all", choices=["all", "cls", "patch"], help="token layers: which tokens")
    t.add_argument("--epochs", type=float, default=4.0)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--batch-size", type=int, default=4096, help="activation vectors per step")
    t.add_argument("--acts", default=None, help="folder for activation shards (default NAME_acts; resumable)")
    t.add_argument("--no-progress", action="store_true")
    i = cmds.add_parser("inspect", help="print an SAE's config and metrics; render latents; dataset examples")
    i.add_argument("sae", help="SAE file (NAME.safetensors or NAME)")
    i.add_argument("--render", default=None, help="latents to render, e.g. '0-7' or '3,9'")
    i.add_argument("--examples", default=None, help="latents to draw dataset examples for, e.g. '0-7'")
    i.add_argument("-o", "--out", default=None, help="output folder for renders and examples")
    add_render_options(i)
    i.add_argument("--reduce", default="center", choices=["center", "mean"], help="latent at the centre or mean")
    i.add_argument("--images", default=None, help="folder for dataset examples; default: the embedded set")
    i.add_argument("--weights", help="local weights file of the model (offline)")
    i.add_argument("--model", default=None, help="the model to load (default: the name the SAE records)")
    i.add_argument("--device", default=None)
    i.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    return _train(args) if args.sae_command == "train" else _inspect(args)


def _train(args: argparse.Namespace) -> int:
    from .. import sae as S
    from ..data import image_dataset
    from ..sae.collect import collect
    from ..sae.metrics import downstream_effect, layer_vectors, pca_fvu, reconstruction_metrics

    if args.variant not in S.list_variants():
        raise VisfeatError(f"unknown SAE variant {args.variant!r}; choose one of {', '.join(S.list_variants())}")
    model = load_model_from_args(args)
    info = model.layer(args.layer)
    d_in = info.channels
    if d_in is None:
        raise VisfeatError(f"layer {args.layer!r} has no tensor output; pick another (see `visfeat layers`)")
    # settings errors (k > dictionary, ...) before any work
    sae = S.create(
        args.variant,
        d_in,
        args.expansion * d_in,
        k=args.k,
        l1_coeff=args.l1,
        model=model.name,
        layer=args.layer,
        tokens=args.tokens,
    )
    config = S.TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    size = model.input_size[0]
    train_set = image_dataset(args.images, size=size, n=args.n_images)
    test_set = image_dataset(args.test_images, size=size, n=args.n_test, split="test")
    out = Path(args.out)
    out = out.with_suffix("") if out.suffix in (".safetensors", ".json") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    acts = Path(args.acts) if args.acts else Path(f"{out}_acts")
    store = collect(model, args.layer, train_set, acts, tokens=args.tokens, progress=not args.no_progress)
    sae.to(model.device)
    log = S.train(sae, store, config, progress=not args.no_progress)
    test = layer_vectors(model, args.layer, test_set, tokens=args.tokens)
    metrics = reconstruction_metrics(sae, test)
    metrics["pca_fvu"] = pca_fvu(store.sample(200_000), test, sae.config.k)
    effect = downstream_effect(model, sae, test_set)
    metrics.update({f"effect_{k}": v for k, v in effect.items()})
    train_info = {"steps": log.steps, "vectors": log.vectors, "seconds": round(log.seconds, 1)}
    path = S.save(sae, out, metrics=metrics, extra={"train": train_info, "history": log.history[-50:]})
    print(
        f"{path}: held-out FVU {metrics['fvu']:.4f} (PCA-{sae.config.k} {metrics['pca_fvu']:.4f}), "
        f"L0 {metrics['l0']:.1f}, dead {100 * metrics['dead_fraction']:.1f}%, "
        f"top-1 kept {100 * effect['top1_agreement']:.1f}%"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .. import sae as S
    from ..models import load_model
    from .examples import parse_units

    meta = S.io.read_meta(args.sae)
    cfg = meta["config"]
    S.load(args.sae)  # a corrupt or truncated weights file is an error here, not a silent success
    print(json.dumps({k: meta[k] for k in ("config", "state", "metrics", "train") if k in meta}, indent=1))
    if not (args.render or args.examples):
        return 0
    if not args.out:
        raise VisfeatError("--render and --examples write pictures: pass an output folder with -o")
    model = load_model(args.model or cfg["model"], weights=args.weights, device=args.device)
    sae = S.load(args.sae, model=model, layer=cfg["layer"], device=model.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        from ..images import save_image
        from ..render import render
        from ..sae.objectives import sae_features

        latents = parse_units(args.render, sae.config.d_sae)
        result = render(
            model,
            sae_features(sae, latents, reduce=args.reduce),
            **render_options(args),
            seed=args.seed,
            progress=not args.no_progress,
        )
        for j, u in enumerate(latents):
            save_image(result.images[j], out / f"latent_{u:04d}.png")
        print(f"rendered {len(latents)} latents -> {out}")
    if args.examples:
        from ..data import image_dataset
        from ..examples import dataset_examples
        from ..examples.montage import unit_strip
        from ..images import save_image

        latents = parse_units(args.examples, sae.config.d_sae)
        size = model.input_size[0]
        dataset = image_dataset(args.images, size=size)
        ex = dataset_examples(
            model, cfg["layer"], dataset, sae=sae, cache=out / "examples", progress=not args.no_progress
        )
        for u in latents:
            save_image(unit_strip(ex, dataset, u), out / f"latent_{u:04d}_examples.png")
        print(f"dataset examples of {len(latents)} latents -> {out}")
    return 0
