"""Dataset-examples throughput and memory on EfficientNet-Lite0.

    python benchmarks/examples_throughput.py [--layer blocks.4] [--images 256]

Streams embedded crops through the model and keeps the top-16 images and patches per channel;
prints images per second and the size of the kept state, which depends on units x k, not on the
number of images (checked by running twice the images).
"""

from __future__ import annotations

import argparse
import time

import torch

import visfeat as vf
from visfeat.data import default_images
from visfeat.examples import dataset_examples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vf.load_model("efficientnet_lite0")
    for n in (args.images // 2, args.images):
        t = time.perf_counter()
        ex = dataset_examples(model, args.layer, default_images(n), k=args.k, progress=False)
        s = time.perf_counter() - t
        mb = sum(v.numel() * v.element_size() for v in ex.topk.tensors.values()) / 2**20
        print(
            f"{args.layer}: {n} images, {ex.units} units, k={args.k}: {n / s:.1f} images/s ({s:.0f} s), "
            f"state {mb:.2f} MB, patch side {ex.meta['patch_size']} px"
        )


if __name__ == "__main__":
    main()
