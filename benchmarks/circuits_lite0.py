"""The circuit of EfficientNet-Lite0's `sports car` logit back through the head and the last block.

    python benchmarks/circuits_lite0.py --steps 128 -o /tmp/circuit_sports_car

Prints how each level's weights were computed (exact / linearized and which ops), the top contributors,
the timings, and the top classes of the rendered target picture; writes the HTML/SVG/JSON circuit into
``-o`` and a picture to ``docs/img/circuit_sports_car.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import visfeat
from visfeat.circuits import build_circuit, render_nodes, write_circuit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--no-preact", action="store_true", help="render bn2 channels after their ReLU6")
    p.add_argument("-k", type=int, default=2)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--sources", default="bn2,blocks.6,blocks.5")
    p.add_argument("-o", "--out", default="/tmp/circuit_sports_car")
    p.add_argument("--figure", default=str(Path(__file__).parents[1] / "docs/img/circuit_sports_car.png"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = visfeat.load_model("efficientnet_lite0")
    sources = args.sources.split(",")
    t0 = time.perf_counter()
    circuit = build_circuit(model, "logit:sports_car", sources, k=args.k, width=args.width)
    t_weights = time.perf_counter() - t0
    for src, mode, ops in zip(sources, circuit.modes, circuit.linearized, strict=True):
        print(f"{src}: {mode}; ops replaced: {ops if ops else 'none'}")
    for lv in range(1, len(circuit.layers)):
        above = {n.unit for n in circuit.level(lv - 1)}
        for dst in above:
            edges = sorted((e for e in circuit.edges if e.dst == dst), key=lambda e: -(e.excite + e.inhibit))
            fmt = ", ".join(f"{e.src} {e.excite + e.inhibit:+.3g}" for e in edges[:6])
            print(f"  {dst} <- {fmt}")
    for w in circuit.warnings:
        print("warning:", w)
    t0 = time.perf_counter()
    render_nodes(model, circuit, steps=args.steps, progress=False, preact=not args.no_preact)
    t_render = time.perf_counter() - t0
    with torch.no_grad():
        logits = model(circuit.level(0)[0].image[None])[0]
    top = logits.topk(5).indices.tolist()
    print(f"target picture's top-5 classes: {[model.labels[i] for i in top]}")
    pictures = torch.stack([n.image for n in circuit.nodes[1:]])
    hits = 0
    for lv in range(1, len(circuit.layers)):
        idx = [i for i, n in enumerate(circuit.nodes[1:]) if n.level == lv]
        layer = circuit.layers[lv]
        chans = [int(circuit.nodes[1 + i].unit.split(":")[1]) for i in idx]
        with torch.no_grad():
            acts = model.activations(pictures[idx], [layer])[layer].mean((2, 3))[:, chans]  # [pictures, channels]
        hits += int((acts.argmax(0) == torch.arange(len(idx))).sum())
    print(f"contributor pictures that drive their own channel most among their level: {hits}/{len(pictures)}")
    print(
        f"weights + contributors: {t_weights:.1f} s; {len(circuit.nodes)} feature visualizations, "
        f"{args.steps} steps, one batch: {t_render:.1f} s (CPU, {args.threads} threads, shared machine)"
    )
    paths = write_circuit(circuit, args.out, model.name)
    from PIL import Image  # a 256-colour copy keeps the docs picture small

    Image.open(paths["png"]).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        args.figure, optimize=True
    )
    print(f"wrote {paths['html']} and {args.figure}")


if __name__ == "__main__":
    main()
