"""The describe stage: measured descriptors of early units, and where every unit's label comes from.

Early units are those of channel and latent sections whose layer's output stride (the input's side over the
layer's) is at most :data:`EARLY_STRIDE`: on EfficientNet-Lite0 the stem, ``blocks.0`` and ``blocks.1``. Their
label (the weakest: a class label with evidence wins over it) is what their visualization shows, measured
(:func:`visfeat.labels.descriptors`: colour, orientation, spatial frequency), and their unit page adds the colour
and orientation of their kernel from the input (expanded weights from ``"input"``: one job per early channel
section, cached like any job). A unit page's label panel says which stage's label won and on what evidence,
and why the others gave none: a view offers ``label_note()`` (a sentence) and ``label_evidence()`` (its numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import VisfeatError
from ...images import atomic_write, load_image
from ...labels import Descriptor, Look, kernel_look, look
from ..store import recipe_key
from .base import Job, Label, Panel, Record, Stage, UnitView

EARLY_STRIDE = 4  # a layer at most this many input pixels per position is early
FILE = "kernels.safetensors"


@dataclass
class DescribeRecord(Record):
    """How the kernels from the input were computed (exact or linearized), or why not; the kernels themselves
    (``[units, C_in, kh, kw]`` in section order) are in the job's :data:`FILE`, described when pages are drawn."""

    mode: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Note:
    """One line of the label panel: ``kind`` is ``chosen`` (the label shown), ``also`` (a label that passed
    but lost to a stronger one), ``refused`` (no label from this evidence) or ``kernel``."""

    kind: str
    text: str


@dataclass(frozen=True)
class DescribeView(UnitView):
    """A unit's descriptor (early units only), the label shown and the stage it came from, its evidence, and
    the panel's notes."""

    descriptor: Descriptor | None
    label_text: str
    source: str | None
    evidence: dict | None
    notes: tuple[Note, ...]
    kind: str

    def manifest(self) -> dict:
        return {
            "label_source": self.source,
            "label_evidence": self.evidence,
            "descriptor": self.descriptor.to_json() if self.descriptor else None,
        }

    def label(self) -> Label | None:
        """The picture's descriptors, the weakest label (any class label with evidence wins)."""
        return Label(self.descriptor.text, 0) if self.descriptor else None


def is_early(model, section) -> bool:
    """Whether ``section``'s units are early: channels or latents of a layer whose output stride is at most
    :data:`EARLY_STRIDE` (their pictures are colours and textures that measured descriptors can name)."""
    if section.kind not in ("channel", "latent"):
        return False
    info = model.layer(section.layer)
    if info.layout != "CHW" or len(info.shape) != 3 or min(info.shape[1:]) <= 0:
        return False
    return min(model.input_size) / min(info.shape[1:]) <= EARLY_STRIDE


def picture_note(d: Descriptor) -> str:
    """How the descriptor was measured, with its numbers."""
    p = d.picture
    colour = f"hue {p.hue:.0f}°" if p.hue is not None else "gray"
    return (
        f"measured from the picture: colour from the chroma-weighted hues of its saturated pixels ({colour}, mean "
        f"chroma {p.chroma:.2f}), orientation from its structure tensor (coherence {p.coherence:.2f}; below 0.25 "
        f"none), spatial frequency at the peak of its power per octave ({p.frequency:.3f} cycles per pixel)"
    )


class DescribeStage(Stage):
    name = "describe"
    order = 45
    after = ("render", "examples", "weights")  # reads the picture and every label before it
    record = DescribeRecord
    unit_panels = (Panel("panels/label.html", "wants", 25),)  # below the picture and the trust panel

    def plan(self, p) -> list[Job]:
        jobs = []
        for sec in p.sections:
            if sec.kind == "channel" and is_early(p.model, sec):
                recipe = {**p.base, "describe": sec.layer, "units": [u.index for u in sec.units]}
                jobs.append(Job(self.name, recipe_key(recipe), sec.name))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        return 1.0

    def run(self, job: Job, ctx) -> DescribeRecord:
        """The kernel of each unit of an early section from the input (expanded weights), stored."""
        from safetensors.torch import save

        from ...circuits import expand

        sec = ctx.plan.section(job.section)
        try:
            e = expand(ctx.model, "input", sec.layer, channels=[u.index for u in sec.units])
        except VisfeatError as err:
            return DescribeRecord(None, str(err))
        atomic_write(ctx.store.folder(self.name, job.key) / FILE, save({"kernels": e.weights.float().contiguous()}))
        return DescribeRecord(e.mode)

    def _kernel(self, site, section, unit) -> tuple[Look | None, str | None]:
        """The unit's kernel from the input, described, and how it was computed (None: no job or no kernel)."""
        from safetensors.torch import load_file

        job = next((j for j in site.plan.by_stage(self.name) if j.section == section.name), None)
        rec = site.record(job) if job is not None else None
        if rec is None or rec.mode is None:
            return None, None
        kernels = site.once(
            (self.name, section.name), lambda: load_file(str(site.store.file(self.name, job.key, FILE)))
        )
        return kernel_look(kernels["kernels"][section.units.index(unit)]), rec.mode

    def _descriptor(self, site, section, unit) -> tuple[Descriptor, str | None]:
        """The unit's descriptors from its stored picture (the render stage's PNG) and its kernel."""
        job = site.job_of("render", section.name, unit.slug)
        picture = look(load_image(site.store.file("render", job.key, f"{unit.slug}.png")))
        kernel, mode = self._kernel(site, section, unit)
        return Descriptor(picture, kernel), mode

    def unit_view(self, site, section, unit, views) -> DescribeView:
        descriptor = mode = None
        if "render" in views and is_early(site.model, section):
            descriptor, mode = self._descriptor(site, section, unit)
        own = Label(descriptor.text, 0) if descriptor else None
        found = [(name, v, v.label()) for name, v in views.items()] + [(self.name, None, own)]
        labelled = [(name, v, lab) for name, v, lab in found if lab is not None]
        chosen = max(labelled, key=lambda t: t[2].strength, default=None)  # the first of the strongest, as pages
        notes = []
        for name, v, lab in found:
            text = getattr(v, "label_note", lambda: None)() if v is not None else None
            if text is None:
                continue
            if chosen is not None and name == chosen[0]:
                notes.insert(0, Note("chosen", f"Label “{lab.text}”, {text}."))
            elif lab is not None:
                notes.append(Note("also", f"Also a label, not shown (weaker evidence): {text}."))
            else:
                notes.append(Note("refused", f"No class label: {text}."))
        if descriptor is not None:
            kind = "chosen" if chosen is not None and chosen[0] == self.name else "also"
            head = f"Label “{descriptor.text}”, a descriptor" if kind == "chosen" else "Descriptor"
            notes.insert(0 if kind == "chosen" else len(notes), Note(kind, f"{head} {picture_note(descriptor)}."))
            if descriptor.kernel is not None:
                k = f"Its kernel from the input ({mode} expanded weights): {descriptor.kernel.text(frequency=False)}."
                notes.append(Note("kernel", k))
        evidence = None
        if chosen is not None:
            name, v, _ = chosen
            if v is None:
                evidence = {"source": self.name, **descriptor.to_json()}
            else:
                evidence = getattr(v, "label_evidence", lambda: None)() or {"source": name}
        return DescribeView(
            descriptor=descriptor,
            label_text=chosen[2].text if chosen else "",
            source=chosen[0] if chosen else None,
            evidence=evidence,
            notes=tuple(notes),
            kind=section.kind,
        )


STAGE = DescribeStage()
