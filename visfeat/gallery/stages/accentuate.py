"""The accentuate stage: each unit's top dataset examples, accentuated (:func:`visfeat.accentuate.accentuate`: raised
for the unit while kept close to the photo), so the unit page shows what in each photo the unit responds to.

A section's ``accentuate = N`` (the ``[render]`` table, or a layer's ``render = {...}``; 0: off) sets how many top
examples per unit; its jobs are batches of a section's units, run after the examples stage, whose stored result
(the key its job planned for the section) names the photos."""

from __future__ import annotations

from dataclasses import dataclass

from ...images import save_image
from ..store import recipe_key
from .base import Job, Panel, Record, Stage, UnitView
from .render import objectives_for


@dataclass(frozen=True)
class AccentuateTask:
    """The store key of the section's dataset examples, and how many top examples per unit to accentuate."""

    examples: str
    n: int


@dataclass
class AccentuateRecord(Record):
    """Per unit slug, each accentuated example: its image id, the unit before and after, the mean absolute pixel
    change and the PSNR against the photo; the settings of the batch."""

    units: dict[str, list[dict]]
    settings: dict


@dataclass(frozen=True)
class Accentuation:
    """One top example and its accentuation on a page (page-relative links; ``file``: the site path)."""

    example: int
    photo: str
    src: str
    file: str
    before: float
    after: float
    distance: float
    psnr: float


@dataclass(frozen=True)
class AccentuateView(UnitView):
    items: tuple[Accentuation, ...]
    steps: int
    closeness: float

    def manifest(self) -> dict:
        return {
            "accentuations": [
                {"example": a.example, "file": a.file, "before": a.before, "after": a.after, "distance": a.distance}
                for a in self.items
            ]
        }


def settings() -> dict:
    """What ``accentuate`` is run with (its measured defaults): part of every job's recipe."""
    from ...accentuate import CLOSENESS, LR, STEPS

    return {"steps": STEPS, "lr": LR, "closeness": CLOSENESS}


class AccentuateStage(Stage):
    name = "accentuate"
    order = 35
    after = ("examples",)  # the photos are the examples stage's top images
    record = AccentuateRecord
    unit_panels = (Panel("panels/accentuate.html", "sees", 15),)

    def plan(self, p) -> list[Job]:
        found = [j for j in p.jobs if j.stage == "examples"]
        if not found:
            return []
        targets, jobs = found[0].task.targets, []
        for sec in p.sections:
            r = sec.settings
            if not r.accentuate or sec.name not in targets:
                continue
            per_job = max(1, r.batch_size // r.accentuate)  # about a render batch of images
            for start in range(0, len(sec.units), per_job):
                chunk = sec.units[start : start + per_job]
                recipe = {
                    **p.base,
                    "units": [u.unit for u in chunk],
                    "examples": targets[sec.name],
                    "n": r.accentuate,
                    "preact": r.preact,
                    "accentuate": settings(),
                    "seed": r.seed + start,
                    "sae": p.key_of("sae", sec.name),
                }
                task = AccentuateTask(targets[sec.name], r.accentuate)
                slugs = tuple(u.slug for u in chunk)
                jobs.append(Job(self.name, recipe_key(recipe), sec.name, slugs, r.seed + start, task))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        images = len(job.slugs) * min(job.task.n, plan.spec.k)
        return images * (rates.image_step(job.section) * (settings()["steps"] + 1) + 2 * rates.forward)

    def run(self, job: Job, ctx) -> AccentuateRecord:
        from ...accentuate import accentuate
        from ...examples import Examples

        sec = ctx.plan.section(job.section)
        units = [u for u in sec.units if u.slug in set(job.slugs)]
        key = job.task.examples
        ex = ctx.once(("examples", key), lambda: Examples.load(ctx.store.folder("examples", key)))
        opt, plain = objectives_for(ctx, sec, units)
        rows = [(i, t["id"]) for i, u in enumerate(units) for t in ex.top_images(u.index)[: job.task.n]]
        folder, chosen = ctx.store.folder(self.name, job.key), settings()
        record = {u.slug: [] for u in units}
        if not rows:
            return AccentuateRecord(record, chosen)
        images = len(rows)
        rate = ctx.rates.image_step(sec.name)
        result = accentuate(
            ctx.model,
            [opt[i] for i, _ in rows],
            [ctx.dataset[image_id] for _, image_id in rows],
            scored=[plain[i] for i, _ in rows],
            seed=job.seed,
            progress=False if ctx.tick is None else (lambda n: ctx.tick(n * images * rate)),
            **chosen,
        )
        a = result.settings["accentuate"]
        for k, (i, image_id) in enumerate(rows):
            slug = units[i].slug
            save_image(result.images[k], folder / f"{slug}_a{len(record[slug])}.png")
            record[slug].append(
                {
                    "example": image_id,
                    "before": a["before"][k],
                    "after": a["after"][k],
                    "distance": a["distance"][k],
                    "psnr": a["psnr"][k],
                }
            )
        return AccentuateRecord(record, chosen)

    def unit_view(self, site, section, unit, views) -> AccentuateView | None:
        from ...html import image_bytes

        if not section.settings.accentuate:
            return None
        job = site.job_of(self.name, section.name, unit.slug)
        rec, lay = site.record(job), site.layout
        page = lay.unit_page(section.name, unit.slug)
        items = []
        for j, row in enumerate(rec.units.get(unit.slug, [])):
            source = site.store.file(self.name, job.key, f"{unit.slug}_a{j}.png")

            def accentuated(path=source) -> bytes:
                return image_bytes(_open(path), None, "WEBP")

            def photo(image_id=row["example"]) -> bytes:
                return image_bytes(site.dataset[image_id], None, "WEBP")

            file = site.writer.derived(lay.unit_asset(section.name, unit.slug, f"_a{j}.webp"), accentuated, source)
            seed = site.writer.derived(lay.unit_asset(section.name, unit.slug, f"_a{j}_photo.webp"), photo, source)
            items.append(
                Accentuation(
                    row["example"],
                    lay.rel(page, seed),
                    lay.rel(page, file),
                    file,
                    row["before"],
                    row["after"],
                    row["distance"],
                    row["psnr"],
                )
            )
        return AccentuateView(tuple(items), rec.settings["steps"], rec.settings["closeness"])


def _open(path):
    """The PIL image of a stored PNG (read fully, the file closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB").copy()


STAGE = AccentuateStage()
