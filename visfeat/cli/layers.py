"""``visfeat layers MODEL``: print the layer catalogue."""

from __future__ import annotations

import argparse

from .options import add_model_args, load_model_from_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("layers", help="list a model's layers with output shapes")
    add_model_args(p)
    p.add_argument("--filter", default="*", help="only layers matching this wildcard, e.g. 'blocks.*'")
    return p


def run(args: argparse.Namespace) -> int:
    import fnmatch

    model = load_model_from_args(args)
    lines = model.describe().splitlines()
    print(lines[0])
    for line in lines[1:]:
        if fnmatch.fnmatch(line.split()[0], args.filter):
            print(line)
    return 0
