"""The render stage: every section's units in batches through ``visfeat.render`` (the picture, ``diverse`` more
pushed apart by the diversity objective, and the negative one when asked), scored on held-out transforms
(``visfeat.evaluate``). A unit page shows the pictures, the recipe and the command that re-renders them exactly."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ... import objectives as O
from ...errors import VisfeatError
from ...hooks import LOGITS
from ...html import image_bytes
from ...images import atomic_write, save_image
from ...units import parse_unit
from ..site import THUMB
from ..store import recipe_key
from .base import Job, Panel, Record, Stage, UnitView
from .sae import load_sae, sae_file


@dataclass(frozen=True)
class UnitScores:
    """A unit's objective at the last step, held out (fresh transforms) and, when rendered, its negative's."""

    final: float
    held_out: float
    negative: float | None = None


@dataclass
class RenderRecord(Record):
    """Per unit slug its scores; the settings ``render`` reported; the batch's seed and slugs."""

    units: dict[str, UnitScores]
    settings: dict
    seed: int
    slugs: list[str]

    @classmethod
    def from_json(cls, data: dict) -> RenderRecord:
        return cls(
            {k: UnitScores(**v) for k, v in data["units"].items()}, data["settings"], data["seed"], data["slugs"]
        )


@dataclass(frozen=True)
class RenderView(UnitView):
    """A unit's pictures (page-relative links; ``files``: their site paths), scores, recipe and command."""

    files: dict
    fv: str
    thumb: str
    grid_thumb: str
    diverse: list[str]
    neg: str | None
    final: float
    held_out: float
    negative: float | None
    settings: dict
    recipe: str  # the settings in words (RenderSettings.summary)
    seed: int
    preact: bool
    command: str

    def manifest(self) -> dict:
        return {
            "held_out": self.held_out,
            "final": self.final,
            "negative": self.negative,
            "seed": self.seed,
            "command": self.command,
            "files": self.files,
            "settings": self.settings,
        }

    def grid(self) -> dict:
        return {"held_out": self.held_out, "thumb": self.grid_thumb}


def objectives_for(ctx, section, units) -> tuple[list[O.Objective], list[O.Objective]]:
    """Per unit: the objective to optimize (before a flattening nonlinearity when ``preact``) and the plain one
    that scores the result (the unit's own activation, as its dataset examples measure it)."""
    if section.kind == "latent":
        from ...sae.objectives import sae_feature

        sae = load_sae(ctx, section.sae)
        opt = [sae_feature(sae, u.index) for u in units]
        return opt, [sae_feature(sae, u.index, activated=True) for u in units]
    parsed = [parse_unit(u.unit) for u in units]
    plain = [p.objective() for p in parsed]
    if not section.settings.preact:
        return plain, plain
    return [p.objective(ctx.model, preact=True) for p in parsed], plain


def diversity_layer(model, section) -> str:
    """The layer whose Gram matrices the diversity term compares: the unit's own, or for class logits the
    deepest spatial or token layer of the model."""
    if section.layer != LOGITS:
        return section.layer
    layers = [n for n, i in model.layers.items() if i.layout in ("CHW", "tokens") and n != LOGITS]
    if not layers:
        raise VisfeatError("diverse images of class logits need a spatial layer; set diverse = 0 for logits")
    return layers[-1]


def command(plan, store, section, job: Job, unit_text: str) -> str:
    """The command that re-renders this unit's batch exactly, with its seed and settings (run from the site's
    folder for SAE latents, whose SAE file lives in the site's store)."""
    r, spec = section.settings, plan.spec
    first = next(i for i, u in enumerate(section.units) if u.slug == job.slugs[0])
    batch = section.units[first : first + len(job.slugs)]
    idx = [u.index for u in batch]
    ids = f"{idx[0]}-{idx[-1]}" if len(idx) > 1 and idx == list(range(idx[0], idx[-1] + 1)) else ",".join(map(str, idx))
    weights = ["--weights", spec.weights] if spec.weights else []
    if section.kind == "latent":
        parts = ["visfeat", "sae", "inspect", sae_file(plan, store, section.sae), "--render", ids]
        parts += ["--reduce", "mean", "--model", spec.model, *weights]
    else:
        parts = ["visfeat", "render", spec.model, *weights]
        if section.kind == "class":
            parts += [u.unit for u in batch]
        else:
            at = batch[0].unit.partition("@")[2]
            parts.append(f"{section.layer}:{ids}" + (f"@{at}" if at else ""))
        parts += ["--batch-size", str(len(batch))] + ([] if r.preact else ["--no-preact"])
        parts += ["--amp", r.amp] if r.amp else []
    parts += ["--steps", str(r.steps), "--lr", f"{r.lr:g}", "--views", str(r.views), "--lr-schedule", r.lr_schedule]
    parts += ["--settle", f"{r.settle:g}"]
    parts += ["--seed", str(job.seed), "-o", "out/rerender"]
    return " ".join(shlex.quote(p) for p in parts) + f"   # {unit_text} is one of this batch"


class RenderStage(Stage):
    name = "render"
    order = 20
    after = ("sae",)
    record = RenderRecord
    unit_panels = (Panel("panels/render.html", "wants", 10), Panel("panels/recipe.html", "wants", 30))

    def plan(self, p) -> list[Job]:
        jobs = []
        for sec in p.sections:
            r = sec.settings
            for start in range(0, len(sec.units), r.batch_size):
                chunk = sec.units[start : start + r.batch_size]
                seed = r.seed + start
                recipe = {
                    **p.base,
                    "units": [u.unit for u in chunk],
                    "settings": r.recipe(),
                    "seed": seed,
                    "sae": p.key_of("sae", sec.name),
                }
                jobs.append(Job(self.name, recipe_key(recipe), sec.name, tuple(u.slug for u in chunk), seed))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        r = plan.section(job.section).settings
        return rates.image_step(job.section) * len(job.slugs) * r.steps * r.views * r.images_per_unit

    def run(self, job: Job, ctx) -> RenderRecord:
        from ...render import default_param, evaluate, render

        sec = ctx.plan.section(job.section)
        r = sec.settings
        units = [u for u in sec.units if u.slug in set(job.slugs)]
        opt, plain = objectives_for(ctx, sec, units)
        common = dict(steps=r.steps, lr=r.lr, lr_schedule=r.lr_schedule, settle=r.settle, views=r.views, amp=r.amp)
        rate = ctx.rates.image_step(sec.name)

        def progress(images: int):  # one render step of ``images`` images, in the build bar's seconds
            return False if ctx.tick is None else (lambda n: ctx.tick(n * images * r.views * rate))

        param = default_param(ctx.model, plain, r.steps)
        folder = ctx.store.folder(self.name, job.key)
        main = render(ctx.model, opt, param=param, seed=job.seed, progress=progress(len(opt)), **common)
        held = evaluate(ctx.model, plain, main.images)
        scores = {u.slug: {"final": float(main.final[i]), "held_out": float(held[i])} for i, u in enumerate(units)}
        for i, u in enumerate(units):
            save_image(main.images[i], folder / f"{u.slug}.png")
        if r.diverse:
            d = r.diverse_images
            reps = [o for o in opt for _ in range(d)]
            obj = O.per_image(reps) + r.diversity_weight * O.diversity(diversity_layer(ctx.model, sec), group=d)
            div = render(
                ctx.model,
                obj,
                batch=len(reps),
                param=param,
                seed=job.seed + 7_919,
                progress=progress(len(reps)),
                **common,
            )
            for i, u in enumerate(units):
                for j in range(r.diverse):
                    save_image(div.images[i * d + j], folder / f"{u.slug}_d{j}.png")
        if r.negative:
            neg = render(
                ctx.model,
                [-o for o in opt],
                param=param,
                seed=job.seed + 104_729,
                progress=progress(len(opt)),
                **common,
            )
            held_neg = evaluate(ctx.model, plain, neg.images)
            for i, u in enumerate(units):
                save_image(neg.images[i], folder / f"{u.slug}_neg.png")
                scores[u.slug]["negative"] = float(held_neg[i])
        settings = {k: v for k, v in main.settings.items() if k not in ("device",)}
        atomic_write(folder / "settings.json", json.dumps(settings, indent=1).encode())
        return RenderRecord({k: UnitScores(**v) for k, v in scores.items()}, settings, job.seed, list(job.slugs))

    def unit_view(self, site, section, unit, views) -> RenderView:
        from PIL import Image

        job = site.job_of(self.name, section.name, unit.slug)
        rec = site.record(job)
        scores, r, lay = rec.units[unit.slug], section.settings, site.layout
        page = lay.unit_page(section.name, unit.slug)

        def copy(suffix: str) -> str:
            data = site.store.file(self.name, job.key, f"{unit.slug}{suffix}.png").read_bytes()
            return site.writer.bytes(lay.unit_asset(section.name, unit.slug, f"{suffix}.png"), data)

        source = site.store.file(self.name, job.key, f"{unit.slug}.png")

        def thumbnail() -> bytes:
            with Image.open(source) as im:
                return image_bytes(im, THUMB, "WEBP")

        files = {
            "page": page,
            "image": copy(""),
            "thumbnail": site.writer.derived(lay.thumbnail(section.name, unit.slug), thumbnail, source),
            "diverse": [copy(f"_d{j}") for j in range(r.diverse)],
        }
        if r.negative:
            files["negative"] = copy("_neg")
        return RenderView(
            files=files,
            fv=lay.rel(page, files["image"]),
            thumb=lay.rel(page, files["thumbnail"]),
            grid_thumb=lay.rel(lay.section_page(section.name), files["thumbnail"]),
            diverse=[lay.rel(page, d) for d in files["diverse"]],
            neg=lay.rel(page, files["negative"]) if r.negative else None,
            final=scores.final,
            held_out=scores.held_out,
            negative=scores.negative,
            settings=rec.settings,
            recipe=r.summary,
            seed=job.seed,
            preact=rec.settings.get("preact", True),
            command=command(site.plan, site.store, section, job, unit.unit),
        )


STAGE = RenderStage()
