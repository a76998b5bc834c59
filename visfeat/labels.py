"""Honest unit labels: a class name only with evidence that passes a test, and measured descriptors otherwise.

Three kinds of evidence, each a pure function of numbers a gallery already holds:

* :func:`class_concentration`: the majority class among a unit's top-k dataset examples and how unlikely that
  concentration is under the image set's own class mix (an exact hypergeometric tail: k distinct images drawn
  at random from the set; corrected for having picked the class after looking, over every class of the set).
* :func:`weight_share`: the class a unit promotes most through its expanded weights to the logits, its share of
  the unit's positive class weight and its margin over the runner-up (the test: a clear margin).
* :func:`descriptors`: what a picture shows, measured: dominant hue or an opponent pair, the orientation of
  its stripes (structure tensor) and its spatial frequency (peak of the power spectrum), and the same for a
  first-layer kernel.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

ALPHA = 0.01  # a class concentration passes at this corrected p-value
MIN_COUNT = 2  # one example is not a concentration
MARGIN = 1.5  # a promoted class passes when its weight is at least this times the runner-up's

#: Hue names, one per 30 degrees of the hue circle from red (0) through yellow (60), green (120), blue (240).
HUES = (
    "red", "orange", "yellow", "yellow-green", "green", "green", "cyan", "azure", "blue", "violet", "magenta", "pink",
)  # fmt: skip
CHROMA_MIN = 0.1  # a pixel counts towards the hue histogram when max - min of its RGB is at least this
COLOURFUL = 0.08  # below this mean chroma a picture is "gray"
KERNEL_COLOUR = 0.25  # a kernel with at least this share of colour energy is coloured
OPPONENT = 0.5  # a second hue at least 90 degrees away with this share of the first's mass: a pair "red–green"
DARK = 0.45  # a hue whose pixels' mean value (max of RGB) is below this is "dark"
ORIENTED = 0.25  # structure-tensor coherence below this: "no orientation"
SCALES = ((1 / 16, "coarse"), (1 / 6, "medium"), (1.0, "fine"))  # upper bounds in cycles per pixel


# --- class concentration among the top examples ------------------------------------------------------------


@dataclass(frozen=True)
class Concentration:
    """The top examples' majority class, its count among the ``k`` that have a prediction, the count the image
    set's class mix expects, the uncorrected tail probability and the corrected p-value; ``passes`` at ``alpha``."""

    cls: int
    count: int
    k: int
    expected: float
    share: float  # the class's share of the image set's predictions
    tail: float  # P(count or more of k | the set's mix), that class alone
    p_value: float  # corrected for choosing the class after looking (over every class of the set)
    classes: int  # classes in the image set's mix
    alpha: float
    passes: bool

    def to_json(self) -> dict:
        return {
            "class": self.cls,
            "count": self.count,
            "k": self.k,
            "expected": round(self.expected, 4),
            "share": round(self.share, 6),
            "tail": float(f"{self.tail:.4g}"),
            "p_value": float(f"{self.p_value:.4g}"),
            "classes": self.classes,
            "alpha": self.alpha,
            "passes": self.passes,
        }


def class_counts(pred_class: torch.Tensor | Sequence[int]) -> dict[int, int]:
    """Images per predicted class over a whole image set (``pred_class [N]``; -1, an unread image, is left out)."""
    values = pred_class.tolist() if isinstance(pred_class, torch.Tensor) else list(pred_class)
    return dict(Counter(int(c) for c in values if int(c) >= 0))


def hypergeom_tail(count: int, k: int, K: int, N: int) -> float:
    """P(X >= count) for X the number of class images among ``k`` distinct images drawn from ``N`` of which ``K``
    are of the class (exact, in integers)."""
    if count <= 0:
        return 1.0
    top = min(k, K)
    if count > top:
        return 0.0
    return sum(math.comb(K, x) * math.comb(N - K, k - x) for x in range(count, top + 1)) / math.comb(N, k)


def _tails(k: int, K: int, N: int) -> list[float]:
    """P(X >= x) for x = 0..k (hypergeometric, see :func:`hypergeom_tail`)."""
    return [hypergeom_tail(x, k, K, N) for x in range(k + 1)]


def class_concentration(
    top_classes: Sequence[int], base: Mapping[int, int] | torch.Tensor, alpha: float = ALPHA
) -> Concentration | None:
    """Is the majority class of a unit's top examples (``top_classes``, -1 left out) more common than the image
    set's own mix (``base``: images per class, or every image's class ``[N]``) makes likely? None without
    predictions.

    The tail is exact for k distinct images drawn at random from the set (hypergeometric). The class is chosen
    after looking, so the p-value is a discrete Bonferroni bound over every class c of the set: the sum of
    P(class c alone reaches a tail as small as the one observed), where a class too rare to reach it adds
    nothing (Tarone). Ties between majority classes go to the rarer one (the smaller tail)."""
    counts = class_counts(base) if isinstance(base, torch.Tensor) else {int(c): int(n) for c, n in base.items() if n}
    seen = Counter(int(c) for c in top_classes if int(c) >= 0)
    k = sum(seen.values())
    if k == 0:
        return None
    for c, n in seen.items():  # a top example is an image of the set: its class is in the mix
        counts[c] = max(counts.get(c, 0), n)
    total = sum(counts.values())
    table: dict[int, list[float]] = {}

    def tails(K: int) -> list[float]:
        if K not in table:
            table[K] = _tails(k, K, total)
        return table[K]

    cls, count = min(seen.items(), key=lambda cn: (-cn[1], tails(counts[cn[0]])[cn[1]], cn[0]))
    tail = tails(counts[cls])[count]
    bound = 0.0
    for K, classes in Counter(counts.values()).items():
        reach = [t for t in tails(K)[1:] if t <= tail * (1 + 1e-9)]
        bound += classes * (max(reach) if reach else 0.0)
    p = min(1.0, max(bound, tail))
    share = counts[cls] / total
    passes = count >= MIN_COUNT and p <= alpha
    return Concentration(cls, count, k, k * share, share, tail, p, len(counts), alpha, passes)


# --- the promoted class's share of the unit's class weight -------------------------------------------------


@dataclass(frozen=True)
class WeightShare:
    """The class a unit promotes most (its weight to the logits), that weight's share of the unit's positive
    class weight, its margin over the runner-up (inf when no other class is promoted) and whether it passes."""

    cls: int
    weight: float
    share: float
    margin: float
    classes: int
    threshold: float
    passes: bool

    def to_json(self) -> dict:
        return {
            "class": self.cls,
            "weight": float(f"{self.weight:.4g}"),
            "share": round(self.share, 4),
            "margin": None if math.isinf(self.margin) else round(self.margin, 3),
            "classes": self.classes,
            "threshold": self.threshold,
            "passes": self.passes,
        }


def weight_share(weights: torch.Tensor, margin: float = MARGIN) -> WeightShare | None:
    """The top promoted class of a unit's weights to every class (``[classes]``), and whether it stands out: its
    weight is at least ``margin`` times the runner-up's. A unit that spreads its weight over many classes has a
    top class barely above the second (on EfficientNet-Lite0's bn2 the median ratio is 1.09); None when the
    unit promotes no class."""
    w = weights.detach().float().flatten()
    if len(w) == 0 or float(w.max()) <= 0:
        return None
    vals, idx = w.topk(min(2, len(w)))
    top = float(vals[0])
    second = float(vals[1]) if len(vals) > 1 else 0.0
    ratio = top / second if second > 0 else math.inf
    share = top / float(w.clamp_min(0).sum())
    return WeightShare(int(idx[0]), top, share, ratio, len(w), margin, ratio >= margin)


# --- descriptors measured from a picture and a kernel ------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """What one picture shows: its colour (a hue name, an opponent pair "red–green", or None: gray), the
    orientation of its stripes in degrees (0 horizontal, 90 vertical, counter-clockwise; None: isotropic) with
    its coherence in [0, 1], and its peak spatial frequency in cycles per pixel with a name."""

    colour: str | None
    hue: float | None
    chroma: float
    orientation: float | None
    coherence: float
    frequency: float
    scale: str

    def text(self, frequency: bool = True) -> str:
        """``"green–magenta, 45°, fine"``."""
        angle = f"{round(self.orientation / 15) * 15 % 180}°" if self.orientation is not None else "no orientation"
        parts = [self.colour or "gray", angle] + ([self.scale] if frequency else [])
        return ", ".join(parts)

    def to_json(self) -> dict:
        return {
            "colour": self.colour,
            "hue": None if self.hue is None else round(self.hue, 1),
            "chroma": round(self.chroma, 4),
            "orientation": None if self.orientation is None else round(self.orientation, 1),
            "coherence": round(self.coherence, 4),
            "frequency": round(self.frequency, 4),
            "scale": self.scale,
        }


@dataclass(frozen=True)
class Descriptor:
    """A unit's measured descriptors: of its visualization and, where known, of its first-layer kernel."""

    picture: Look
    kernel: Look | None = None

    @property
    def text(self) -> str:
        """The label text: the picture's descriptors."""
        return self.picture.text()

    def to_json(self) -> dict:
        return {"picture": self.picture.to_json(), "kernel": self.kernel.to_json() if self.kernel else None}


def _colour(image: torch.Tensor, colourful: bool | None = None) -> tuple[str | None, float | None, float]:
    """The picture's dominant hue name (or a pair of hues), its hue in degrees and its mean chroma. ``colourful``
    overrides the :data:`COLOURFUL` test (a kernel's is its colour energy, see :func:`colour_fraction`)."""
    if image.shape[0] != 3:
        return None, None, 0.0
    pixels = image.flatten(1)
    value = pixels.max(0).values
    chroma = value - pixels.min(0).values
    mean = float(chroma.mean())
    keep = chroma >= CHROMA_MIN
    if not (mean >= COLOURFUL if colourful is None else colourful) or not bool(keep.any()):
        return None, None, mean
    (r, g, b), weight, value = pixels[:, keep], chroma[keep], value[keep]
    hue = torch.rad2deg(torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    n = len(HUES)
    bins = torch.round(hue / (360 / n)).long() % n
    mass = torch.bincount(bins, weights=weight.double(), minlength=n)
    near = mass + 0.5 * (mass.roll(1) + mass.roll(-1))  # a hue and half its neighbours: a peak's whole mass
    top = int(mass.argmax())
    far = [j for j in range(n) if min(abs(j - top), n - abs(j - top)) >= n // 4]  # 90 degrees or more away
    other = max(far, key=lambda j: float(near[j]))
    angle = top * 360 / n
    if float(near[other]) >= OPPONENT * float(near[top]) and HUES[other] != HUES[top]:
        first, second = sorted((top, other))
        return f"{HUES[first]}–{HUES[second]}", angle, mean
    mine = bins == top
    lightness = float((value[mine] * weight[mine]).sum() / weight[mine].sum())
    return ("dark " if lightness < DARK else "") + HUES[top], angle, mean


def colour_fraction(kernel: torch.Tensor) -> float:
    """The share of a kernel's energy ``[C_in, kh, kw]`` that is colour (its deviation from the mean over input
    channels): 0 for a kernel that weighs every channel alike, 1 for a purely colour-opponent one."""
    k = kernel.detach().double()
    total = float((k**2).sum())
    return float(((k - k.mean(0, keepdim=True)) ** 2).sum()) / total if total > 0 and k.shape[0] > 1 else 0.0


def _orientation(image: torch.Tensor) -> tuple[float | None, float]:
    """The stripes' orientation in degrees (None below :data:`ORIENTED` coherence) and the coherence, from the
    structure tensor summed over the colour channels (so that isoluminant colour edges count)."""
    img = image.double()
    gx = (img[:, 1:-1, 2:] - img[:, 1:-1, :-2]) / 2  # central differences: no pixel shared by gx and gy
    gy = -(img[:, 2:, 1:-1] - img[:, :-2, 1:-1]) / 2  # y up: angles counter-clockwise as seen
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    energy = jxx + jyy
    if energy <= 1e-12:
        return None, 0.0
    coherence = math.hypot(jxx - jyy, 2 * jxy) / energy
    gradient = 0.5 * math.degrees(math.atan2(2 * jxy, jxx - jyy))
    return ((gradient + 90) % 180 if coherence >= ORIENTED else None), coherence


def _frequency(image: torch.Tensor) -> tuple[float, str]:
    """The peak of the power per octave (f² times the radially averaged power spectrum of the mean-removed,
    Hann-windowed picture, summed over colour channels) in cycles per pixel, and its name from :data:`SCALES`."""
    img = image.float()
    h, w = img.shape[-2:]
    if min(h, w) < 4:
        return 0.0, SCALES[0][1]
    window = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    x = (img - img.mean((1, 2), keepdim=True)) * window
    power = (torch.fft.rfft2(x).abs() ** 2).sum(0).flatten()  # half the plane: the spectrum is symmetric
    fy, fx = torch.fft.fftfreq(h), torch.fft.rfftfreq(w)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
    n = min(h, w) // 2
    ring = torch.round(radius * 2 * n).long()  # ring i holds frequencies near i / (2 n) cycles per pixel
    keep = (ring >= 1) & (ring <= n)
    total = torch.bincount(ring[keep], weights=power[keep].double(), minlength=n + 1)
    count = torch.bincount(ring[keep], minlength=n + 1)
    f = torch.arange(n + 1, dtype=torch.float64) / (2 * n)
    octave = total / count.clamp_min(1) * f**2
    if float(octave.max()) <= 0:
        return 0.0, SCALES[0][1]
    peak = float(f[int(octave.argmax())])
    return peak, next(name for bound, name in SCALES if peak < bound or bound == SCALES[-1][0])


def look(image: torch.Tensor, colourful: bool | None = None) -> Look:
    """Colour, orientation and spatial frequency of a picture ``[C, H, W]`` in [0, 1] (C = 1 or 3); ``colourful``
    overrides the test of whether it has a colour at all."""
    image = image.detach().float().cpu()
    colour, hue, chroma = _colour(image, colourful)
    orientation, coherence = _orientation(image)
    frequency, scale = _frequency(image)
    return Look(colour, hue, chroma, orientation, coherence, frequency, scale)


def kernel_picture(kernel: torch.Tensor) -> torch.Tensor:
    """A kernel ``[C_in, kh, kw]`` as the picture that drives it: 0.5 plus the weights over twice their largest
    magnitude (what excites it bright in its colour, what inhibits it in the opposite one)."""
    k = kernel.detach().float().cpu()
    scale = float(k.abs().max()) or 1.0
    return (0.5 + k / (2 * scale)).clamp(0, 1)


def kernel_look(kernel: torch.Tensor) -> Look:
    """Colour and orientation of a kernel ``[C_in, kh, kw]``, read from :func:`kernel_picture`; it has a colour
    when :func:`colour_fraction` is at least :data:`KERNEL_COLOUR` (most of a kernel is near zero, so the
    picture's mean chroma says little)."""
    return look(kernel_picture(kernel), colour_fraction(kernel) >= KERNEL_COLOUR)


def descriptors(image: torch.Tensor, kernel: torch.Tensor | None = None) -> Descriptor:
    """A unit's measured descriptors from its visualization ``[C, H, W]`` in [0, 1] and, for units whose
    expanded weights from the input are known, the kernel ``[C_in, kh, kw]`` (its colour and orientation)."""
    return Descriptor(look(image), kernel_look(kernel) if kernel is not None else None)
