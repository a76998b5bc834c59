"""Gallery render throughput on one device: units per second for a whole layer, against lucent and the floor.

    python benchmarks/gallery_throughput.py [--device cuda|cpu] [--layer mixed4a] [--batches 8,32,128,...]
                                            [--steps N] [--rounds R] [--json out.json]

Lucid InceptionV1 with *random* weights (the pretrained file needs a download; cost does not depend on the
weights). Seconds per step come from timing ``--steps`` steps after ``--warmup`` warm-up steps, not from
full renders (the median of ``--rounds`` timings); a unit's seconds are that times the gallery's default 256
steps, divided by the batch.

1. visfeat, as the gallery's render stage renders: ``visfeat.render.render`` of the channel objectives of
   ``--layer`` (``preact=True``, ``default_param(model)``: a 224 px Fourier image, the default transforms), one
   image per unit, at each batch size, in fp32 and in bf16 (bf16 on CUDA only). On CUDA the weights are
   channels-last (``Model.channels_last``, as the gallery loads them) and so are the inputs ``render`` feeds;
   the peak memory of each batch is ``torch.cuda.max_memory_allocated`` above the level before it.
   On CPU glibc's allocator is tuned as the ``visfeat`` command tunes it (``visfeat.cpu.tune_allocator``).
2. lucent, one unit at a time on the same device: ``render_vis`` with its defaults (128 px Fourier image
   upsampled to 224), timed on ``--lucent-units`` units; its seconds per step are the time of 1 + N steps
   minus that of 1 step, over N (its fixed cost per call left out; the median over units), extrapolated to
   256 steps per unit.
3. The floor: a bare forward + backward (to the input) of the model stopped at the layer, at the same batch
   and precision, per image-step.

Columns: ``s/step`` of the whole batch; ``units/s`` at 256 steps per unit; ``vs lucent``: lucent's seconds per
unit over visfeat's (times faster); ``vs floor``: visfeat's seconds per image-step over the floor's.
Projection: all 5,484 channels of mixed3a...mixed5b at 256 steps with the fastest row's mode and batch. On
CUDA every layer is timed briefly with it; on CPU the measured layer's seconds per unit stand for every
layer (an assumption: deeper layers cost more, shallower ones less; mixed4a is mid-depth). It is given for
the main image alone and with the gallery's default ``diverse = 2`` (two more images per unit: 3x).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import time

import torch
from vs_lucent import PeakMemory, finish, floor_step, lucent_render, sync, timed  # lucent and the floor, as there

import visfeat as vf
from visfeat.render import default_param, render

LAYERS = ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
GALLERY_STEPS = 256  # RenderSettings' default steps
DIVERSE_IMAGES = 3  # the main image and the diverse render's max(2, diverse) = 2 images per unit (diverse = 2)
DEFAULTS = {  # per device: batches, timed steps, warm-up steps, timings (median), lucent units and timed steps
    "cuda": {"batches": "8,32,128,256,512", "steps": 8, "warmup": 2, "rounds": 3, "lucent_units": 3, "lucent_steps": 8},
    "cpu": {"batches": "1,8,16", "steps": 3, "warmup": 1, "rounds": 3, "lucent_units": 3, "lucent_steps": 4},
}


def visfeat_step(model: vf.Model, layer: str, batch: int, amp: str | None, args) -> tuple:
    """Seconds per step of ``render`` of ``batch`` channel units of ``layer`` (after a warm-up render; the median
    of ``args.rounds`` timed renders), and the peak MiB of a timed render on CUDA (None elsewhere)."""
    channels = model.layers[layer].channels
    units = [f"{layer}:{c % channels}" for c in range(batch)]  # a batch past the layer's width repeats units
    kw = {"param": default_param(model), "amp": amp, "preact": True, "progress": False}
    render(model, units, steps=args.warmup, **kw)
    cuda = model.device.type == "cuda"
    times = []
    for r in range(args.rounds):
        with PeakMemory(model.device) if cuda else contextlib.nullcontext() as mem:
            times.append(render(model, units, steps=args.steps, seed=1 + r, **kw).seconds / args.steps)
    return statistics.median(times), mem.peak_mib if cuda else None


def floor_per_image(model: vf.Model, layer: str, batch: int, amp: str | None, args) -> float:
    """Seconds per image-step of a bare forward + backward stopped at ``layer`` (vs_lucent's floor; the median
    of ``args.rounds`` timings)."""
    size = model.spec.size
    x = torch.rand(batch, 3, *size, device=model.device)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)  # as render feeds it on CUDA
    x.requires_grad_(True)
    times = [timed(lambda: floor_step(model, layer, x, amp), args.steps, model.device) for _ in range(args.rounds)]
    return statistics.median(times) / batch


def lucent_per_step(model: vf.Model, layer: str, units: int, steps: int) -> float | None:
    """lucent's seconds per step, one unit at a time (mean over ``units`` channels); None where lucent cannot
    run on the model's device (it puts its images on CUDA whenever CUDA is available)."""
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    dev = model.device
    if dev.type == "cpu" and torch.cuda.is_available():
        return None
    net = InceptionV1(pretrained=False)
    net.load_state_dict(model.module.state_dict())
    net.to(dev).eval().requires_grad_(False)  # frozen, as visfeat's model: no weight gradients
    lucent_render(copy.deepcopy(net), f"{layer}:0", 1, 0)  # warm-up
    per_step = []
    for c in range(units):  # a fresh copy per call: lucent leaves its hooks on every module it renders with
        one = lucent_render(copy.deepcopy(net), f"{layer}:{c}", 1, c)[1]
        more = lucent_render(copy.deepcopy(net), f"{layer}:{c}", 1 + steps, c)[1]
        per_step.append(max(more - one, 1e-9) / steps)
    return statistics.median(per_step)


def measure(args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = vf.load_model("inceptionv1", pretrained=False).to(device).channels_last()
    modes = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    amp_of = {"fp32": None, "bf16": "bf16"}
    t0 = time.perf_counter()
    lucent = lucent_per_step(model, args.layer, args.lucent_units, args.lucent_steps)
    lucent_unit = lucent * GALLERY_STEPS if lucent is not None else None
    rows = []
    for mode in modes:
        for b in args.batches:
            try:
                step, peak = visfeat_step(model, args.layer, b, amp_of[mode], args)
                floor = floor_per_image(model, args.layer, b, amp_of[mode], args)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"mode": mode, "batch": b, "oom": True})
                continue
            unit = step / b * GALLERY_STEPS
            rows.append(
                {
                    "mode": mode,
                    "batch": b,
                    "s_per_step": step,
                    "units_per_s": 1 / unit,
                    "s_per_unit": unit,
                    "floor_s_per_image_step": floor,
                    "vs_lucent": lucent_unit / unit if lucent_unit else None,
                    "vs_floor": step / b / floor,
                    "peak_mib": peak,
                }
            )
    ok = [r for r in rows if not r.get("oom")]
    best = max(ok, key=lambda r: r["units_per_s"])
    per_layer = {}
    for layer in LAYERS:
        if device.type == "cuda":  # every layer briefly, at the best mode and batch
            step = visfeat_step(model, layer, best["batch"], amp_of[best["mode"]], args)[0]
            unit = step / best["batch"] * GALLERY_STEPS
        else:
            unit = best["s_per_unit"]  # the measured layer stands for all (see the module's docstring)
        per_layer[layer] = {"channels": model.layers[layer].channels, "s_per_unit": unit}
    total = sum(v["channels"] * v["s_per_unit"] for v in per_layer.values())
    return {
        "layer": args.layer,
        "lucent": {"s_per_step": lucent, "s_per_unit": lucent_unit, "units": args.lucent_units},
        "rows": rows,
        "best": {"mode": best["mode"], "batch": best["batch"]},
        "projection": {
            "steps": GALLERY_STEPS,
            "layers": per_layer,
            "channels": sum(v["channels"] for v in per_layer.values()),
            "each_layer_timed": device.type == "cuda",
            "seconds_main_image": total,
            "seconds_with_diverse_2": total * DIVERSE_IMAGES,
        },
        "seconds": time.perf_counter() - t0,
    }


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def report(res: dict) -> str:
    s, m = res["settings"], res["results"]
    cuda = s["device_type"] == "cuda"
    lines = [
        f"gallery render throughput, InceptionV1 (random weights) {m['layer']}, on {s['device']} "
        f"({s['threads']} threads, torch {s['torch']}, load average {s['load_before']} -> {s['load_after']})",
        f"s/step: median of {s['rounds']} timings of {s['steps']} steps after {s['warmup']} warm-up, "
        "not full renders; "
        f"units/s at {GALLERY_STEPS} steps per unit",
        f"  {'mode':<7} {'batch':>5} {'s/step':>9} {'units/s':>9} {'vs lucent':>10} {'vs floor':>9}"
        + (f" {'peak MiB':>9}" if cuda else ""),
    ]
    lu = m["lucent"]
    if lu["s_per_step"] is not None:
        lines.append(
            f"  {'lucent':<7} {1:>5} {lu['s_per_step']:>9.4f} {1 / lu['s_per_unit']:>9.4f} {'1.00x':>10} {'-':>9}"
        )
    else:
        lines.append(f"  {'lucent':<7} {'-':>5} {'n/a (lucent uses CUDA when it is available)':>40}")
    for r in m["rows"]:
        if r.get("oom"):
            lines.append(f"  {r['mode']:<7} {r['batch']:>5} {'out of memory':>20}")
            continue
        vs_lucent = f"{r['vs_lucent']:.2f}x" if r["vs_lucent"] else "-"
        peak = f" {r['peak_mib']:>9.0f}" if cuda else ""
        lines.append(
            f"  {r['mode']:<7} {r['batch']:>5} {r['s_per_step']:>9.4f} {r['units_per_s']:>9.4f} "
            f"{vs_lucent:>10} {r['vs_floor']:>8.2f}x{peak}"
        )
    if not cuda:
        lines.append(f"  {'bf16':<7} {'-':>5} {'n/a':>9} {'n/a':>9} {'n/a':>10} {'n/a':>9}  (autocast is for CUDA)")
    lines.append(
        f"  lucent: render_vis one unit at a time (128 px, its defaults), {lu['units']} units, "
        f"{s['lucent_steps']} timed steps each; vs floor: s per image-step over a bare forward + backward to the layer"
    )
    p, b = m["projection"], m["best"]
    how = "each layer timed at that setting" if p["each_layer_timed"] else f"{m['layer']}'s s/unit for every layer"
    lines.append(
        f"projected, all {p['channels']:,} channels of mixed3a..mixed5b at {p['steps']} steps, {b['mode']} batch "
        f"{b['batch']} ({how}): {_hours(p['seconds_main_image'])} for the main images, "
        f"{_hours(p['seconds_with_diverse_2'])} with the gallery's default diverse = 2 (3 images per unit)"
    )
    if p["each_layer_timed"]:
        lines.append("  per layer s/unit: " + ", ".join(f"{k} {v['s_per_unit']:.3f}" for k, v in p["layers"].items()))
    lines.append(f"(benchmark wall time {m['seconds']:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layer", default="mixed4a", choices=LAYERS)
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (cuda: 8,...,512; cpu: 1,8,16)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (cuda 8, cpu 3)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps before each timing (cuda 2, cpu 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timings per measurement, their median (3)")
    ap.add_argument("--lucent-units", type=int, default=None, help="lucent units timed, their median (3)")
    ap.add_argument("--lucent-steps", type=int, default=None, help="timed steps per lucent unit (cuda 8, cpu 4)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    for k, v in DEFAULTS[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.batches = [int(b) for b in str(args.batches).split(",")]
    if min(args.batches) < 1 or min(args.steps, args.warmup, args.rounds, args.lucent_units, args.lucent_steps) < 1:
        ap.error("batches, steps, warm-up, rounds and lucent units/steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tuned = device.type == "cpu" and vf.cpu.tune_allocator()
    res = {
        "settings": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "device_type": device.type,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "allocator_tuned": tuned,
            "torch": torch.__version__,
            "load_before": round(os.getloadavg()[0], 2),
            **{k: getattr(args, k) for k in ("steps", "warmup", "rounds", "lucent_units", "lucent_steps", "batches")},
        }
    }
    res["results"] = measure(args, device)
    sync(device)
    return finish(res, report, args.json)


if __name__ == "__main__":
    main()
