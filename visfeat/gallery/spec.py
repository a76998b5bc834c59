"""Gallery specs: a TOML file parsed into small dataclasses, validated whole before any compute.

Errors name the TOML key and its line, say what was wrong and the fix (the closest valid key, the
closest layers, the valid range). :func:`load_spec` checks the file alone; :func:`resolve` checks it
against the model's layer catalogue and expands every unit list, so a bad spec fails before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import tomllib

from ..errors import VisfeatError, closest

#: Render presets: ``draft`` for a quick look (the demo), ``default`` is render's own defaults, ``heavy`` the
#: recipe that reached 3.03x on Lite0's hardest channel (docs/quality.md), meant for GPUs.
PRESETS: dict[str, dict] = {
    "draft": {"steps": 64, "views": 1, "lr_schedule": "constant"},
    "default": {"steps": 256, "views": 1, "lr_schedule": "constant"},
    "heavy": {"steps": 4096, "views": 8, "lr_schedule": "cosine"},
}


class SpecError(VisfeatError, ValueError):
    """A gallery spec that cannot be built: the message names the key, its line and the fix."""


@dataclass(frozen=True)
class RenderSettings:
    """How every unit of a layer is rendered (a ``[render]`` table, overridable per layer)."""

    preset: str = "default"  # draft | default | heavy: fills steps, views and lr_schedule
    steps: int = 256
    lr: float = 0.05
    views: int = 1  # random transforms per image and step, averaged
    lr_schedule: str = "constant"  # constant | cosine
    seed: int = 0
    batch_size: int | str = "auto"  # units optimized together; "auto": 32 on CPU, from free memory on CUDA
    diverse: int = 2  # extra images per unit pushed apart by the diversity objective (0: none)
    diversity_weight: float = 0.5
    negative: bool = False  # also render the image that minimizes the unit
    preact: bool = True  # units ending in a flattening nonlinearity are optimized before it
    amp: str | None = "auto"  # auto (bf16 on CUDA, none elsewhere) | bf16 | fp16 | none

    @property
    def label(self) -> str:
        """The preset's name, or ``custom`` when its steps, views or schedule were overridden."""
        same = all(getattr(self, k) == v for k, v in PRESETS.get(self.preset, {}).items())
        return self.preset if same else "custom"

    def recipe(self) -> dict:
        """What changes the images (the key of a render result): everything but the preset's name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}


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


_TOP = {"title", "model", "images", "render", "layers", "saes", "circuits"}
_MODEL = {"name", "weights", "pretrained"}
_IMAGES = {"folder", "n", "k"}
_LAYER = {"name", "units", "at", "render"}
_SAE = {"layer", "name", "latents", "path", "variant", "expansion", "k", "epochs", "images", "render"}
_CIRCUIT = {"unit", "from", "k", "width", "name"}
_RENDER = {f.name for f in fields(RenderSettings)}
#: The TOML types each render key takes, from the defaults (a float key also takes an int; batch_size "auto").
_RENDER_TYPES = {
    k: (int, float) if isinstance(v, float) else str if v is None else type(v)
    for k, v in vars(RenderSettings()).items()
} | {"batch_size": (int, str)}
#: The values of ``amp`` a spec may give; ``none`` turns autocast off (stored as None, as before ``auto``).
AMP_VALUES = ("auto", "bf16", "fp16", "none")


class _Lines:
    """Finds the line of a key in the TOML text (tomllib does not report positions)."""

    def __init__(self, text: str):
        self.rows = text.splitlines()

    def of(self, path: tuple) -> int:
        """1-based line of ``path`` (e.g. ``("layers", 2, "units")``), else of the nearest enclosing table."""
        header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
        table: tuple = ()
        count: dict[str, int] = {}
        best = 1
        for i, row in enumerate(self.rows, 1):
            m = header.match(row)
            if m:
                name = m[2].split(".")
                if m[1] == "[[":
                    count[name[0]] = count.get(name[0], -1) + 1
                table = (name[0], count[name[0]], *name[1:]) if name[0] in count else tuple(name)
                if table == path:
                    return i
                if path[: len(table)] == table:
                    best = i
                continue
            key = re.match(r"^\s*([A-Za-z0-9_\-]+)\s*=", row)
            if not key:
                continue
            here = (*table, key[1])
            if here == path:
                return i
            if path[: len(here)] == here:
                best = i  # an inline table or array holding the key
        return best


def _where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Checker:
    def __init__(self, text: str, source: str):
        self.lines, self.source = _Lines(text), source

    def fail(self, path: tuple, msg: str):
        raise SpecError(f"{self.source}:{self.lines.of(path)}: {_where(path)}: {msg}")

    def keys(self, table: dict, allowed: set, path: tuple) -> None:
        for k in table:
            if k not in allowed:
                hint = closest(k, sorted(allowed), n=1)
                fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {', '.join(sorted(allowed))}"
                self.fail((*path, k), f"unknown key {k!r}; {fix}")

    def typed(self, table: dict, key: str, types, path: tuple, default=None):
        if key not in table:
            return default
        v = table[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            self.fail((*path, key), f"expected {names}, got {type(v).__name__} {v!r}")
        return v

    def table(self, parent: dict, key: str, path: tuple) -> dict:
        v = parent.get(key, {})
        if not isinstance(v, dict):
            self.fail((*path, key), f"expected a table ([{key}]), got {type(v).__name__}")
        return v

    def render(self, raw: dict, base: RenderSettings, path: tuple) -> RenderSettings:
        self.keys(raw, _RENDER, path)
        values = {}
        if "preset" in raw:
            preset = self.typed(raw, "preset", str, path)
            if preset not in PRESETS:
                hint = closest(preset, PRESETS, n=1)
                self.fail(
                    (*path, "preset"),
                    f"unknown preset {preset!r}; choose {', '.join(PRESETS)}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
            values = {"preset": preset, **PRESETS[preset]}
        size = raw.get("batch_size", "auto")
        if isinstance(size, bool) or not (isinstance(size, int) or size == "auto"):
            self.fail((*path, "batch_size"), f'must be a number of units (at least 1) or "auto", got {size!r}')
        for name, kind in _RENDER_TYPES.items():
            if name in raw and name != "preset":
                value = self.typed(raw, name, kind, path)
                values[name] = float(value) if kind == (int, float) else value  # lr = 1 and 1.0: one recipe
        if values.get("amp") == "none":
            values["amp"] = None
        out = replace(base, **values)
        for name in ("steps", "views", "batch_size"):
            if isinstance(getattr(out, name), int) and getattr(out, name) < 1:
                self.fail((*path, name), f"must be at least 1, got {getattr(out, name)}")
        if out.diverse < 0:
            self.fail((*path, "diverse"), f"must be 0 or more, got {out.diverse}")
        if out.lr <= 0:
            self.fail((*path, "lr"), f"must be positive, got {out.lr}")
        if out.lr_schedule not in ("constant", "cosine"):
            self.fail((*path, "lr_schedule"), f"must be 'constant' or 'cosine', got {out.lr_schedule!r}")
        if out.amp not in (None, *AMP_VALUES):
            self.fail((*path, "amp"), f"must be {', '.join(map(repr, AMP_VALUES[:-1]))} or 'none', got {out.amp!r}")
        return out


def _beside(source: str, path: str | None) -> str | None:
    """A relative path in a spec file means beside that file (a spec given as text: the current folder)."""
    if path is None or Path(path).is_absolute() or not source.endswith(".toml"):
        return path
    return str(Path(source).parent / path)


def _as_tuple(t) -> tuple:
    return t if isinstance(t, tuple) else (t,)


def parse_spec(text: str, source: str = "<spec>") -> GallerySpec:
    """Parse and check a spec's TOML text (keys, types, values); the model is not loaded."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: not valid TOML: {e}") from e
    c = _Checker(text, source)
    c.keys(raw, _TOP, ())
    model = raw.get("model")
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or "name" not in model:
        c.fail(("model",), 'name the model: model = "efficientnet_lite0" or [model] name = "timm:resnet50"')
    c.keys(model, _MODEL, ("model",))
    name = c.typed(model, "name", str, ("model",))
    weights = _beside(source, c.typed(model, "weights", str, ("model",)))
    pretrained = c.typed(model, "pretrained", bool, ("model",), True)
    images = c.table(raw, "images", ())
    c.keys(images, _IMAGES, ("images",))
    folder = c.typed(images, "folder", str, ("images",)) or None
    if folder is not None:
        path = Path(_beside(source, folder))
        if not path.is_dir():
            c.fail(
                ("images", "folder"),
                f"image folder {str(path)!r} does not exist; give a folder of images, or "
                "remove the key for the embedded set",
            )
        folder = str(path)
    n_images = c.typed(images, "n", int, ("images",), 512)
    k = c.typed(images, "k", int, ("images",), 8)
    for key, v in (("n", n_images), ("k", k)):
        if v < 1:
            c.fail(("images", key), f"must be at least 1, got {v}")
    base = c.render(c.table(raw, "render", ()), RenderSettings(), ("render",))
    layers = []
    rows = raw.get("layers", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        c.fail(("layers",), "expected [[layers]] tables")
    for i, row in enumerate(rows):
        p = ("layers", i)
        c.keys(row, _LAYER, p)
        if "name" not in row:
            c.fail(p, 'every [[layers]] entry needs name = "LAYER" (see `visfeat layers MODEL`)')
        units = row.get("units", "all")
        if not isinstance(units, (str, int, list)):
            c.fail((*p, "units"), f'expected "all", a range "0-31", or a list, got {type(units).__name__}')
        settings = c.render(c.table(row, "render", p), base, (*p, "render"))
        layers.append(LayerSpec(c.typed(row, "name", str, p), units, c.typed(row, "at", str, p), settings))
    saes = []
    for i, row in enumerate(raw.get("saes", [])):
        p = ("saes", i)
        c.keys(row, _SAE, p)
        for req in ("layer", "name"):
            if req not in row:
                c.fail(p, f"every [[saes]] entry needs {req} = ...")
        sae_name = c.typed(row, "name", str, p)
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", sae_name):
            c.fail((*p, "name"), f"{sae_name!r}: use letters, digits, '-' and '_' (it names a folder)")
        ints = {key: c.typed(row, key, int, p, getattr(SAESpec, key)) for key in ("expansion", "k", "images")}
        saes.append(
            SAESpec(
                c.typed(row, "layer", str, p),
                sae_name,
                row.get("latents", "0-15"),
                _beside(source, c.typed(row, "path", str, p)),
                c.typed(row, "variant", str, p, "topk"),
                epochs=float(c.typed(row, "epochs", (int, float), p, 2.0)),
                render=c.render(c.table(row, "render", p), base, (*p, "render")),
                **ints,
            )
        )
    circuits = []
    for i, row in enumerate(raw.get("circuits", [])):
        p = ("circuits", i)
        c.keys(row, _CIRCUIT, p)
        if "unit" not in row or "from" not in row:
            c.fail(p, 'every [[circuits]] entry needs unit = "logit:sports_car" and from = ["bn2", "blocks.6"]')
        src = row["from"]
        src = [src] if isinstance(src, str) else src
        if not isinstance(src, list) or not src or not all(isinstance(s, str) for s in src):
            c.fail((*p, "from"), 'expected a layer or a list of layers, nearest the target first: ["bn2", "blocks.6"]')
        unit = c.typed(row, "unit", str, p)
        circuits.append(
            CircuitSpec(
                unit,
                tuple(src),
                c.typed(row, "k", int, p, 3),
                c.typed(row, "width", int, p),
                c.typed(row, "name", str, p) or re.sub(r"[^A-Za-z0-9]+", "-", unit).strip("-").lower(),
            )
        )
    if not layers and not saes and not circuits:
        c.fail(("layers",), "the spec builds nothing: add [[layers]], [[saes]] or [[circuits]] entries")
    title = c.typed(raw, "title", str, (), name)
    return GallerySpec(
        title,
        name,
        weights,
        pretrained,
        folder,
        n_images,
        k,
        tuple(layers),
        tuple(saes),
        tuple(circuits),
        base,
        text,
        source,
    )


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
    return SpecError(f"{spec.path}:{_Lines(spec.text).of(path)}: {_where(path)}: {msg}")
