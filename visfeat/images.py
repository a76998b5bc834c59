"""Image I/O: load and save [3, H, W] float tensors in [0, 1], atomically; the sample photos."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import VisfeatError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as an RGB tensor [3, H, W] in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise VisfeatError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> H x W x 3 uint8."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise VisfeatError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(out: str | Path) -> None:
    """Fail early if files cannot be written to ``out``, without creating it: a later error (a bad unit or
    spec, say) then leaves nothing behind. Callers create the folder once their input is validated."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the nearest ancestor that exists
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a folder")
        probe = existing / f".visfeat-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise VisfeatError(f"cannot write to output folder {out}: {e}; pick another folder with -o") from e


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Save [3, H, W] in [0, 1] as PNG (or by the suffix), atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    Image.fromarray(to_uint8(image)).save(buf, format=fmt)
    atomic_write(path, buf.getvalue())


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively: flat or class sub-folders), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VisfeatError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def iter_images(source: str | Path | torch.Tensor | Iterable) -> Iterator[torch.Tensor]:
    """Yield [3, H, W] tensors from a folder, a file, a tensor batch or an iterable of those."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            files = list_image_files(p)
            if not files:
                raise VisfeatError(f"{p} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                yield load_image(f)
        else:
            yield load_image(p)
    elif torch.is_tensor(source):
        yield from (source if source.dim() == 4 else [source])
    else:
        for item in source:
            yield from iter_images(item)


def sample_photos() -> dict[str, torch.Tensor]:
    """Real photos that installed packages ship (scikit-image, scikit-learn, matplotlib)."""
    photos: dict[str, np.ndarray] = {}
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
            photos[name] = getattr(data, name)()
        photos["motorcycle"] = data.stereo_motorcycle()[0]
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()
        for fname, img in zip(samples.filenames, samples.images, strict=True):
            photos[Path(fname).stem] = img
    except ImportError:
        pass
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            from PIL import Image

            photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    except (ImportError, OSError, ValueError):
        pass
    if not photos:
        raise VisfeatError(
            "no sample photos found: pip install scikit-image scikit-learn matplotlib (or visfeat[data])"
        )
    return {k: torch.from_numpy(np.array(v[..., :3])).permute(2, 0, 1).float() / 255 for k, v in photos.items()}


def crop_boxes(
    shapes: Iterable[tuple[int, int]], n: int, scales: tuple[float, float] = (0.3, 1.0), seed: int = 0
) -> list[tuple[int, int, int, int]]:
    """``n`` random square boxes ``(photo, top, left, side)`` over photos of the given (H, W), cycling the photos."""
    shapes = list(shapes)
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        frac = scales[0] + (scales[1] - scales[0]) * torch.rand(1, generator=g).item()
        s = max(8, int(min(h, w) * frac))
        top = int(torch.randint(0, h - s + 1, (1,), generator=g))
        left = int(torch.randint(0, w - s + 1, (1,), generator=g))
        boxes.append((i % len(shapes), top, left, s))
    return boxes


def random_crops(
    photos: Iterable[torch.Tensor], n: int, size: int, scales: tuple[float, float] = (0.3, 1.0), seed: int = 0
) -> torch.Tensor:
    """``n`` random square crops [n, 3, size, size] from the photos, side a random fraction of the short side."""
    import torch.nn.functional as F

    photos = list(photos)
    out = []
    for k, top, left, s in crop_boxes([tuple(p.shape[-2:]) for p in photos], n, scales, seed):
        crop = photos[k][:, top : top + s, left : left + s][None]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)
