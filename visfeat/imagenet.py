"""ImageNet-1k class names (torchvision's list), and lookup of a class by name."""

from __future__ import annotations

from functools import lru_cache

from .errors import UnitError, unknown


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_index(name: str, labels: tuple[str, ...] | None = None) -> int:
    """Index of a class by (case-insensitive) name, e.g. ``"espresso"`` -> 967."""
    labels = labels or imagenet_labels()
    lowered = [lab.lower() for lab in labels]
    key = name.strip().lower().replace("_", " ")
    if key in lowered:
        return lowered.index(key)
    raise UnitError(unknown("ImageNet class", name, labels) + "; or give the class index, e.g. logit:967")


def class_name(labels: tuple[str, ...] | None, index: int) -> str:
    """The name of class ``index`` in ``labels``, or ``"class INDEX"`` when there is none."""
    return labels[index] if labels is not None and 0 <= index < len(labels) else f"class {index}"
