"""Collect a layer's activation vectors into disk shards, so that datasets larger than memory train.

``collect(model, layer, dataset, folder)`` writes ``shard_00000.safetensors``... and a
``manifest.json`` (model, layer, tokens, width, dataset fingerprint, images done). It resumes where
an interrupted run stopped. :class:`ActivationStore` reads the shards back in shuffled batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import iter_batches
from ..images import atomic_write
from .base import SAEError
from .vectors import to_vectors

MANIFEST = "manifest.json"


def _save_shard(path: Path, acts: torch.Tensor) -> None:
    from safetensors.torch import save

    atomic_write(path, save({"acts": acts.contiguous()}))


def _load_shard(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["acts"]
    except (SafetensorError, OSError, KeyError) as e:
        raise SAEError(f"activation shard {path} is unreadable ({e}); delete its folder and collect again") from e


@dataclass
class ActivationStore:
    """Activation shards on disk: ``len`` vectors of width ``d_in``, read back shard by shard."""

    folder: Path
    manifest: dict

    @classmethod
    def open(cls, folder: str | Path) -> ActivationStore:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SAEError(f"{folder} has no readable {MANIFEST} ({e}); run the collection again") from e
        return cls(folder, manifest)

    def __len__(self) -> int:
        return sum(s["n"] for s in self.manifest["shards"])

    @property
    def d_in(self) -> int:
        return int(self.manifest["d_in"])

    def shard(self, i: int) -> torch.Tensor:
        return _load_shard(self.folder / self.manifest["shards"][i]["file"])

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """Up to ``n`` vectors spread over the shards (for initialization and statistics)."""
        shards = self.manifest["shards"]
        per = max(1, n // max(1, len(shards)))
        g = torch.Generator().manual_seed(seed)
        parts = []
        for i in range(len(shards)):
            a = self.shard(i)
            parts.append(a[torch.randperm(a.shape[0], generator=g)[:per]])
        return torch.cat(parts)[:n].float()

    def load_all(self) -> torch.Tensor:
        return torch.cat([self.shard(i) for i in range(len(self.manifest["shards"]))]).float()

    def batches(self, batch_size: int, seed: int = 0, buffer_shards: int = 2) -> Iterator[torch.Tensor]:
        """One pass in random order: shards in random order, ``buffer_shards`` at a time shuffled together."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.manifest["shards"]), generator=g).tolist()
        rest = None
        for j in range(0, len(order), buffer_shards):
            buf = torch.cat([self.shard(i) for i in order[j : j + buffer_shards]]).float()
            if rest is not None:
                buf = torch.cat([rest, buf])
            buf = buf[torch.randperm(buf.shape[0], generator=g)]
            full = buf.shape[0] // batch_size * batch_size
            yield from buf[:full].split(batch_size)
            rest = buf[full:]
        if rest is not None and rest.shape[0]:
            yield rest


def collect(
    model,
    layer: str,
    dataset,
    folder: str | Path,
    tokens: str = "all",
    batch_size: int = 32,
    shard_size: int = 65536,
    max_images: int | None = None,
    progress: bool = True,
) -> ActivationStore:
    """Run ``dataset`` through ``model`` and store ``layer``'s activation vectors under ``folder``; resumable."""
    from ..models import load_model

    model = load_model(model)
    model.layer(layer)  # unknown layer: error with close names before any work
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_images = len(dataset) if max_images is None else min(max_images, len(dataset))
    key = {
        "model": model.name,
        "layer": layer,
        "tokens": tokens,
        "dataset": dataset.fingerprint(),
        "images": n_images,
    }
    manifest = {**key, "d_in": None, "images_done": 0, "shards": [], "complete": False}
    path = folder / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        if {k: old.get(k) for k in key} != key:
            raise SAEError(
                f"{folder} holds activations of another collection ({ {k: old.get(k) for k in key} }); "
                f"expected {key}. Use another folder or delete this one"
            )
        manifest = old
        if manifest.get("complete"):
            return ActivationStore(folder, manifest)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_images, initial=manifest["images_done"], desc=f"collect {layer}", unit="img")
    buf: list[torch.Tensor] = []
    buffered = 0

    def flush(done: int) -> None:
        nonlocal buf, buffered
        if buf:
            name = f"shard_{len(manifest['shards']):05d}.safetensors"
            _save_shard(folder / name, torch.cat(buf))
            manifest["shards"].append({"file": name, "n": buffered})
        manifest["images_done"] = done
        atomic_write(path, json.dumps(manifest, indent=1).encode())
        buf, buffered = [], 0

    try:
        for idx, images in iter_batches(dataset, batch_size, start=manifest["images_done"], stop=n_images):
            with torch.no_grad():
                act = model.activations(images.to(model.device), [layer])[layer]
            v = to_vectors(act, tokens)
            v = v.reshape(-1, v.shape[-1]).float().cpu()
            manifest["d_in"] = v.shape[1]
            buf.append(v)
            buffered += v.shape[0]
            if buffered >= shard_size:
                flush(idx[-1] + 1)
            if bar is not None:
                bar.update(idx[-1] + 1 - bar.n)
        manifest["complete"] = True
        flush(n_images)
    finally:
        if bar is not None:
            bar.close()
    return ActivationStore(folder, manifest)
