"""A gallery stage is one module and a template: a tiny stage defined here plans jobs, runs them on the stored
pictures of the render stage, caches its records, and adds a panel to every unit page and a field to the manifest,
without a line changed elsewhere. The registry orders the package's stages and refuses a bad order."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from visfeat.errors import VisfeatError
from visfeat.gallery import build_gallery, default_stages, parse_spec
from visfeat.gallery.stages import Job, Panel, Record, Stage, Stages, UnitView
from visfeat.gallery.store import recipe_key
from visfeat.images import load_image

TESTS = Path(__file__).parent

SPEC = """model = "gallery_model:tiny_gray"
[images]
n = 12
k = 2
[render]
steps = 2
batch_size = 3
diverse = 0
[[layers]]
name = "3"
units = "0-4"
[[layers]]
name = "logits"
units = [1, 2]
"""


@dataclass
class BrightnessRecord(Record):
    means: dict[str, float]


@dataclass(frozen=True)
class BrightnessView(UnitView):
    brightness: float
    stage: str

    def manifest(self) -> dict:
        return {"brightness": self.brightness}


class BrightnessStage(Stage):
    """The mean pixel value of every unit's picture: one job per render job, read from the render stage's store."""

    name = "brightness"
    order = 25
    after = ("render",)
    record = BrightnessRecord
    unit_panels = (Panel("brightness.html", "wants", 25),)
    templates = str(TESTS / "stage_templates")

    def plan(self, p) -> list[Job]:
        renders = [j for j in p.jobs if j.stage == "render"]
        return [Job(self.name, recipe_key({"of": j.key}), j.section, j.slugs, task=j.key) for j in renders]

    def cost(self, job, plan, rates) -> float:
        return 0.01

    def run(self, job, ctx) -> BrightnessRecord:
        pictures = {s: ctx.store.file("render", job.task, f"{s}.png") for s in job.slugs}
        return BrightnessRecord({s: float(load_image(path).mean()) for s, path in pictures.items()})

    def unit_view(self, site, section, unit, views) -> BrightnessView:
        job = next(j for j in site.plan.by_stage(self.name) if unit.slug in j.slugs and j.section == section.name)
        return BrightnessView(site.record(job).means[unit.slug], self.name)


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # gallery_model:tiny_gray


def test_a_stage_defined_outside_the_package_builds_caches_and_draws(tmp_path):
    stages = default_stages().add(BrightnessStage())
    assert stages.names == (
        "sae",
        "render",
        "brightness",
        "examples",
        "accentuate",
        "diff",
        "scan",
        "paths",
        "weights",
        "describe",
        "trust",
        "circuits",
    )
    spec = parse_spec(SPEC, "tiny.toml")
    report = build_gallery(spec, tmp_path / "site", progress=False, stages=stages)
    assert report.ran["brightness"] == 3  # one job per render batch: 5 units in batches of 3, and 2 classes
    site = tmp_path / "site"
    manifest = json.loads((site / "manifest.json").read_text())
    units = [u for s in manifest["sections"] for u in s["units"]]
    assert len(units) == 7
    for u in units:
        picture = load_image(site / u["files"]["image"])
        assert u["brightness"] == pytest.approx(float(picture.mean()), abs=1e-6)  # measured on the very picture
        page = (site / u["files"]["page"]).read_text()
        assert f"mean brightness {u['brightness']:.3f} (stage brightness)" in page
        assert page.index("How far to trust it") < page.index("mean brightness") < page.index("Recipe:")  # order 25
    again = build_gallery(spec, site, progress=False, stages=stages)
    assert sum(again.ran.values()) == 0 and again.reused["brightness"] == 3  # its records are cached like any
    plain = build_gallery(spec, tmp_path / "plain", progress=False)  # the package's stages alone: no trace of it
    assert "brightness" not in (tmp_path / "plain" / "manifest.json").read_text()
    assert plain.ran == {k: v for k, v in report.ran.items() if k != "brightness"}


def test_the_registry_orders_stages_and_refuses_a_stage_before_what_it_reads():
    names = default_stages().names
    assert names == (
        "sae", "render", "examples", "accentuate", "diff", "scan", "paths", "weights", "describe", "trust", "circuits"
    )  # fmt: skip

    class Early(Stage):
        name = "early"
        order = 5
        after = ("render",)

    with pytest.raises(VisfeatError, match=r"'early' reads \['render'\], which must come before it"):
        default_stages().add(Early())

    class Twin(Stage):
        name = "render"

    with pytest.raises(VisfeatError, match="distinct"):
        Stages((*default_stages(), Twin()))


def test_the_render_stage_draws_with_the_default_image_for_its_steps(tmp_path, monkeypatch):
    """The gallery's pictures use render's default image for the steps the section runs (the low-pass narrows
    for long runs), as the re-render command on a unit page does."""
    render_module = importlib.import_module("visfeat.render")  # the module (the package exports a function of its name)
    original, heard = render_module.default_param, []

    def spy(model, objectives=(), steps=None):
        heard.append(steps)
        return original(model, objectives, steps)

    monkeypatch.setattr(render_module, "default_param", spy)
    build_gallery(parse_spec(SPEC.replace("steps = 2", "steps = 3"), "tiny.toml"), tmp_path / "site", progress=False)
    assert heard == [3, 3, 3]  # one call per render batch: 5 units in batches of 3, and the 2 classes
