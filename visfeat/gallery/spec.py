"""Gallery specs: a TOML file parsed into small dataclasses, checked whole before any compute.

Errors name the TOML key and its line, say what was wrong and the fix (the closest valid key, the valid range).
:func:`load_spec` checks the file alone; :func:`visfeat.gallery.plan.make_plan` then checks it against the model's
layer catalogue and expands every unit list, so a bad spec fails before any work and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import tomllib

from ..errors import VisfeatError
from ..presets import PRESETS, get_preset
from .checks import Checker, SpecError, error_at

_DEFAULT = PRESETS["default"]


@dataclass(frozen=True)
class RenderSettings:
    """How every unit of a layer is rendered (a ``[render]`` table, overridable per layer)."""

    preset: str = "default"  # a budget from visfeat.presets (draft | default | heavy): fills steps, lr, views, ...
    steps: int = _DEFAULT.steps
    lr: float = _DEFAULT.lr
    views: int = _DEFAULT.views  # random transforms per image and step, averaged
    lr_schedule: str = _DEFAULT.lr_schedule  # constant | cosine
    settle: float = _DEFAULT.settle  # share of the steps, at the end, on the picture without random transforms
    seed: int = 0
    batch_size: int | str = "auto"  # units optimized together; "auto": 32 on CPU, from free memory on CUDA
    diverse: int = 2  # extra images per unit pushed apart by the diversity objective (0: none)
    diversity_weight: float = 0.5
    negative: bool = False  # also render the image that minimizes the unit
    preact: bool = True  # units ending in a flattening nonlinearity are optimized before it
    amp: str | None = "auto"  # auto (bf16 on CUDA, none elsewhere) | bf16 | fp16 | none
    accentuate: int = 0  # top dataset examples per unit accentuated (visfeat.accentuate; 0: none)

    @property
    def label(self) -> str:
        """The preset's name, or ``custom`` when what it sets was overridden."""
        p = PRESETS.get(self.preset)
        same = p is not None and all(getattr(self, k) == getattr(p, k) for k in PRESET_KEYS)
        return self.preset if same else "custom"

    @property
    def summary(self) -> str:
        """The recipe in words, as the index and every unit page print it."""
        views = f"{self.views} view{'s' if self.views > 1 else ''}"
        settle = f", last {100 * self.settle:g}% of steps untransformed" if self.settle else ""
        return f"{self.steps} steps, {views}, {self.lr_schedule} lr {self.lr:g}{settle}"

    @property
    def diverse_images(self) -> int:
        """Images per unit in the diverse render: the diversity term needs two, so one extra picture renders two."""
        return max(2, self.diverse) if self.diverse else 0

    @property
    def images_per_unit(self) -> int:
        """Images rendered per unit: the picture, the diverse ones and the negative one."""
        return 1 + self.diverse_images + self.negative

    def recipe(self) -> dict:
        """What changes the images (the key of a render result): everything but the preset's name and the
        accentuation count (another stage's work: :mod:`visfeat.gallery.stages.accentuate`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("preset", "accentuate")}


#: What a preset sets.
PRESET_KEYS = ("steps", "lr", "views", "lr_schedule", "settle")
#: The values of ``amp`` a spec may give; ``none`` turns autocast off (stored as None).
AMP_VALUES = ("auto", "bf16", "fp16", "none")


@dataclass(frozen=True)
class LayerSpec:
    """A ``[[layers]]`` entry: the layer, which units (``"all"``, ``"0-31"``, a list, class names) and settings."""

    name: str
    units: object = "all"
    at: str | None = None  # token layers: cls | mean | patch=r,c (the token selector of every unit)
    render: RenderSettings = field(default_factory=RenderSettings)


@dataclass(frozen=True)
class SAESpec:
    """A ``[[saes]]`` entry: an SAE on ``layer``, loaded from ``path`` or trained with ``train`` settings."""

    layer: str
    name: str
    latents: object = "0-15"
    path: str | None = None
    variant: str = "topk"
    expansion: int = 4
    k: int = 8
    epochs: float = 2.0
    images: int = 400  # embedded training crops
    render: RenderSettings = field(default_factory=RenderSettings)


@dataclass(frozen=True)
class CircuitSpec:
    """A ``[[circuits]]`` entry: a target unit and its source layers, nearest first."""

    unit: str
    sources: tuple[str, ...]
    k: int = 3
    width: int | None = None
    name: str = ""


@dataclass(frozen=True)
class BaseSpec:
    """A ``[base]`` table: the model before the change (same architecture, other weights); makes a diff gallery."""

    name: str
    weights: str | None = None
    pretrained: bool = True


@dataclass(frozen=True)
class ScanSpec:
    """A ``[scan]`` table: a trigger search (:func:`visfeat.scan.scan`) over the classes most likely to hide one."""

    classes: int = 20  # candidates: with a base, the classes the change raised most on the photos
    steps: int = 200
    images: int = 48  # clean crops of the image set: half to fit the triggers, half held out
    seed: int = 0
    rounds: int = 3  # searches per class, lam / 3 each time, while its trigger fails (visfeat.scan)


@dataclass(frozen=True)
class GallerySpec:
    """A whole gallery: one model, its layers, SAEs and circuits, the image set, and the spec's own text."""

    title: str
    model: str
    weights: str | None
    pretrained: bool
    images: str | None  # a folder, or None for the embedded set
    n_images: int
    k: int  # top dataset examples per unit
    layers: tuple[LayerSpec, ...]
    saes: tuple[SAESpec, ...]
    circuits: tuple[CircuitSpec, ...]
    render: RenderSettings
    text: str = ""
    path: str = ""
    distinct: bool = True  # top examples (images, patches, quantile images) from distinct source photos
    base: BaseSpec | None = None  # a diff gallery: what changed from this model to ``model``
    scan: ScanSpec | None = None


_TOP = {"title", "model", "base", "images", "render", "layers", "saes", "circuits", "scan"}
_MODEL = {"name", "weights", "pretrained"}
_IMAGES = {"folder", "n", "k", "distinct"}
_LAYER = {"name", "units", "at", "render"}
_SAE = {"layer", "name", "latents", "path", "variant", "expansion", "k", "epochs", "images", "render"}
_CIRCUIT = {"unit", "from", "k", "width", "name"}
_SCAN = {"classes", "steps", "images", "seed", "rounds"}
_NAME = r"[A-Za-z0-9_\-]+"  # SAE and circuit names name a folder or a file
_NAME_HINT = "use letters, digits, '-' and '_' (it names a folder)"


def _render(c: Checker, raw: dict, base: RenderSettings, path: tuple) -> RenderSettings:
    """A ``[render]`` table (or a layer's ``render = {...}``) on top of ``base``."""
    c.keys(raw, {f.name for f in fields(RenderSettings)}, path)
    values: dict = {}
    if "preset" in raw:
        name = c.string(raw, "preset", path)
        try:
            preset = get_preset(name)
        except VisfeatError as e:
            c.fail((*path, "preset"), str(e))
        values = {"preset": name, **{k: getattr(preset, k) for k in PRESET_KEYS}}
    size = raw.get("batch_size", "auto")
    if size != "auto" and (isinstance(size, bool) or not isinstance(size, int)):
        c.fail((*path, "batch_size"), f'must be a number of units (at least 1) or "auto", got {size!r}')
    found = {
        "batch_size": raw.get("batch_size") if size == "auto" else c.integer(raw, "batch_size", path),
        "steps": c.integer(raw, "steps", path),
        "lr": c.number(raw, "lr", path, positive=True),
        "views": c.integer(raw, "views", path),
        "lr_schedule": c.choice(raw, "lr_schedule", path, ("constant", "cosine")),
        "settle": c.number(raw, "settle", path),
        "seed": c.integer(raw, "seed", path, least=0),
        "diverse": c.integer(raw, "diverse", path, least=0),
        "diversity_weight": c.number(raw, "diversity_weight", path),
        "negative": c.boolean(raw, "negative", path),
        "preact": c.boolean(raw, "preact", path),
        "amp": c.choice(raw, "amp", path, AMP_VALUES),
        "accentuate": c.integer(raw, "accentuate", path, least=0),
    }
    values |= {k: v for k, v in found.items() if v is not None}
    settle = values.get("settle", base.settle)
    if not 0 <= settle < 1:
        c.fail((*path, "settle"), f"must be a share of the steps in [0, 1) (e.g. 0.125), got {settle:g}")
    if values.get("amp") == "none":
        values["amp"] = None
    return replace(base, **values)


def _beside(source: str, path: str | None) -> str | None:
    """A relative path in a spec file means beside that file (a spec given as text: the current folder)."""
    if path is None or Path(path).is_absolute() or not source.endswith(".toml"):
        return path
    return str(Path(source).parent / path)


def _tables(c: Checker, raw: dict, key: str) -> list[dict]:
    """The ``[[key]]`` entries (an array of tables)."""
    rows = raw.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        c.fail((key,), f"expected [[{key}]] tables")
    return rows


def _units(c: Checker, row: dict, key: str, path: tuple, default):
    """A units value: ``"all"``, a range or list string, a whole number, or a list of numbers and class names,
    each unit named once."""
    units = row.get(key, default)
    if isinstance(units, bool) or not isinstance(units, (str, int, list)):
        c.fail((*path, key), f'expected "all", a range "0-31", or a list, got {type(units).__name__}')
    if isinstance(units, list):
        if not units:
            c.fail((*path, key), "selects no units; list at least one")
        seen = set()
        for item in units:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                c.fail((*path, key), f"expected unit numbers, ranges or class names, got {item!r}")
            if item in seen:
                c.fail((*path, key), f"{item!r} is listed twice; name each unit once")
            seen.add(item)
    return units


def _layers(c: Checker, raw: dict, base: RenderSettings) -> list[LayerSpec]:
    out = []
    for i, row in enumerate(_tables(c, raw, "layers")):
        p = ("layers", i)
        c.keys(row, _LAYER, p)
        if "name" not in row:
            c.fail(p, 'every [[layers]] entry needs name = "LAYER" (see `visfeat layers MODEL`)')
        settings = _render(c, c.table(row, "render", p), base, (*p, "render"))
        at = c.string(row, "at", p, hint="a token selector: mean, cls, patch=r,c or reg=i")
        out.append(LayerSpec(c.string(row, "name", p), _units(c, row, "units", p, "all"), at, settings))
    return out


def _saes(c: Checker, raw: dict, base: RenderSettings, source: str) -> list[SAESpec]:
    out = []
    for i, row in enumerate(_tables(c, raw, "saes")):
        p = ("saes", i)
        c.keys(row, _SAE, p)
        for req in ("layer", "name"):
            if req not in row:
                c.fail(p, f"every [[saes]] entry needs {req} = ...")
        out.append(
            SAESpec(
                c.string(row, "layer", p),
                c.string(row, "name", p, pattern=_NAME, hint=_NAME_HINT),
                _units(c, row, "latents", p, SAESpec.latents),
                _beside(source, c.string(row, "path", p)),
                c.string(row, "variant", p, SAESpec.variant),
                c.integer(row, "expansion", p, SAESpec.expansion),
                c.integer(row, "k", p, SAESpec.k),
                c.number(row, "epochs", p, SAESpec.epochs, positive=True),
                c.integer(row, "images", p, SAESpec.images),
                _render(c, c.table(row, "render", p), base, (*p, "render")),
            )
        )
    return out


def _circuits(c: Checker, raw: dict) -> list[CircuitSpec]:
    out = []
    for i, row in enumerate(_tables(c, raw, "circuits")):
        p = ("circuits", i)
        c.keys(row, _CIRCUIT, p)
        if "unit" not in row or "from" not in row:
            c.fail(p, 'every [[circuits]] entry needs unit = "logit:sports_car" and from = ["bn2", "blocks.6"]')
        src = row["from"]
        src = [src] if isinstance(src, str) else src
        if not isinstance(src, list) or not src or not all(isinstance(s, str) and s for s in src):
            c.fail((*p, "from"), 'expected a layer or a list of layers, nearest the target first: ["bn2", "blocks.6"]')
        unit = c.string(row, "unit", p)
        name = c.string(row, "name", p, pattern=_NAME, hint="use letters, digits, '-' and '_' (it names a page)")
        out.append(
            CircuitSpec(
                unit,
                tuple(src),
                c.integer(row, "k", p, 3),
                c.integer(row, "width", p),
                name or re.sub(r"[^A-Za-z0-9]+", "-", unit).strip("-").lower(),
            )
        )
    return out


def _base(c: Checker, raw: dict, model: str, source: str) -> BaseSpec | None:
    """The ``[base]`` table (or ``base = "NAME"``): the model's name unless given, its weights beside the spec."""
    if "base" not in raw:
        return None
    row = {"name": raw["base"]} if isinstance(raw["base"], str) else c.table(raw, "base", ())
    c.keys(row, _MODEL, ("base",))
    weights = _beside(source, c.string(row, "weights", ("base",)))
    name = c.string(row, "name", ("base",), model)
    return BaseSpec(name, weights, c.boolean(row, "pretrained", ("base",), True))


def _scan(c: Checker, raw: dict) -> ScanSpec | None:
    if "scan" not in raw:
        return None
    row = c.table(raw, "scan", ())
    c.keys(row, _SCAN, ("scan",))
    d = ScanSpec()
    return ScanSpec(
        c.integer(row, "classes", ("scan",), d.classes),
        c.integer(row, "steps", ("scan",), d.steps),
        c.integer(row, "images", ("scan",), d.images, least=8),  # half fit the triggers, half test them
        c.integer(row, "seed", ("scan",), d.seed, least=0),
        c.integer(row, "rounds", ("scan",), d.rounds),
    )


def parse_spec(text: str, source: str = "<spec>") -> GallerySpec:
    """Parse and check a spec's TOML text (keys, types, values); the model is not loaded."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: not valid TOML: {e}") from e
    c = Checker(text, source)
    c.keys(raw, _TOP, ())
    model = raw.get("model")
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or "name" not in model:
        c.fail(("model",), 'name the model: model = "efficientnet_lite0" or [model] name = "timm:resnet50"')
    c.keys(model, _MODEL, ("model",))
    name = c.string(model, "name", ("model",))
    weights = _beside(source, c.string(model, "weights", ("model",)))
    pretrained = c.boolean(model, "pretrained", ("model",), True)
    images = c.table(raw, "images", ())
    c.keys(images, _IMAGES, ("images",))
    folder = c.string(images, "folder", ("images",))
    if folder is not None:
        path = Path(_beside(source, folder))
        if not path.is_dir():
            c.fail(
                ("images", "folder"),
                f"image folder {str(path)!r} does not exist; give a folder of images, or "
                "remove the key for the embedded set",
            )
        folder = str(path)
    n_images = c.integer(images, "n", ("images",), 512)
    k = c.integer(images, "k", ("images",), 8)
    distinct = c.boolean(images, "distinct", ("images",), True)
    if k > n_images:
        c.fail(("images", "k"), f"asks for {k} top examples per unit from n = {n_images} images; lower k or raise n")
    base = _render(c, c.table(raw, "render", ()), RenderSettings(), ("render",))
    layers, saes, circuits = _layers(c, raw, base), _saes(c, raw, base, source), _circuits(c, raw)
    diff_base, scan = _base(c, raw, name, source), _scan(c, raw)
    if not layers and not saes and not circuits and scan is None:
        c.fail(("layers",), "the spec builds nothing: add [[layers]], [[saes]], [[circuits]] or [scan] entries")
    title = c.string(raw, "title", (), name)
    spec = (title, name, weights, pretrained, folder, n_images, k, tuple(layers), tuple(saes), tuple(circuits), base)
    return GallerySpec(*spec, text, source, distinct=distinct, base=diff_base, scan=scan)


def load_spec(path: str | Path) -> GallerySpec:
    """Read and check a spec file (see :func:`parse_spec`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise SpecError(f"spec {path} does not exist; gallery specs live in gallery/, e.g. gallery/demo.toml") from e
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read spec {path}: {e}") from e
    return parse_spec(text, str(path))


def spec_error(spec: GallerySpec, path: tuple, msg: str) -> SpecError:
    """An error about ``path`` of a parsed spec, with the line it came from."""
    return error_at(spec.text, spec.path, path, msg)
