"""``visfeat circuit MODEL UNIT --from LAYER[,LAYER...] -o DIR``: a unit, its top contributors, the weights between."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_model_args, load_model_from_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("circuit", help="trace which upstream units feed a unit, from the weights (HTML + SVG)")
    add_model_args(p)
    p.add_argument("unit", help="target unit: mixed4c:447, blocks.6:12, logit:sports_car")
    p.add_argument(
        "--from",
        dest="sources",
        required=True,
        help="source layer(s), comma-separated, nearest the target first: mixed4b, or bn2,blocks.6,blocks.5",
    )
    p.add_argument(
        "--sae",
        action="append",
        default=[],
        help="a trained SAE (NAME.safetensors); its latents become nodes: target LAYER/NAME:j, or a --from layer",
    )
    p.add_argument("-o", "--out", required=True, help="output folder (created)")
    p.add_argument("-k", type=int, default=3, help="top excitatory and top inhibitory contributors per node")
    p.add_argument("--width", type=int, default=None, help="most nodes per level (default 2k)")
    p.add_argument(
        "--mode",
        choices=["auto", "exact", "linearized"],
        default="auto",
        help="exact: fail on a nonlinear op; linearized: ReLU-like to identity, max- to avg-pool; auto: exact if can",
    )
    p.add_argument("--steps", type=int, default=256, help="feature-visualization steps (0: no pictures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    from ..circuits.circuit import build_circuit, render_nodes
    from ..circuits.html import write_circuit
    from ..images import check_writable
    from ..units import parse_unit

    unit = parse_unit(args.unit)  # parse errors before any work
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    out = Path(args.out)
    check_writable(out)
    model = load_model_from_args(args)
    latents = [_latents(path, model) for path in args.sae]
    if "/" not in unit.layer:
        unit.validate(model)
    for s in sources:
        model.layer(s)  # unknown layer: error naming the closest ones
    circuit = build_circuit(model, str(unit), sources, k=args.k, width=args.width, mode=args.mode, latents=latents)
    for src, mode, ops in zip(sources, circuit.modes, circuit.linearized, strict=True):
        print(f"{src}: {mode}" + (f" ({len(ops)} ops linearized, e.g. {ops[0]})" if ops else ""))
    for w in circuit.warnings:
        print(f"warning: {w}")
    if args.steps > 0:
        render_nodes(model, circuit, steps=args.steps, seed=args.seed, progress=not args.no_progress)
    paths = write_circuit(circuit, out, model.name)
    print(f"{len(circuit.nodes)} nodes, {len(circuit.edges)} edges -> {paths['html']}")
    return 0


def _latents(path: str, model):
    """An SAE file as circuit endpoints, named by its file stem."""
    from ..circuits import Latents
    from ..sae.io import load, paths

    sae = load(path, model=model)
    return Latents.from_sae(sae, name=paths(path)[0].stem)
