"""What a gallery stage is: the jobs it plans from a spec, what each costs, how one runs, the typed record it
leaves in the store, and what it adds to the site (a part of each unit page, a layer page's header, pages of its
own, fields of the manifest). ``build``, the executors and the pages loop over the stages and never name one.

A stage is a :class:`Stage` subclass in a module of :mod:`visfeat.gallery.stages` that sets ``STAGE = MyStage()``;
:func:`visfeat.gallery.stages.registry.default_stages` finds it. See ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

#: The columns of a unit page, in order: name, heading and note (the unit template draws them).
COLUMNS = (
    ("wants", "Wants", "feature visualization"),
    ("sees", "Sees", "dataset examples"),
    ("built", "Built from", "expanded weights"),
)


@dataclass(frozen=True)
class Job:
    """One unit of work: its stage, its store key (the hash of its recipe), what it is about (a section, unit
    slugs, a seed) and ``task``, the stage's own description of the work (read by that stage only)."""

    stage: str
    key: str
    section: str = ""
    slugs: tuple[str, ...] = ()
    seed: int = 0
    task: Any = field(default=None, compare=False)  # the stage's own; jobs are told apart by their key

    @property
    def size(self) -> int:
        """Units this job produces (for progress and counts)."""
        return max(1, len(self.slugs))

    @property
    def name(self) -> str:
        """A short name for logs: stage, section and unit range."""
        units = f"{self.slugs[0]}..{self.slugs[-1]}" if self.slugs else ""
        return " ".join(part for part in (self.stage, "job", self.section, units) if part)


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work on one machine: one render step of one image and view (per section, for the
    sections a calibration measured), and one image through the model. :data:`REFERENCE` holds a 2-core CPU's
    (the progress bar's scale); ``visfeat gallery build --dry-run`` measures this machine's."""

    forward: float
    step: float
    steps: Mapping[str, float] = field(default_factory=dict)

    def image_step(self, section: str) -> float:
        return self.steps.get(section, self.step)


#: EfficientNet-Lite0 at 224 px on a 2-core CPU (the demo build): the progress bar's scale when nothing is measured.
REFERENCE = Rates(forward=0.012, step=0.017)


@dataclass(frozen=True)
class Panel:
    """A part of a page a stage draws: its template (under ``gallery/templates``), the unit page's column it
    stands in and its place there (lower first)."""

    template: str
    column: str = ""
    order: int = 0


@dataclass(frozen=True)
class Label:
    """A short label for a unit and how strong its evidence is (the strongest label wins)."""

    text: str
    strength: int


@dataclass(frozen=True)
class Link:
    """A link on a page: its page-relative address and its text."""

    href: str
    text: str


@dataclass(frozen=True)
class Group:
    """A stage's own pages: a heading and their links on the model page, and what one is called on the index
    ("3 circuits")."""

    title: str
    links: tuple[Link, ...]
    noun: str


class Record:
    """Base of a stage's typed record: stored as the ``record`` of its job's ``done.json``."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        return cls(**data)


class Stage:
    """The base stage: plans nothing and adds nothing; subclasses override what they do."""

    name: ClassVar[str] = ""
    #: where the stage stands among the others (lower first), and the stages whose records or views it reads
    #: (they must come before it: they plan, run and build their views first)
    order: ClassVar[int] = 100
    after: ClassVar[tuple[str, ...]] = ()
    record: ClassVar[type[Record]] = Record
    #: parts of each unit page (a view from :meth:`unit_view` fills them) and of each layer page (:meth:`section_view`)
    unit_panels: ClassVar[tuple[Panel, ...]] = ()
    section_panels: ClassVar[tuple[Panel, ...]] = ()
    #: parts of the site's index page (a view from :meth:`index_view` fills them)
    index_panels: ClassVar[tuple[Panel, ...]] = ()
    #: grid fields a layer page may sort by, with their text (offered where some unit has the field)
    sorts: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: a folder of this stage's own templates (a stage outside the package); the package's are in gallery/templates
    templates: ClassVar[str | None] = None

    def sections(self, spec, model) -> list:
        """Sections this stage adds to the plan (an SAE's latents); checked against ``model``."""
        return []

    def check(self, spec, model) -> None:
        """Raise a spec error for this stage's part of ``spec`` that ``model`` cannot build (before any work)."""

    def plan(self, planning) -> list[Job]:
        """The jobs for a spec (:class:`visfeat.gallery.plan.Planning`); nothing is computed."""
        return []

    def cost(self, job: Job, plan, rates: Rates) -> float:
        """Estimated seconds of ``job`` at ``rates``."""
        return 0.0

    def run(self, job: Job, ctx) -> Record:
        """Do the work of ``job`` (:class:`visfeat.gallery.context.RunContext`): write its files into the store
        folder ``ctx.store.folder(job.stage, job.key)`` and return its record."""
        raise NotImplementedError(f"stage {self.name!r} plans jobs but cannot run them")

    def load(self, job: Job, store) -> Record:
        """The record of a finished job."""
        return self.record.from_json(store.record(job.stage, job.key)["record"])

    def unit_view(self, site, section, unit, views: Mapping[str, Any]) -> Any:
        """This stage's view of one unit for its panels (``views``: the earlier stages' views), or None."""
        return None

    def section_view(self, site, section) -> Any:
        """This stage's view of a layer page's section for its section panels, or None."""
        return None

    def index_view(self, site) -> Any:
        """This stage's view for its index panels (links relative to the index page), or None."""
        return None

    def pages(self, site) -> list:
        """Pages of this stage's own (:class:`visfeat.gallery.pages.Page`), written with the others."""
        return []

    def groups(self, site) -> list[Group]:
        """Headings with links on the model page."""
        return []

    def manifest(self, site) -> dict:
        """Top-level fields this stage adds to ``manifest.json``."""
        return {}


class UnitView:
    """Base of a stage's view of a unit: what it adds to the unit's manifest entry and grid row, its label."""

    def manifest(self) -> dict:
        return {}

    def grid(self) -> dict:
        return {}

    def label(self) -> Label | None:
        return None

    def warning(self) -> str | None:
        """One line for the top of the unit page when something on it is not to be believed."""
        return None


Tick = Callable[[float], None]
