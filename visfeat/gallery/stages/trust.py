"""The trust stage: one panel that puts together how far a unit's page can be believed, from what the other
stages measured: the activation ratio (picture ÷ best photo), the path check (does the picture reach the unit the
way photos do), how many distinct photos its examples come from, and where its label comes from. A unit whose
picture is not to be believed says so in one line at the top of its page; ``flags`` go to the grid and manifest."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Panel, Stage, UnitView

#: Short names of what can be wrong with a unit's page (the manifest's ``flags``; docs/trust.md explains each).
DIFFERENT_PATH = "different-path"
BELOW_PHOTO = "below-best-photo"
FEW_PHOTOS = "examples-from-few-photos"


@dataclass(frozen=True)
class TrustView(UnitView):
    held_out: float | None
    best: float | None
    images_seen: int | None
    ratio: float | None
    path: float | None  # path similarity (the paths stage's score), None without a check or a judgement
    path_checked: bool  # the paths stage checked the unit (its score may still be None: photos too scattered)
    path_floor: float | None  # the photos' agreement a layer needs to be judged
    path_threshold: float | None
    path_layers: tuple[tuple[str, float, float, float], ...]  # per upstream layer: cosine, natural median, relative
    photos: int | None  # distinct source photos among the top examples
    examples: int | None
    label_source: str  # where the unit's label comes from, or why it has none
    flags: tuple[str, ...]

    @property
    def flag(self) -> bool:
        return bool(self.flags)

    def manifest(self) -> dict:
        return {"ratio": self.ratio, "flags": list(self.flags)}

    def grid(self) -> dict:
        return {"ratio": self.ratio, "flag": self.flag, "flags": list(self.flags)}

    def warning(self) -> str | None:
        """One line for the top of the unit page when its picture is not to be believed."""
        if DIFFERENT_PATH in self.flags:
            return (
                f"Do not trust this picture: it excites the unit along another path than the photos that excite it "
                f"(path similarity {self.path:.2f}, below {self.path_threshold:.2f}); trust the examples instead."
            )
        if BELOW_PHOTO in self.flags:
            return (
                f"This picture excites the unit less than a real photo does ({self.ratio:.2f}x): "
                "it may not show what the unit responds to most."
            )
        return None


def _label_source(views) -> str:
    """Where the unit's shown label comes from: the view whose label is the strongest."""
    found = [(lab, name) for name, v in views.items() if (lab := v.label()) is not None]
    if not found:
        return "no label: none passed its test"
    lab, name = max(found, key=lambda f: f[0].strength)
    where = {"weights": "the model's weights", "examples": "its top examples (significance test)"}
    return f"{lab.text} — from {where.get(name, 'the picture (measured)')}"


def _photos(site, section, unit, seen) -> tuple[int | None, int | None]:
    """Distinct source photos among the unit's top examples, and how many examples there are."""
    if seen is None:
        return None, None
    from .examples import examples_of

    ex = examples_of(site, section)
    ids = [t["id"] for t in ex.top_images(unit.index)]
    names = {ex.sources[i].name for i in ids if i in ex.sources}
    return (len(names) if names else None), len(ids)


class TrustStage(Stage):
    name = "trust"
    order = 50
    after = ("render", "examples", "paths")
    unit_panels = (Panel("panels/trust.html", "wants", 20),)

    def unit_view(self, site, section, unit, views) -> TrustView | None:
        shown, seen, path = views.get("render"), views.get("examples"), views.get("paths")
        if shown is None or seen is None:
            return None
        held, best = shown.held_out, seen.best
        ratio = held / best if best and best > 0 else None
        photos, n = _photos(site, section, unit, seen)
        flags = []
        if path is not None and path.flagged:
            flags.append(DIFFERENT_PATH)
        if ratio is not None and ratio < 1:
            flags.append(BELOW_PHOTO)
        if photos is not None and n and n >= 4 and photos <= n // 4:
            flags.append(FEW_PHOTOS)
        return TrustView(
            held_out=held,
            best=best,
            images_seen=seen.images_seen,
            ratio=ratio,
            path=path.score if path is not None else None,
            path_checked=path is not None,
            path_floor=path.min_calibration if path is not None else None,
            path_threshold=path.threshold if path is not None else None,
            path_layers=tuple(zip(path.layers, path.per_layer, path.calibration, path.relative, strict=True))
            if path is not None
            else (),
            photos=photos,
            examples=n,
            label_source=_label_source(views),
            flags=tuple(flags),
        )


STAGE = TrustStage()
