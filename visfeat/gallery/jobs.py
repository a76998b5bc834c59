"""The jobs of a gallery build, each a thin client of what visfeat already has: ``render`` and ``evaluate``,
``dataset_examples_many``, SAE ``collect``/``train``, ``expand`` and ``build_circuit``. No new numerics.

Every job writes its files into its store folder and finishes with a small record; :func:`run_job` is
what the local build (and any other executor) calls for one job.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import objectives as O
from ..errors import VisfeatError
from ..hooks import LOGITS
from ..images import atomic_write, save_image
from .plan import Job, Plan, Section, image_size
from .store import Store


@dataclass
class Context:
    """What every job needs: the plan, the loaded model, the store, the image set, and loaded SAEs."""

    plan: Plan
    model: object
    store: Store
    dataset: object
    saes: dict = field(default_factory=dict)
    tick: Callable[[float], None] | None = None  # progress: called with units of work as render steps finish

    def sae(self, name: str):
        """The SAE ``name`` from its finished job (loaded once)."""
        if name not in self.saes:
            from ..sae.io import load

            job = next(j for j in self.plan.by_stage("sae") if j.extra["name"] == name)
            self.saes[name] = load(self.store.file("sae", job.key, "sae"), model=self.model, device=self.model.device)
        return self.saes[name]


def run_job(ctx: Context, job: Job) -> dict:
    """Run one job and mark it finished in the store; returns its record."""
    start = time.perf_counter()
    record = {"sae": _sae, "examples": _examples, "render": _render, "weights": _weights, "circuits": _circuit}[
        job.stage
    ](ctx, job)
    record["seconds"] = round(time.perf_counter() - start, 3)
    ctx.store.finish(job.stage, job.key, record)
    return record


# --- SAEs ---------------------------------------------------------------------------------------------


def _sae(ctx: Context, job: Job) -> dict:
    from .. import sae as S
    from ..data import image_dataset
    from ..sae.collect import collect
    from ..sae.metrics import layer_vectors, pca_fvu, reconstruction_metrics

    x, model = job.extra, ctx.model
    folder = ctx.store.folder("sae", job.key)
    size = image_size(model)
    test = layer_vectors(model, x["layer"], image_dataset(None, size=size, n=200, split="test"))
    if x["path"]:
        sae = S.load(x["path"], model=model, layer=x["layer"], device=model.device)
        train_vectors = None
    else:
        t = x["train"]
        d_in = model.layer(x["layer"]).channels
        sae = S.create(t["variant"], d_in, t["expansion"] * d_in, k=t["k"], model=model.name, layer=x["layer"])
        data = image_dataset(ctx.plan.spec.images, size=size, n=t["images"])
        acts = collect(model, x["layer"], data, folder / "acts", progress=False)
        sae.to(model.device)
        batch = max(64, min(4096, len(acts) // 8))  # a small image set still gets several steps per epoch
        S.train(sae, acts, S.TrainConfig(epochs=t["epochs"], batch_size=batch), progress=False)
        train_vectors = acts.sample(200_000)
    metrics = reconstruction_metrics(sae, test)
    if train_vectors is not None:
        metrics["pca_fvu"] = pca_fvu(train_vectors, test, sae.config.k)
    S.save(sae, folder / "sae", metrics=metrics)
    shutil.rmtree(folder / "acts", ignore_errors=True)
    return {"metrics": metrics, "config": sae.config.to_dict()}


# --- dataset examples -------------------------------------------------------------------------------


def _examples(ctx: Context, job: Job) -> dict:
    from ..examples import Target, dataset_examples_many

    targets = {}
    for name, key in job.extra["targets"].items():
        sec = ctx.plan.section(name)
        sae = ctx.sae(sec.sae) if sec.sae else None
        cache = ctx.store.folder("examples", key)
        targets[name] = Target(sec.layer, sae=sae, tokens=sec.tokens, cache=cache)
    dataset_examples_many(ctx.model, targets, ctx.dataset, k=ctx.plan.spec.k, progress=False)
    for key in job.extra["targets"].values():
        ctx.store.finish("examples", key, {"target": key})
    return {"targets": job.extra["targets"]}


def examples_of(ctx: Context, section: Section):
    """The finished dataset examples of a section."""
    from ..examples import Examples

    job = ctx.plan.by_stage("examples")[0]
    return Examples.load(ctx.store.file("examples", job.extra["targets"][section.name], ""))


# --- render -------------------------------------------------------------------------------------------


def objectives_for(ctx: Context, section: Section, units) -> tuple[list[O.Objective], list[O.Objective]]:
    """Per unit: the objective to optimize (before a flattening nonlinearity when ``preact``) and the plain one
    that scores the result (the unit's own activation, as its dataset examples measure it)."""
    from ..units import parse_unit

    if section.kind == "latent":
        sae = ctx.sae(section.sae)
        opt = [O.sae_feature(sae, u.index) for u in units]
        return opt, [O.sae_feature(sae, u.index, activated=True) for u in units]
    parsed = [parse_unit(u.unit) for u in units]
    plain = [p.objective() for p in parsed]
    if not section.settings.preact:
        return plain, plain
    return [p.objective(ctx.model, preact=True) for p in parsed], plain


def diversity_layer(ctx: Context, section: Section) -> str:
    """The layer whose Gram matrices the diversity term compares: the unit's own, or for class logits the
    deepest spatial or token layer of the model."""
    if section.layer != LOGITS:
        return section.layer
    layers = [n for n, i in ctx.model.layers.items() if i.layout in ("CHW", "tokens") and n != LOGITS]
    if not layers:
        raise VisfeatError("diverse images of class logits need a spatial layer; set diverse = 0 for logits")
    return layers[-1]


WORK = 64  # image-steps per unit of work on the build's progress bar


def diverse_images(r) -> int:
    """Images per unit in the diverse render: the diversity term needs two, so one extra picture renders two."""
    return max(2, r.diverse) if r.diverse else 0


def render_work(r, units: int) -> float:
    """A render job's work on the progress bar: image-steps of its main, diverse and negative renders / WORK."""
    return units * r.steps * r.views * (1 + diverse_images(r) + r.negative) / WORK


def _render(ctx: Context, job: Job) -> dict:
    from ..render import default_param, evaluate, render

    sec = ctx.plan.section(job.section)
    r = sec.settings
    units = [u for u in sec.units if u.slug in set(job.slugs)]
    opt, plain = objectives_for(ctx, sec, units)
    common = dict(steps=r.steps, lr=r.lr, lr_schedule=r.lr_schedule, views=r.views, amp=r.amp)

    def progress(images: int):  # one render step of ``images`` images, in the build bar's units of work
        return False if ctx.tick is None else (lambda n: ctx.tick(n * images * r.views / WORK))

    param = default_param(ctx.model)
    folder = ctx.store.folder("render", job.key)
    main = render(ctx.model, opt, param=param, seed=job.seed, progress=progress(len(opt)), **common)
    held = evaluate(ctx.model, plain, main.images)
    rec = {u.slug: {"final": float(main.final[i]), "held_out": float(held[i])} for i, u in enumerate(units)}
    for i, u in enumerate(units):
        save_image(main.images[i], folder / f"{u.slug}.png")
    if r.diverse:
        d = diverse_images(r)
        reps = [o for o in opt for _ in range(d)]
        obj = O.per_image(reps) + r.diversity_weight * O.diversity(diversity_layer(ctx, sec), group=d)
        div = render(
            ctx.model, obj, batch=len(reps), param=param, seed=job.seed + 7_919, progress=progress(len(reps)), **common
        )
        for i, u in enumerate(units):
            for j in range(r.diverse):
                save_image(div.images[i * d + j], folder / f"{u.slug}_d{j}.png")
    if r.negative:
        neg = render(
            ctx.model, [-o for o in opt], param=param, seed=job.seed + 104_729, progress=progress(len(opt)), **common
        )
        held_neg = evaluate(ctx.model, plain, neg.images)
        for i, u in enumerate(units):
            save_image(neg.images[i], folder / f"{u.slug}_neg.png")
            rec[u.slug]["negative"] = float(held_neg[i])
    settings = {k: v for k, v in main.settings.items() if k not in ("device",)}
    atomic_write(folder / "settings.json", json.dumps(settings, indent=1).encode())
    return {"units": rec, "settings": settings, "seed": job.seed, "slugs": list(job.slugs)}


# --- weights ------------------------------------------------------------------------------------------


def neighbours(plan: Plan, model, section: Section) -> tuple[Section | None, Section | None, bool]:
    """The built channel sections just before and after ``section`` in depth order, and whether it is the
    last one before the logits (so its weights to the classes are shown)."""
    order = list(model.layers)
    depth = {n: i for i, n in enumerate(order)}
    chans = sorted((s for s in plan.sections if s.kind == "channel"), key=lambda s: depth[s.layer])
    here = depth[section.layer]
    before = [s for s in chans if depth[s.layer] < here]
    after = [s for s in chans if depth[s.layer] > here]
    last = not after and section.kind in ("channel", "latent")
    return (before[-1] if before else None), (after[0] if after else None), last


def _expand(model, source: str, target: str, **kw):
    from ..circuits.expand import expand
    from ..circuits.graph import CircuitError

    try:
        return expand(model, source, target, **kw)
    except CircuitError as e:
        return str(e)


def _weights(ctx: Context, job: Job) -> dict:
    """Expanded weights of a section's units from the previous built layer, to the next one (latents only:
    channel sections get theirs from the next section's job) and, for the last layer, to every class."""
    from safetensors.torch import save

    sec = ctx.plan.section(job.section)
    model = ctx.model
    prev, nxt, last = neighbours(ctx.plan, model, sec)
    tensors, meta = {}, {"prev": prev.name if prev else None, "next": nxt.name if nxt else None, "last": last}
    latents = None
    if sec.kind == "latent":
        from ..circuits import Latents

        latents = Latents.from_sae(ctx.sae(sec.sae), layer=sec.layer, name=sec.sae)
    if prev is not None and prev.layer != sec.layer:
        idx = [u.index for u in sec.units]
        kw = {"directions": latents.encoder[idx]} if latents is not None else {"channels": idx}
        e = _expand(model, prev.layer, sec.layer, **kw)
        if isinstance(e, str):
            meta["prev_error"] = e
        else:
            tensors["from"], meta["from_mode"] = e.weights.float().contiguous(), e.mode
    if latents is not None and nxt is not None:
        e = _expand(model, sec.layer, nxt.layer, channels=[u.index for u in nxt.units])
        if isinstance(e, str):
            meta["next_error"] = e
        else:  # [next units, C, kh, kw] onto each latent's decoder direction -> [next units, latents, kh, kw]
            dec = latents.decoder[[u.index for u in sec.units]].to(e.weights)
            tensors["feeds"] = torch.einsum("nckl,jc->njkl", e.weights.float(), dec).contiguous()
            meta["feeds_mode"] = e.mode
    if last:
        n = model.layer(LOGITS).channels
        e = _expand(model, sec.layer, LOGITS, channels=list(range(n)))
        if isinstance(e, str):
            meta["classes_error"] = e
        else:
            w = e.weights.float().flatten(2).sum(2)  # [classes, C]
            if latents is not None:
                w = w @ latents.decoder[[u.index for u in sec.units]].T.to(w)
            else:
                w = w[:, [u.index for u in sec.units]]
            tensors["classes"], meta["classes_mode"] = w.contiguous(), e.mode
    folder = ctx.store.folder("weights", job.key)
    atomic_write(folder / "weights.safetensors", save(tensors) if tensors else save({"none": torch.zeros(1)}))
    return meta


def load_weights(store: Store, job: Job) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(str(store.file("weights", job.key, "weights.safetensors"))), store.record("weights", job.key)


# --- circuits -----------------------------------------------------------------------------------------


def _circuit(ctx: Context, job: Job) -> dict:
    from ..circuits.circuit import build_circuit, render_nodes
    from ..units import parse_unit

    c = job.extra["circuit"]
    r = ctx.plan.spec.render
    circuit = build_circuit(ctx.model, c.unit, list(c.sources), k=c.k, width=c.width)
    render_nodes(
        ctx.model,
        circuit,
        steps=r.steps,
        seed=r.seed,
        progress=False,
        lr=r.lr,
        views=r.views,
        lr_schedule=r.lr_schedule,
    )
    folder = ctx.store.folder("circuits", job.key)
    for n in circuit.nodes:
        save_image(n.image, folder / f"{parse_unit(n.unit).filename()}.png")
    atomic_write(folder / "circuit.json", json.dumps(circuit.to_dict(), indent=1).encode())
    return {"nodes": [n.unit for n in circuit.nodes]}
