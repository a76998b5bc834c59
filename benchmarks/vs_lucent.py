"""visfeat vs lucent, one run on one machine: engine cost per step, time to equal quality, peak memory.

    python benchmarks/vs_lucent.py [--json out.json] [--channels 4] [--classes 4] [--lucent-steps 512]
                                   [--device cuda --amp bf16 --channels-last] [--smoke]

1. Engine cost per step at identical settings (128 px Fourier image upsampled to 224, the standard
   transforms, Adam 0.05) on Lucid InceptionV1 with *random* weights (the pretrained file needs a
   download; cost does not depend on the weights): visfeat renders ``--batch`` channels of a layer in
   one batch, lucent renders one channel at a time. Next to both, the raw floor: a bare forward +
   backward stopped at the layer, at 224 px, batch 1 and batch ``--batch``. Measurements alternate
   between the three in ``--rounds`` rounds (medians), so that load from other processes hits all alike.
2. Time to equal quality on the real EfficientNet-Lite0. For every unit, lucent with its defaults (512
   steps) sets the bar: the held-out objective of its image, i.e. the mean objective over a fixed set
   of fresh random transforms (``visfeat.render.evaluate``, seed 1234, the same evaluator for both),
   the higher of two views: its 128 px image as lucent optimized it, and upsampled to 224 first (the
   transforms then act in the model's pixels, as on visfeat's 224 px image).
   visfeat renders all units of a kind in one batch with its own defaults, keeping snapshots; a unit's
   time is the batch's optimization seconds up to the first snapshot at or above the bar, divided by
   the batch size. Class-logit images are also ranked by EfficientNet-Lite1 (another model).
3. Peak memory: resident memory above the pre-run level (after ``malloc_trim``), sampled every 2 ms (CPU), or
   ``torch.cuda.max_memory_allocated`` above the pre-run level (CUDA).

A component profile of visfeat's step (parameterization, transforms, forward, backward, Adam, loop
overhead) and torch.profiler's top operators come with it (``--no-profile`` skips them).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import threading
import time

import numpy as np
import torch
from quality import CHANNEL_LAYER, CLASSES, class_ranks, natural_max  # the same units and references
from torch import nn

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat.hooks import capture, run
from visfeat.render import default_param, default_transforms, evaluate, upsample

SPEED_LAYERS = ["mixed4a", "mixed4d"]
EVAL_SEED, EVAL_REPEATS = 1234, 16


# ----------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory above the level at entry, in MiB: RSS sampled by a thread (CPU) or CUDA's peak counter."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        vf.cpu.release_memory()  # hand memory freed by earlier work back to the OS, so reuse does not hide the peak
        proc = psutil.Process()
        self._base = self._peak = proc.memory_info().rss
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = self._peak
        self.peak_mib = max(0.0, (peak - self._base) / 2**20)


def lucent_render(module: nn.Module, objective, steps: int, seed: int, size: int = 128) -> tuple[torch.Tensor, float]:
    """lucent's ``render_vis`` with its defaults (``size`` px Fourier image, standard transforms, Adam
    0.05, upsampled to 224). Returns the image [1, 3, size, size] and the wall seconds."""
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender

    np.random.seed(seed)
    torch.manual_seed(seed)
    t = time.perf_counter()
    out = lrender.render_vis(
        module,
        objective,
        lambda: lparam.image(size),
        thresholds=(steps,),
        preprocess=module._get_name() == "InceptionV1",  # lucent's own x*255-117 for InceptionV1
        show_image=False,
        progress=False,
    )
    seconds = time.perf_counter() - t
    return torch.from_numpy(out[-1]).permute(0, 3, 1, 2).float(), seconds


class LucentInput(nn.Module):
    """A visfeat model's module behind its own preprocessing, so lucent can feed it [0, 1] images.
    Its layers are named ``net_<name with '.' as '_'>`` in lucent's objectives."""

    def __init__(self, model: vf.Model) -> None:
        super().__init__()
        self.net = copy.deepcopy(model.module)  # lucent leaves its hooks on every module: keep them off ours
        self.spec = model.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.spec.preprocess(x))


def prepare(model: vf.Model, device: torch.device, channels_last: bool) -> vf.Model:
    model.to(device)
    if channels_last:
        model.module.to(memory_format=torch.channels_last)
    return model


# ------------------------------------------------------------------------------- 1. engine speed


def floor_step(model: vf.Model, layer: str, x: torch.Tensor, amp: str | None) -> None:
    """A bare forward + backward of the model stopped at ``layer``, with respect to the input."""
    cast = torch.autocast("cuda", dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[amp])) if amp else None
    with cast or contextlib.nullcontext(), capture(model.module, [layer]) as acts:
        run(model.module, model.preprocess(x))
    acts[layer].float().mean().backward()


def timed(fn, steps: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / steps


def speed(args, device: torch.device) -> dict:
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    torch.manual_seed(0)
    model = prepare(vf.load_model("inceptionv1", pretrained=False), device, args.channels_last)
    lucent_net = InceptionV1(pretrained=False)
    lucent_net.load_state_dict(model.module.state_dict())
    lucent_net.to(device).eval().requires_grad_(False)  # frozen, as visfeat's: no weight gradients
    b, steps, size = args.batch, args.speed_steps, args.size
    out = {}
    for layer in SPEED_LAYERS:
        units = [O.channel(layer, c) for c in range(b)]
        kw = dict(param=P.fourier(size), transforms=default_transforms(model), progress=False, amp=args.amp)
        vf.render(model, units, steps=1, **kw)  # warm-up
        lucent_render(lucent_net, f"{layer}:0", 1, 0, size)
        xb = torch.rand(b, 3, 224, 224, device=device, requires_grad=True)
        x1 = xb[:1].detach().clone().requires_grad_(True)
        rounds = []
        for r in range(args.rounds):
            v = vf.render(model, units, steps=steps, seed=r, **kw).seconds / steps / b
            lu = lucent_render(lucent_net, f"{layer}:{r % b}", steps, r, size)[1] / steps
            fb = timed(lambda xb=xb, layer=layer: floor_step(model, layer, xb, args.amp), steps, device) / b
            f1 = timed(lambda x1=x1, layer=layer: floor_step(model, layer, x1, args.amp), steps, device)
            rounds.append({"visfeat": v, "lucent": lu, "floor_batch": fb, "floor_1": f1})
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        with PeakMemory(device) as mv:
            vf.render(model, units, steps=2, **kw)
        with PeakMemory(device) as ml:
            lucent_render(lucent_net, f"{layer}:0", 2, 0, size)
        out[layer] = {
            "batch": b,
            "steps": steps,
            "rounds": args.rounds,
            "ms_per_unit_step": {k: 1000 * v for k, v in med.items()},
            "visfeat_over_floor": med["visfeat"] / med["floor_batch"],
            "lucent_over_visfeat": med["lucent"] / med["visfeat"],
            "lucent_seconds_per_unit_512": 512 * med["lucent"],
            "peak_mib": {"visfeat_batch": mv.peak_mib, "lucent_one_unit": ml.peak_mib},
            "all_rounds_ms": [{k: 1000 * v for k, v in r.items()} for r in rounds],
        }
    return out


# ------------------------------------------------------------------------------------ profile


def _sliced_per_image(objs: list[O.Objective]):
    """The per-image objective as it was before the profile: image i's activations as ``act[i : i + 1]``."""
    return lambda acts: torch.cat([o({k: v[i : i + 1] for k, v in acts.items()}) for i, o in enumerate(objs)])


def profile(args, device: torch.device) -> dict:
    """Where a visfeat step goes: its parts timed one by one, the loop's own per-step time, and the
    per-image objective before/after the split fix; plus torch.profiler's top operators."""
    from visfeat.hooks import capture as cap

    torch.manual_seed(0)
    model = prepare(vf.load_model("inceptionv1", pretrained=False), device, args.channels_last)
    layer, b, steps = SPEED_LAYERS[0], args.batch, args.speed_steps
    units = [O.channel(layer, c) for c in range(b)]
    obj = O.per_image(units)
    transforms = default_transforms(model)
    gen = torch.Generator().manual_seed(0)
    image = P.fourier(args.size).build(b, gen, device)
    opt = torch.optim.Adam(image.parameters(), lr=0.05)
    parts = {k: [] for k in ("param", "transforms", "forward", "backward", "adam")}
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        images = image()
        sync(device)
        t1 = time.perf_counter()
        x = model.preprocess(transforms(images, gen))
        sync(device)
        t2 = time.perf_counter()
        with cap(model.module, [layer]) as acts:
            run(model.module, x)
        scores = obj(acts)
        sync(device)
        t3 = time.perf_counter()
        (-scores.sum()).backward()
        sync(device)
        t4 = time.perf_counter()
        opt.step()
        sync(device)
        t5 = time.perf_counter()
        if i:  # the first is a warm-up
            for k, a, z in zip(parts, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                parts[k].append(z - a)
    comp = {k: 1000 * statistics.median(v) for k, v in parts.items()}
    loop = (
        1000
        * vf.render(
            model, units, steps=steps, transforms=transforms, param=P.fourier(args.size), progress=False
        ).seconds
        / steps
    )
    comp["loop_overhead"] = loop - sum(comp.values())
    # backward of the transforms + parameterization alone (inside "backward" above)
    imgs = image()
    y = transforms(imgs, gen)
    g = torch.randn_like(y)
    sync(device)
    t = time.perf_counter()
    y.backward(g)
    sync(device)
    comp_bwd_inputs = 1000 * (time.perf_counter() - t)
    # per-image objective: one slice per image (the old objectives.per_image) vs split() once (the current one)
    objective = {}
    with torch.no_grad():
        act_shape = model.activations(torch.rand(1, 3, 224, 224, device=device), [layer])[layer].shape[1:]
    for n in sorted({b, args.profile_units}):
        a = torch.randn(n, *act_shape, device=device, requires_grad=True)
        objs = [O.channel(layer, c % act_shape[0]) for c in range(n)]
        for name, o in (("slices", _sliced_per_image(objs)), ("split", O.per_image(objs))):
            objective[f"{name}_{n}"] = 1000 * timed(lambda o=o, a=a: o({layer: a}).sum().backward(), 2, device)
    out = {
        "layer": layer,
        "batch": b,
        "ms_per_step": {**comp, "total": loop},
        "transforms_and_param_backward_ms": comp_bwd_inputs,
        "per_image_objective_ms": objective,
    }
    if args.top_ops:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprofile(activities=acts) as prof:
            vf.render(model, units, steps=2, transforms=transforms, param=P.fourier(args.size), progress=False)
        ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ev)
        out["top_ops"] = [
            {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 2000, "share": e.self_cpu_time_total / total}
            for e in ev[: args.top_ops]
        ]
    return out


# ----------------------------------------------------------------------------- 2. time to quality


def quality_kind(args, device, lite0, lucent_net, kind: str) -> dict:
    """One kind of unit (``blocks.4`` channels or class logits): lucent's bar unit by unit, then
    visfeat's batch with snapshots."""
    if kind == "channels":
        ids = list(range(0, 112, 112 // max(args.channels, 1)))[: args.channels]
        units = [O.channel(CHANNEL_LAYER, c) for c in ids]
        lucent_objs = [f"net_{CHANNEL_LAYER.replace('.', '_')}:{c}" for c in ids]
        labels = [f"{CHANNEL_LAYER}:{c}" for c in ids]
    else:
        names = CLASSES[: args.classes]
        ids = [lite0.labels.index(c) for c in names]
        units = [O.class_logit(c) for c in names]
        lucent_objs = [f"net_classifier:{i}" for i in ids]
        labels = [f"logit:{c}" for c in names]
    rows = []
    lucent_images, lucent_mem = [], 0.0
    cache = _load_cache(args.lucent_cache)
    for i, (u, lo) in enumerate(zip(units, lucent_objs, strict=True)):
        key = f"{lo}/{args.lucent_steps}/{i}"
        if key in cache:  # an earlier run's lucent render (its seconds and peak memory as measured then)
            img, sec, peak = cache[key]
        else:
            with PeakMemory(device) as mem:
                img, sec = lucent_render(lucent_net, lo, args.lucent_steps, seed=i)
            peak = mem.peak_mib
            cache[key] = (img, sec, peak)
            _save_cache(args.lucent_cache, cache)
        lucent_mem = max(lucent_mem, peak)
        # lucent's image as lucent optimized it (128 px, transforms in its pixels, then resized to 224), and
        # upsampled to 224 first, so that the transforms act in the model's pixels exactly as on visfeat's
        # 224 px image. The bar is the higher of the two: neither view may favour visfeat.
        own, at224 = (
            float(evaluate(lite0, [u], x, repeats=args.eval_repeats, seed=EVAL_SEED)[0])
            for x in (img, upsample(img, lite0.spec.size[0]))
        )
        lucent_images.append(img)
        row = {"unit": labels[i], "lucent_seconds": sec, "lucent_heldout": own, "lucent_heldout_224": at224}
        rows.append({**row, "bar": max(own, at224)})
    vsteps = args.vf_steps
    shots = sorted({s for s in args.snapshots if s <= vsteps} | {vsteps})
    param = P.fourier(args.vf_size) if args.vf_size else default_param(lite0, steps=vsteps)  # render's default
    kw = {"param": param, "lr": args.vf_lr, "amp": args.amp, "progress": False}
    with PeakMemory(device) as mem:
        res = vf.render(lite0, units, steps=vsteps, seed=0, snapshots=shots, **kw)
    held = {s: evaluate(lite0, units, res.snapshots[s], repeats=args.eval_repeats, seed=EVAL_SEED) for s in shots}
    n = len(units)
    for i, row in enumerate(rows):
        row["visfeat_heldout"] = {s: float(held[s][i]) for s in shots}
        first = next((s for s in shots if held[s][i] >= row["bar"]), None)
        row["visfeat_steps_to_bar"] = first
        row["visfeat_seconds_to_bar"] = res.snapshot_seconds[first] / n if first else None
        row["speedup"] = row["lucent_seconds"] / row["visfeat_seconds_to_bar"] if first else None
    # a fixed step count for the whole batch: the first snapshot where every unit is at or above its bar
    layer_step = next((s for s in shots if all(held[s][i] >= r["bar"] for i, r in enumerate(rows))), None)
    step_used = layer_step or vsteps
    lucent_per_unit = statistics.mean(r["lucent_seconds"] for r in rows)
    visfeat_per_unit = res.snapshot_seconds[step_used] / n
    summary = {
        "units": n,
        "lucent_steps": args.lucent_steps,
        "lucent_seconds_per_unit": lucent_per_unit,
        "visfeat_settings": {"param": f"fourier({param.size})", "lr": args.vf_lr, "max_steps": vsteps},
        "visfeat_steps_all_at_bar": layer_step,
        "visfeat_seconds_per_unit": visfeat_per_unit,
        # None when some unit is still below its bar after the longest render
        "speedup_per_unit": lucent_per_unit / visfeat_per_unit if layer_step else None,
        "units_at_bar": sum(r["visfeat_steps_to_bar"] is not None for r in rows),
        "bars_from_224_view": sum(r["lucent_heldout_224"] > r["lucent_heldout"] for r in rows),
        "median_unit_speedup": statistics.median([r["speedup"] or 0.0 for r in rows]),
        "peak_mib": {"visfeat_batch": mem.peak_mib, "lucent_one_unit": lucent_mem},
    }
    vf_images = res.snapshots[step_used]
    if kind == "channels":
        nat = natural_max(lite0, CHANNEL_LAYER, ids, args.natural_crops)
        for i, row in enumerate(rows):
            row["natural_max"] = float(nat[i])
            row["lucent_ratio"] = row["lucent_heldout"] / float(nat[i])
            row["visfeat_ratio"] = row["visfeat_heldout"][step_used] / float(nat[i])
        summary["median_ratio"] = {
            "lucent": statistics.median(r["lucent_ratio"] for r in rows),
            "visfeat": statistics.median(r["visfeat_ratio"] for r in rows),
        }
    else:
        lite1 = prepare(vf.load_model("efficientnet_lite1"), device, False)
        r_lu = class_ranks(lite1, torch.cat(lucent_images), ids)
        r_vf = class_ranks(lite1, vf_images, ids)
        for i, row in enumerate(rows):
            row["rank_lite1"] = {"lucent": r_lu[i], "visfeat": r_vf[i]}
        summary["top1_lite1"] = {"lucent": sum(r == 1 for r in r_lu), "visfeat": sum(r == 1 for r in r_vf)}
    return {"units": rows, "summary": summary}


def _load_cache(path: str | None) -> dict:
    return torch.load(path, weights_only=False) if path and os.path.exists(path) else {}


def _save_cache(path: str | None, cache: dict) -> None:
    if path:
        torch.save(cache, path + ".tmp")
        os.replace(path + ".tmp", path)


def quality(args, device: torch.device) -> dict:
    lite0 = prepare(vf.load_model("efficientnet_lite0"), device, args.channels_last)
    lucent_net = LucentInput(lite0).to(device)
    out = {}
    if args.channels:
        out["channels"] = quality_kind(args, device, lite0, lucent_net, "channels")
    if args.classes:
        out["classes"] = quality_kind(args, device, lite0, lucent_net, "classes")
    return out


# ------------------------------------------------------------------------------------- report


def report(res: dict) -> str:
    lines = []
    s = res["settings"]
    lines.append(
        f"visfeat vs lucent on {s['device']} ({s['threads']} threads, torch {s['torch']}, amp {s['amp']}, "
        f"channels-last {s['channels_last']}, allocator tuned {s['allocator_tuned']}); "
        f"load average {s['load_before']} -> {s['load_after']}"
    )
    if "speed" in res:
        lines.append("")
        lines.append(
            "1. engine cost per unit-step, InceptionV1 (random weights), 128 px Fourier -> 224, std transforms"
        )
        lines.append(
            f"  {'layer':<8} {'visfeat':>9} {'lucent':>9} {'floor@B':>9} {'floor@1':>9}  "
            f"{'vf/floor':>8} {'lucent/vf':>9}  {'peak MiB vf(B)/lucent(1)':>24}"
        )
        for layer, r in res["speed"].items():
            m = r["ms_per_unit_step"]
            pk = r["peak_mib"]
            lines.append(
                f"  {layer:<8} {m['visfeat']:>7.0f}ms {m['lucent']:>7.0f}ms {m['floor_batch']:>7.0f}ms "
                f"{m['floor_1']:>7.0f}ms  {r['visfeat_over_floor']:>7.2f}x {r['lucent_over_visfeat']:>8.2f}x  "
                f"{pk['visfeat_batch']:>11.0f} / {pk['lucent_one_unit']:<10.0f}"
            )
        r0 = next(iter(res["speed"].values()))
        lines.append(
            f"  (B = {r0['batch']} units per visfeat batch, {r0['steps']} steps x {r0['rounds']} rounds, medians)"
        )
    if "profile" in res:
        p = res["profile"]
        lines.append("")
        lines.append(f"profile of one visfeat step ({p['layer']}, batch {p['batch']}), ms")
        lines.append("  " + "  ".join(f"{k} {v:.0f}" for k, v in p["ms_per_step"].items()))
        lines.append(
            f"  (backward of transforms + parameterization alone: {p['transforms_and_param_backward_ms']:.0f})"
        )
        lines.append(
            "  per-image objective fwd+bwd: "
            + ", ".join(f"{k} {v:.1f}" for k, v in p["per_image_objective_ms"].items())
        )
        for op in p.get("top_ops", []):
            lines.append(f"    {op['op']:<40} {op['self_ms_per_step']:8.1f} ms/step {100 * op['share']:5.1f}%")
    for kind, q in res.get("quality", {}).items():
        sm = q["summary"]
        pk = sm["peak_mib"]
        lines.append("")
        lines.append(
            f"2. time to lucent's quality, EfficientNet-Lite0, {kind}: lucent {sm['lucent_steps']} steps per unit; "
            f"visfeat {sm['visfeat_settings']} in one batch of {sm['units']}"
        )
        extra = "ratio lu/vf" if kind == "channels" else "Lite1 rank lu/vf"
        lines.append(
            f"  {'unit':<16} {'lucent s':>9} {'bar':>8} {'vf steps':>8} {'vf s/unit':>9} {'speed-up':>8}  {extra}"
        )
        for r in q["units"]:
            vs = f"{r['visfeat_seconds_to_bar']:.1f}" if r["visfeat_seconds_to_bar"] else "-"
            sp = f"{r['speedup']:.1f}x" if r["speedup"] else "not reached"
            ex = (
                f"{r['lucent_ratio']:.2f} / {r['visfeat_ratio']:.2f}"
                if kind == "channels"
                else f"{r['rank_lite1']['lucent']} / {r['rank_lite1']['visfeat']}"
            )
            lines.append(
                f"  {r['unit']:<16} {r['lucent_seconds']:>9.1f} {r['bar']:>8.3f} "
                f"{str(r['visfeat_steps_to_bar'] or '-'):>8} {vs:>9} {sp:>8}  {ex}"
            )
        at = sm["visfeat_steps_all_at_bar"]
        sp = f"{sm['speedup_per_unit']:.1f}x less time" if at else "not all at the bar"
        lines.append(
            f"  whole batch at bar after {at or str(sm['visfeat_settings']['max_steps']) + '+'} steps: visfeat "
            f"{sm['visfeat_seconds_per_unit']:.1f} s/unit vs lucent {sm['lucent_seconds_per_unit']:.1f} s/unit = "
            f"{sp}; {sm['units_at_bar']}/{sm['units']} units reach the bar; "
            f"peak MiB visfeat batch {pk['visfeat_batch']:.0f}, lucent {pk['lucent_one_unit']:.0f}"
        )
        lines.append(
            f"  bar: lucent's held-out, the higher of its own view and upsampled to 224 "
            f"(the 224 view for {sm['bars_from_224_view']}/{sm['units']} units)"
        )
        if kind == "channels":
            mr = sm["median_ratio"]
            lines.append(f"  median held-out / natural max: lucent {mr['lucent']:.2f}x, visfeat {mr['visfeat']:.2f}x")
        else:
            t1 = sm["top1_lite1"]
            lines.append(
                f"  top-1 on EfficientNet-Lite1: lucent {t1['lucent']}/{sm['units']}, "
                f"visfeat {t1['visfeat']}/{sm['units']}"
            )
    return "\n".join(lines)


def finish(res: dict, report_fn, json_path: str | None) -> dict:
    """Record the load average after the run, print ``report_fn(res)`` and write ``res`` to ``json_path`` if given."""
    res["settings"]["load_after"] = round(os.getloadavg()[0], 2)
    print(report_fn(res))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--only", choices=["speed", "quality"], default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="visfeat's autocast on CUDA")
    ap.add_argument("--channels-last", action="store_true", help="channels-last model weights (CUDA)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="part 1: units per visfeat batch")
    ap.add_argument("--speed-steps", type=int, default=6, help="part 1: steps per timing")
    ap.add_argument("--rounds", type=int, default=3, help="part 1: alternating rounds (medians)")
    ap.add_argument("--size", type=int, default=128, help="part 1: Fourier image size (upsampled to 224)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--top-ops", type=int, default=12, help="profile: operators to list (0: no torch.profiler)")
    ap.add_argument("--profile-units", type=int, default=64, help="profile: a large batch for the objective")
    ap.add_argument("--channels", type=int, default=4, help="part 2: blocks.4 channels (0 to skip)")
    ap.add_argument("--classes", type=int, default=4, help="part 2: class logits (0 to skip)")
    ap.add_argument("--lucent-steps", type=int, default=512)
    ap.add_argument("--vf-steps", type=int, default=256, help="part 2: visfeat's longest render")
    ap.add_argument("--vf-lr", type=float, default=0.05)
    ap.add_argument("--vf-size", type=int, default=None, help="part 2: Fourier size (default: render's, 224)")
    ap.add_argument("--snapshots", type=int, nargs="+", default=[16, 24, 32, 48, 64, 96, 128, 192, 256])
    ap.add_argument("--lucent-cache", default=None, help="part 2: keep lucent's renders here and reuse them")
    ap.add_argument("--eval-repeats", type=int, default=EVAL_REPEATS)
    ap.add_argument("--natural-crops", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI (numbers are not meaningful)")
    ap.add_argument(
        "--no-tune-allocator", action="store_true", help="leave glibc's malloc as it is (visfeat.cpu.tune_allocator)"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch, args.speed_steps, args.rounds, args.size = 2, 1, 1, 32
        args.top_ops, args.profile_units = 3, 4
        args.channels, args.classes, args.lucent_steps, args.vf_steps = 1, 1, 2, 4
        args.snapshots, args.eval_repeats, args.natural_crops = [2, 4], 1, 4
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # process-wide, so lucent runs with the same allocator as visfeat
    tuned = device.type == "cpu" and not args.no_tune_allocator and vf.cpu.tune_allocator()
    if args.amp and device.type != "cuda":
        ap.error("--amp is for --device cuda")
    import lucent

    res: dict = {
        "settings": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(),
            "allocator_tuned": tuned,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "lucent": getattr(lucent, "__version__", "?"),
            "amp": args.amp,
            "channels_last": args.channels_last,
            "smoke": args.smoke,
            "load_before": round(os.getloadavg()[0], 2),
            "args": vars(args),
        }
    }
    if args.only in (None, "speed"):
        res["speed"] = speed(args, device)
        if not args.no_profile:
            res["profile"] = profile(args, device)
    if args.only in (None, "quality"):
        res["quality"] = quality(args, device)
    return finish(res, report, args.json)


if __name__ == "__main__":
    main()
