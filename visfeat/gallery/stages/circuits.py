"""The circuits stage: each ``[[circuits]]`` entry built from the weights (``circuits.build_circuit``) with a
feature visualization of every node, drawn as a page of its own by the circuit templates; a unit page links the
circuits it appears in, and each node links its unit page."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...errors import VisfeatError, unknown
from ...imagenet import class_index
from ...images import atomic_write, save_image
from ...units import parse_unit
from ..spec import CircuitSpec, spec_error
from ..store import recipe_key
from .base import Group, Job, Link, Panel, Record, Stage, UnitView

KIND = "circuits"  # the folder of circuit pages in a model's site


@dataclass
class CircuitRecord(Record):
    nodes: list[str]


@dataclass(frozen=True)
class CircuitsView(UnitView):
    """The circuits a unit appears in: links to their pages."""

    links: list[Link]


def _canonical(unit: str, model) -> str:
    """A circuit node's unit string as the gallery names it (class logits by index)."""
    u = parse_unit(unit)
    if u.is_logit and isinstance(u.index, str):
        return f"logit:{class_index(u.index, model.labels)}"
    return str(u) if not u.is_logit else f"logit:{u.index}"


class CircuitsStage(Stage):
    name = "circuits"
    order = 60
    record = CircuitRecord
    unit_panels = (Panel("panels/circuits.html", "built", 20),)

    def check(self, spec, model) -> None:
        for i, c in enumerate(spec.circuits):
            for src in c.sources:
                if src not in model.layers:
                    raise spec_error(spec, ("circuits", i, "from"), unknown("layer", src, model.layers))
            try:
                u = parse_unit(c.unit)
                if "/" not in u.layer:
                    u.validate(model)
            except VisfeatError as e:
                raise spec_error(spec, ("circuits", i, "unit"), str(e)) from e

    def plan(self, p) -> list[Job]:
        jobs = []
        settings = p.resolve(p.model, p.spec.render).recipe()
        for c in p.spec.circuits:
            recipe = {**p.base, "circuit": c.unit, "from": c.sources, "k": c.k, "width": c.width, "settings": settings}
            jobs.append(Job(self.name, recipe_key(recipe), c.name, task=c))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        c: CircuitSpec = job.task
        nodes = 1 + sum(min(c.width or 2 * c.k, 2 * c.k * (c.width or 2 * c.k)) for _ in c.sources)
        return 2 + nodes * plan.spec.render.steps * rates.step

    def run(self, job: Job, ctx) -> CircuitRecord:
        from ...circuits import build_circuit, render_nodes
        from ...circuits.html import node_image_name

        c, r = job.task, ctx.plan.spec.render
        circuit = build_circuit(ctx.model, c.unit, list(c.sources), k=c.k, width=c.width)
        settings = dict(steps=r.steps, seed=r.seed, lr=r.lr, views=r.views, lr_schedule=r.lr_schedule, settle=r.settle)
        render_nodes(ctx.model, circuit, progress=False, **settings)
        folder = ctx.store.folder(self.name, job.key)
        for n in circuit.nodes:
            save_image(n.image, folder / node_image_name(n.unit))
        atomic_write(folder / "circuit.json", json.dumps(circuit.to_dict(), indent=1).encode())
        return CircuitRecord([n.unit for n in circuit.nodes])

    def _data(self, site, job: Job) -> dict:
        file = site.store.file(self.name, job.key, "circuit.json")
        return site.once((self.name, job.key), lambda: json.loads(file.read_text()))

    def _members(self, site) -> dict[str, list[Job]]:
        """Per gallery unit string, the circuit jobs it is a node of."""

        def index() -> dict[str, list[Job]]:
            out: dict[str, list[Job]] = {}
            for job in site.plan.by_stage(self.name):
                for n in self._data(site, job)["nodes"]:
                    out.setdefault(_canonical(n["unit"], site.model), []).append(job)
            return out

        return site.once((self.name, "members"), index)

    def unit_view(self, site, section, unit, views) -> CircuitsView | None:
        jobs = self._members(site).get(unit.unit)
        if not jobs:
            return None
        page = site.layout.unit_page(section.name, unit.slug)
        return CircuitsView([Link(site.layout.rel(page, site.layout.page(KIND, j.section)), j.section) for j in jobs])

    def pages(self, site) -> list:
        from ...circuits.html import circuit_context, node_image_name

        lay, out = site.layout, []
        for job in site.plan.by_stage(self.name):
            data = self._data(site, job)
            path = lay.page(KIND, job.section)
            images, links = {}, {}
            for n in data["nodes"]:
                fname = node_image_name(n["unit"])
                stored = site.store.file(self.name, job.key, fname).read_bytes()
                images[n["unit"]] = lay.rel(path, site.writer.bytes(lay.page_asset(KIND, job.section, fname), stored))
                found = site.find_unit(_canonical(n["unit"], site.model))
                if found is not None:
                    links[n["unit"]] = lay.rel(path, lay.unit_page(found[0].name, found[1].slug))
            context = circuit_context(data, images, links, site.plan.model_name)
            out.append(
                site.page(path, "circuit.html", f"circuit {data['target']}", "circuit " + job.section, c=context)
            )
        return out

    def groups(self, site) -> list[Group]:
        jobs = site.plan.by_stage(self.name)
        if not jobs:
            return []
        model_page = site.layout.model_page()
        links = []
        for job in jobs:
            href = site.layout.rel(model_page, site.layout.page(KIND, job.section))
            links.append(Link(href, self._data(site, job)["target"]))
        return [Group("Circuits", tuple(links), "circuit")]

    def manifest(self, site) -> dict:
        entries = []
        for job in site.plan.by_stage(self.name):
            page = site.layout.page(KIND, job.section)
            entries.append({"name": job.section, "page": page, "target": self._data(site, job)["target"]})
        return {"circuits": entries}


STAGE = CircuitsStage()
