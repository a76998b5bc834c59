"""The SAE stage: each ``[[saes]]`` entry trained on its layer's activations (or loaded from ``path``), evaluated on
held-out crops, and its latents added as a section of their own (``sae-NAME``), rendered, given dataset examples
and weights like any layer's units."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from ...errors import VisfeatError, unknown
from ..sections import GUnit, Section, indices
from ..spec import SAESpec, spec_error
from ..store import recipe_key
from .base import Job, Panel, Record, Stage

FILE = "sae"  # the SAE's files in its job folder: sae.safetensors + sae.json


@dataclass(frozen=True)
class SAETask:
    """One SAE: its name and layer, the file it is loaded from or its training settings, and its size."""

    name: str
    layer: str
    path: str | None
    train: dict | None  # variant, expansion, k, epochs, images
    d_sae: int


@dataclass
class SAERecord(Record):
    """Held-out reconstruction metrics and the SAE's config."""

    metrics: dict
    config: dict


@dataclass(frozen=True)
class SAEView:
    """The SAE header of its latents' layer page."""

    name: str
    layer: str
    variant: str
    d_sae: int
    k: int
    fvu: float
    pca_fvu: float | None
    l0: float
    dead_percent: float
    trained: bool


def section_name(name: str) -> str:
    return f"sae-{name}"


def _size(spec, i: int, s: SAESpec, model) -> int:
    """The SAE's number of latents, from its file or its settings (errors name the spec key)."""
    if s.layer not in model.layers:
        raise spec_error(spec, ("saes", i, "layer"), unknown("layer", s.layer, model.layers))
    if s.path is not None:
        from ...sae.io import read_meta

        try:
            return int(read_meta(s.path)["config"]["d_sae"])
        except (VisfeatError, OSError, KeyError) as e:
            raise spec_error(spec, ("saes", i, "path"), f"cannot read SAE {s.path}: {e}") from e
    from ...sae import list_variants

    if s.variant not in list_variants():
        raise spec_error(spec, ("saes", i, "variant"), unknown("SAE variant", s.variant, list_variants()))
    d_sae = s.expansion * model.layers[s.layer].channels
    if not 1 <= s.k <= d_sae:
        raise spec_error(spec, ("saes", i, "k"), f"k must be in 1..{d_sae} (the dictionary size), got {s.k}")
    return d_sae


def load_sae(ctx, name: str):
    """The trained (or loaded) SAE ``name`` of a finished SAE job, read once per process."""
    from ...sae.io import load

    job = next(j for j in ctx.plan.by_stage(STAGE.name) if j.task.name == name)
    file = ctx.store.file(STAGE.name, job.key, FILE)
    return ctx.once((STAGE.name, name), lambda: load(file, model=ctx.model, device=ctx.model.device))


def sae_file(plan, store, name: str) -> str:
    """The SAE's weights file, relative to the site (what a page's re-render command loads)."""
    job = next(j for j in plan.by_stage(STAGE.name) if j.task.name == name)
    return store.relative(STAGE.name, job.key, f"{FILE}.safetensors")


class SAEStage(Stage):
    name = "sae"
    order = 10  # first: the examples pass encodes the latents, the weights read the dictionary
    record = SAERecord
    section_panels = (Panel("panels/sae.html"),)

    def sections(self, spec, model) -> list[Section]:
        out: list[Section] = []
        for i, s in enumerate(spec.saes):
            idx = indices(spec, ("saes", i, "latents"), s.latents, _size(spec, i, s, model))
            units = tuple(GUnit(str(j), f"{s.layer}/{s.name}:{j}", j, f"latent {j}") for j in idx)
            if any(x.sae == s.name for x in out):
                raise spec_error(spec, ("saes", i, "name"), f"SAE name {s.name!r} is used twice")
            out.append(Section(section_name(s.name), s.layer, "latent", units, s.render, "all", s.name))
        return out

    def plan(self, p) -> list[Job]:
        jobs = []
        for i, s in enumerate(p.spec.saes):
            train = None if s.path else {k: getattr(s, k) for k in ("variant", "expansion", "k", "epochs", "images")}
            task = SAETask(s.name, s.layer, s.path, train, _size(p.spec, i, s, p.model))
            fields = {"layer": s.layer, "path": s.path, "train": train, "d_sae": task.d_sae}
            key = recipe_key({**p.base, "sae": s.name, **fields, "images": p.images_key if train else None})
            jobs.append(Job(self.name, key, section_name(s.name), task=task))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        train = job.task.train or {}
        return rates.forward * (train.get("images", 0) + 200) + train.get("epochs", 0) * 4

    def run(self, job: Job, ctx) -> SAERecord:
        from ... import sae as S
        from ...data import image_dataset
        from ...sae.collect import collect
        from ...sae.metrics import layer_vectors, pca_fvu, reconstruction_metrics

        t, model = job.task, ctx.model
        folder = ctx.store.folder(self.name, job.key)
        size = model.input_size[0]
        test = layer_vectors(model, t.layer, image_dataset(None, size=size, n=200, split="test"))
        if t.path:
            sae = S.load(t.path, model=model, layer=t.layer, device=model.device)
            train_vectors = None
        else:
            tr = t.train
            d_in = model.layer(t.layer).channels
            sae = S.create(tr["variant"], d_in, tr["expansion"] * d_in, k=tr["k"], model=model.name, layer=t.layer)
            data = image_dataset(ctx.plan.spec.images, size=size, n=tr["images"])
            acts = collect(model, t.layer, data, folder / "acts", progress=False)
            sae.to(model.device)
            batch = max(64, min(4096, len(acts) // 8))  # a small image set still gets several steps per epoch
            S.train(sae, acts, S.TrainConfig(epochs=tr["epochs"], batch_size=batch), progress=False)
            train_vectors = acts.sample(200_000)
        metrics = reconstruction_metrics(sae, test)
        if train_vectors is not None:
            metrics["pca_fvu"] = pca_fvu(train_vectors, test, sae.config.k)
        S.save(sae, folder / FILE, metrics=metrics)
        shutil.rmtree(folder / "acts", ignore_errors=True)
        return SAERecord(metrics, sae.config.to_dict())

    def _views(self, site) -> dict[str, SAEView]:
        out = {}
        for job in site.plan.by_stage(self.name):
            rec, t = site.record(job), job.task
            m, c = rec.metrics, rec.config
            dead = 100 * m["dead_fraction"]
            trained = t.train is not None
            out[t.name] = SAEView(
                t.name, t.layer, c["variant"], c["d_sae"], c["k"], m["fvu"], m.get("pca_fvu"), m["l0"], dead, trained
            )
        return out

    def section_view(self, site, section) -> SAEView | None:
        return self._views(site).get(section.sae) if section.sae else None

    def manifest(self, site) -> dict:
        saes = []
        for job in site.plan.by_stage(self.name):
            rec = site.record(job)
            trained = job.task.train is not None
            entry = {"name": job.task.name, "layer": job.task.layer, "metrics": rec.metrics, "config": rec.config}
            saes.append({**entry, "trained": trained})
        return {"saes": saes}


STAGE = SAEStage()
