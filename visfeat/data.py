"""Image datasets for dataset examples and SAE training: a folder of images, or the embedded set.

Both are indexable: ``len(ds)``, ``ds[i]`` is a square ``[3, S, S]`` image in [0, 1], and
``ds.source(i)`` says where it came from (a file, or a photo and the box cropped from it), so
results can point back to the source and be checked for concentration on one photo or region.
The embedded set (:func:`default_images`) is random crops at several scales of the photos that
scikit-image, scikit-learn and matplotlib ship: it needs no data of the user's and no download.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import VisfeatError
from .images import IMAGE_SUFFIXES, crop_boxes, list_image_files, load_image, sample_photos

#: Crop scales of the embedded set (fraction of the photo's short side): small, medium, large.
DEFAULT_SCALES: tuple[tuple[float, float], ...] = ((0.15, 0.35), (0.35, 0.65), (0.65, 1.0))

#: Extra scikit-image photos (grayscale ones are repeated into RGB) beyond images.sample_photos().
EXTRA_PHOTOS = ("camera", "coins", "moon", "clock", "brick", "grass", "gravel", "retina", "cell")

#: Seed offset of the held-out split, so that test crops never reuse the training crops' boxes.
TEST_SEED_OFFSET = 100_003


@dataclass(frozen=True)
class Source:
    """Where an image came from: a file or a named photo, and the box ``(top, left, side)`` taken from it."""

    name: str  # file path or photo name
    box: tuple[int, int, int, int]  # top, left, height, width in the source's pixels
    size: tuple[int, int]  # (H, W) of the source

    def to_dict(self) -> dict:
        return {"name": self.name, "box": list(self.box), "size": list(self.size)}


def _resize_square(img: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Centre square crop resized to ``size``; also the box that was cropped."""
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = img[:, top : top + s, left : left + s][None]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(0, 1), (top, left, s, s)


def photo_set(extra: bool = True) -> dict[str, torch.Tensor]:
    """The sample photos (:func:`visfeat.images.sample_photos`) plus, with ``extra``, more scikit-image photos."""
    photos = dict(sample_photos())
    if extra:
        try:
            from skimage import data
        except ImportError:
            return photos
        for name in EXTRA_PHOTOS:
            try:
                arr = torch.from_numpy(getattr(data, name)().copy()).float() / 255
            except (AttributeError, OSError, ValueError, ImportError):
                continue
            img = arr[None].repeat(3, 1, 1) if arr.dim() == 2 else arr[..., :3].permute(2, 0, 1)
            photos.setdefault(name, img.contiguous())
    return photos


@dataclass
class CropSet:
    """Square crops of named photos, made on demand (the crops themselves are never all held in memory)."""

    photos: dict[str, torch.Tensor]
    boxes: list[tuple[str, int, int, int]]  # photo name, top, left, side
    size: int = 224
    label: str = "crops"

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> torch.Tensor:
        name, top, left, s = self.boxes[i]
        crop = self.photos[name][:, top : top + s, left : left + s][None]
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return out[0].clamp(0, 1)

    def source(self, i: int) -> Source:
        name, top, left, s = self.boxes[i]
        return Source(name, (top, left, s, s), tuple(self.photos[name].shape[-2:]))

    def group(self, i: int) -> str:
        """The photo crop ``i`` was cut from (crops of one photo are one group for distinct examples)."""
        return self.boxes[i][0]

    def fingerprint(self) -> str:
        """Identifies the set (boxes, photo shapes, size) for cache checks."""
        h = hashlib.sha256(repr((self.size, self.boxes)).encode())
        h.update(repr(sorted((k, tuple(v.shape)) for k, v in self.photos.items())).encode())
        return h.hexdigest()[:16]


def default_images(
    n: int = 1024,
    size: int = 224,
    split: str = "train",
    seed: int = 0,
    scales: tuple[tuple[float, float], ...] = DEFAULT_SCALES,
    photos: dict[str, torch.Tensor] | None = None,
) -> CropSet:
    """The embedded image set: ``n`` random crops of the sample photos, an equal share at each scale range.

    ``split="test"`` draws crops with another seed (held-out boxes of the same photos).
    """
    if split not in ("train", "test"):
        raise VisfeatError(f"split must be 'train' or 'test', got {split!r}")
    if n < 1:
        raise VisfeatError(f"n must be at least 1, got {n}")
    photos = photo_set() if photos is None else photos
    names = sorted(photos)
    shapes = [tuple(photos[k].shape[-2:]) for k in names]
    base = seed + (TEST_SEED_OFFSET if split == "test" else 0)
    boxes: list[tuple[str, int, int, int]] = []
    for j, sc in enumerate(scales):
        m = n // len(scales) + (1 if j < n % len(scales) else 0)
        boxes += [(names[k], t, left, s) for k, t, left, s in crop_boxes(shapes, m, sc, seed=base + 7919 * j)]
    # interleave scales and photos so that any prefix of the set is a fair sample
    order = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(base)).tolist()
    return CropSet(photos, [boxes[i] for i in order], size, label=f"embedded-{split}-{seed}")


@dataclass
class FolderImages:
    """Every image file under a folder (flat or class sub-folders), centre-cropped and resized to ``size``."""

    folder: str | Path
    size: int = 224
    files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        folder = Path(self.folder)
        if not folder.exists():
            raise VisfeatError(f"image folder {folder} does not exist; pass --images with a folder of images")
        if not folder.is_dir():
            raise VisfeatError(f"{folder} is a file, expected a folder of images (flat or with class sub-folders)")
        self.files = self.files or list_image_files(folder)
        if not self.files:
            raise VisfeatError(
                f"{folder} contains no image files; expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))} "
                "(flat or in class sub-folders)"
            )
        self.label = str(folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        """The image; raises VisfeatError when the file cannot be read."""
        return _resize_square(load_image(self.files[i]), self.size)[0]

    def source(self, i: int) -> Source:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                w, h = im.size
        except OSError:
            return Source(str(self.files[i]), (0, 0, 0, 0), (0, 0))
        s = min(h, w)
        return Source(str(self.files[i]), ((h - s) // 2, (w - s) // 2, s, s), (h, w))

    def group(self, i: int) -> str:
        """The file (each file is its own group for distinct examples; the file is not opened)."""
        return str(self.files[i])

    def fingerprint(self) -> str:
        h = hashlib.sha256(str(self.size).encode())
        for f in self.files:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{int(st.st_mtime)}".encode())
        return h.hexdigest()[:16]


def source_groups(dataset) -> torch.Tensor:
    """Each image's group ``[N]``: the smallest index of the images from the same source photo (or file).

    Uses ``dataset.group(i)`` (cheap: no file is opened), else ``dataset.source(i).name``.
    """
    name = dataset.group if hasattr(dataset, "group") else (lambda i: dataset.source(i).name)
    first: dict[str, int] = {}
    return torch.tensor([first.setdefault(name(i), i) for i in range(len(dataset))], dtype=torch.long)


def image_dataset(images: str | Path | None = None, size: int = 224, n: int = 1024, split: str = "train"):
    """A folder dataset for a path, else the embedded set of ``n`` crops."""
    if images is None:
        return default_images(n=n, size=size, split=split)
    return FolderImages(images, size)


class _Readable(torch.utils.data.Dataset):
    """``dataset[i]`` as ``(i, image, None)``, or ``(i, None, error)`` for an item that cannot be read."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return i, self.dataset[i], None
        except VisfeatError as e:
            return i, None, str(e)


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[str]]:
    """A worker's batch: the readable items' indices and stacked images (None if none), and the errors."""
    read = [(i, img) for i, img, _ in items if img is not None]
    images = torch.stack([img for _, img in read]) if read else None
    return [i for i, _ in read], images, [err for _, _, err in items if err is not None]


def _read_batches(dataset, ranges: list[range], workers: int):
    """``(indices, images or None, errors)`` per range of indices: read here, or by ``workers`` processes."""
    items = _Readable(dataset)
    if workers == 0:
        for r in ranges:
            yield _collate([items[i] for i in r])
        return
    yield from torch.utils.data.DataLoader(
        items, batch_sampler=[list(r) for r in ranges], num_workers=workers, collate_fn=_collate
    )


def iter_batches(dataset, batch_size: int, start: int = 0, stop: int | None = None, workers: int = 0):
    """Yield ``(indices, images [B, 3, S, S])`` over ``dataset[start:stop]``; unreadable items are skipped.

    ``workers`` > 0 decodes the images in that many processes (a ``DataLoader``), so that a GPU is not kept
    waiting on the decoding; the batches are the same. Raises VisfeatError if no item at all could be read.
    """
    if workers < 0:
        raise VisfeatError(f"workers must be 0 (read in this process) or more, got {workers}")
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    ranges = [range(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)]
    read_any = False
    errors: list[str] = []
    for idx, imgs, errs in _read_batches(dataset, ranges, workers):
        errors += errs
        if idx:
            read_any = True
            yield idx, imgs
    if not read_any and stop > start:
        raise VisfeatError(
            f"none of the {stop - start} images in {getattr(dataset, 'label', 'the dataset')} could be read; "
            f"first error: {errors[0] if errors else '?'}"
        )
