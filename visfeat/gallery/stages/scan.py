"""The scan stage (a spec with ``[scan]``): a trigger search (:func:`visfeat.scan.scan`, Neural Cleanse through the
one render loop) over the classes most likely to hide a backdoor; with ``[base]``, triggers that flip the changed
model but not the base. A "suspected backdoors" page ranks the scanned classes by anomaly index with the recovered
masks, patterns and pasted photos; the index shows the suspects; a scanned class's page shows its own search."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..store import recipe_key
from .base import Group, Job, Link, Panel, Record, Stage, UnitView
from .diff import base_recipe, load_base

KIND = "scan"
PAGE = "suspected-backdoors"
PICTURES = ("trigger", "mask", "pattern")  # per suspected class, then its pasted photos


@dataclass
class ScanRecord(Record):
    """``scan.json`` as :meth:`visfeat.scan.ScanResult.save` wrote it (settings, flagged, classes ranked)."""

    result: dict


@dataclass(frozen=True)
class Suspect:
    """A scanned class as pages show it: its record, its rank, its page (when in the gallery) and its pictures."""

    index: int
    name: str
    rank: int
    anomaly: float
    mask_size: float
    success: float
    flagged: bool
    href: str | None
    pictures: tuple[tuple[str, str], ...]  # (caption, link)


@dataclass(frozen=True)
class ScanView(UnitView):
    """A scanned class's own search, on its unit page."""

    suspect: Suspect
    scanned: int
    threshold: float
    page: str

    def manifest(self) -> dict:
        s = self.suspect
        return {"scan": {"anomaly": s.anomaly, "mask_size": s.mask_size, "success": s.success, "flagged": s.flagged}}

    def grid(self) -> dict:
        return {"anomaly": self.suspect.anomaly}

    def warning(self) -> str | None:
        if not self.suspect.flagged:
            return None
        return (
            f"Suspected backdoor target: a trigger of {100 * self.suspect.mask_size:.1f}% of the image flips "
            f"{100 * self.suspect.success:.0f}% of held-out photos to this class (anomaly index "
            f"{self.suspect.anomaly:.1f} of {self.scanned} classes scanned)."
        )


@dataclass(frozen=True)
class SuspectsView:
    """The suspected-backdoors summary: every scanned class ranked, the suspects with their pictures."""

    classes: tuple[Suspect, ...]
    flagged: tuple[Suspect, ...]
    shown: tuple[Suspect, ...]  # the classes with pictures (flagged, or the top ones)
    threshold: float
    settings: dict
    page: str | None


class ScanStage(Stage):
    name = "scan"
    order = 38
    record = ScanRecord
    unit_panels = (Panel("panels/scan.html", "wants", 17),)
    index_panels = (Panel("panels/scan_summary.html"),)
    sorts = (("anomaly", "trigger search: anomaly index"),)

    def plan(self, p) -> list[Job]:
        s = p.spec.scan
        if s is None:
            return []
        recipe = {**p.base, "scan": (s.classes, s.steps, s.images, s.seed, s.rounds), "kind": KIND}
        recipe["scan_base"] = base_recipe(p.spec) if p.spec.base is not None else None
        return [Job(self.name, recipe_key(recipe), "", (), s.seed)]

    def cost(self, job: Job, plan, rates) -> float:
        from ...scan import PER_STEP

        s = plan.spec.scan
        pair = 2 if plan.spec.base is not None else 1  # two models per step with a base
        shown = min(PER_STEP, s.images - s.images // 2)  # photos pasted per step
        return rates.step * s.classes * shown * s.steps * pair * min(s.rounds, 1.5)  # a retry round for some

    def run(self, job: Job, ctx) -> ScanRecord:
        import torch

        from ...data import iter_batches
        from ...scan import scan

        s = ctx.plan.spec.scan
        images = torch.cat([x for _, x in iter_batches(ctx.dataset, 64, 0, s.images)])
        base = load_base(ctx) if ctx.plan.spec.base is not None else None
        folder = ctx.store.folder(self.name, job.key)
        settings = {"classes": s.classes, "steps": s.steps, "rounds": s.rounds, "seed": s.seed}
        scan(ctx.model, images, base=base, progress=False, out=folder, **settings)
        return ScanRecord(json.loads((folder / "scan.json").read_text()))

    def _view(self, site, page: str, full: str | None) -> SuspectsView | None:
        jobs = site.plan.by_stage(self.name)
        if not jobs:
            return None
        job, lay = jobs[0], site.layout
        result = site.record(job).result
        suspects = []
        for rank, c in enumerate(result["classes"], 1):
            found = site.find_unit(f"logit:{c['index']}")
            href = lay.rel(page, lay.unit_page(found[0].name, found[1].slug)) if found else None
            pictures = []
            for f in c.get("files", []):
                stored = site.store.file(self.name, job.key, f)
                what = f.rsplit("/", 1)[-1].removesuffix(".png")
                link = site.writer.bytes(lay.page_asset(KIND, PAGE, f.replace("/", "_")), stored.read_bytes())
                pictures.append((what.replace("_", " "), lay.rel(page, link)))
            pictures.sort(key=lambda p: (PICTURES + (p[0],)).index(p[0]) if p[0] in PICTURES else len(PICTURES))
            suspects.append(
                Suspect(
                    c["index"],
                    c["name"],
                    rank,
                    c["anomaly"],
                    c["mask_size"],
                    c["success"],
                    c["flagged"],
                    href,
                    tuple(pictures),
                )
            )
        flagged = tuple(s for s in suspects if s.flagged)
        shown = tuple(s for s in suspects if s.pictures)
        threshold = result["settings"].get("flag", {}).get("anomaly", 2.0)
        return SuspectsView(tuple(suspects), flagged, shown, threshold, result["settings"], full)

    def unit_view(self, site, section, unit, views) -> ScanView | None:
        if section.kind != "class" or not site.plan.by_stage(self.name):
            return None
        page = site.layout.unit_page(section.name, unit.slug)
        view = site.once(("scan", section.name), lambda: self._view(site, page, None))  # one folder: the same links
        mine = next((s for s in view.classes if s.index == unit.index), None)
        if mine is None:
            return None
        full = site.layout.rel(page, site.layout.page(KIND, PAGE))
        return ScanView(mine, len(view.classes), view.threshold, full)

    def index_view(self, site) -> SuspectsView | None:
        lay = site.layout
        return self._view(site, lay.index, lay.rel(lay.index, lay.page(KIND, PAGE)))

    def pages(self, site) -> list:
        path = site.layout.page(KIND, PAGE)
        view = self._view(site, path, None)
        if view is None:
            return []
        return [site.page(path, "scan.html", "suspected backdoors", "suspected backdoors", v=view)]

    def groups(self, site) -> list[Group]:
        if not site.plan.by_stage(self.name):
            return []
        lay = site.layout
        link = Link(lay.rel(lay.model_page(), lay.page(KIND, PAGE)), "suspected backdoors: the trigger search")
        return [Group("Trigger search", (link,), "scan")]

    def manifest(self, site) -> dict:
        jobs = site.plan.by_stage(self.name)
        if not jobs:
            return {}
        result = site.record(jobs[0]).result
        return {"scan": {k: result[k] for k in ("flagged", "median_mask_size", "settings", "classes") if k in result}}


STAGE = ScanStage()
