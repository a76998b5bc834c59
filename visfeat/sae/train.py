"""The SAE training loop: Adam with warm-up and linear decay, unit-norm decoder, AuxK on dead latents."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .base import SAE, SAEError


@dataclass
class TrainConfig:
    """Settings of :func:`train`."""

    epochs: float = 4.0  # passes over the data (fractions allowed)
    batch_size: int = 4096  # activation vectors per step
    lr: float = 1e-3  # peak Adam learning rate
    warmup: float = 0.05  # fraction of steps with a linear warm-up from 0
    decay: float = 0.3  # fraction of steps at the end with a linear decay to 0
    dead_after: int = 200_000  # a latent that has not fired for this many vectors counts as dead (AuxK)
    init_sample: int = 65536  # vectors used to set the input scale and the decoder bias
    seed: int = 0
    log_every: int = 10  # steps between entries of the training log
    max_steps: int | None = None  # stop early after this many steps (tests, benchmarks)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs <= 0 or self.lr <= 0:
            raise SAEError(
                f"batch_size, epochs and lr must be positive, got {self.batch_size}, {self.epochs}, {self.lr}"
            )
        if not (0 <= self.warmup <= 1 and 0 <= self.decay <= 1):
            raise SAEError(f"warmup and decay are fractions in [0, 1], got {self.warmup}, {self.decay}")


@dataclass
class TrainLog:
    """What training did: per-step metrics every ``log_every`` steps, vectors seen, seconds."""

    steps: int = 0
    vectors: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def vectors_per_second(self) -> float:
        return self.vectors / self.seconds if self.seconds else 0.0


def lr_factor(step: int, total: int, warmup: float, decay: float) -> float:
    """Learning-rate multiplier: linear warm-up, constant, linear decay to zero."""
    w, d = int(total * warmup), int(total * decay)
    if w and step < w:
        return (step + 1) / w
    if d and step >= total - d:
        return max(0.0, (total - step) / d)
    return 1.0


class _Tensors:
    """Adapter so that an in-memory ``[N, d_in]`` tensor trains like an ActivationStore."""

    def __init__(self, x: torch.Tensor):
        if x.dim() != 2:
            raise SAEError(f"training data must be [N, d_in] vectors, got shape {tuple(x.shape)}")
        self.x = x.float()

    def __len__(self) -> int:
        return self.x.shape[0]

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.x[torch.randperm(len(self), generator=g)[:n]]

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        yield from self.x[torch.randperm(len(self), generator=g)].split(batch_size)


def train(sae: SAE, data, config: TrainConfig | None = None, progress: bool = True) -> TrainLog:
    """Train ``sae`` on ``data`` (an ActivationStore or an ``[N, d_in]`` tensor); returns the log."""
    config = config or TrainConfig()
    data = _Tensors(data) if torch.is_tensor(data) else data
    n = len(data)
    if n == 0:
        raise SAEError("no activation vectors to train on; collect some first")
    device = sae.W_dec.device
    if not bool(sae.initialized):
        sae.init_from_data(data.sample(config.init_sample, seed=config.seed).to(device))
    total = max(1, math.ceil(n * config.epochs / config.batch_size))
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(sae.config.d_sae, dtype=torch.long, device=device)  # vectors since last firing
    log = TrainLog()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"train {sae.variant} SAE", unit="step")
    sae.train()
    start = time.perf_counter()
    step, epoch = 0, 0
    try:
        while step < total:
            for x in data.batches(config.batch_size, seed=config.seed + epoch):
                if step >= total:
                    break
                x = x.to(device, torch.float32)
                for g in opt.param_groups:
                    g["lr"] = config.lr * lr_factor(step, total, config.warmup, config.decay)
                dead = last_fired >= config.dead_after
                out = sae.loss(x, dead)
                if not torch.isfinite(out["loss"]):
                    raise SAEError(f"SAE loss became non-finite at step {step}; lower lr (now {config.lr})")
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                sae.remove_parallel_grad()
                opt.step()
                sae.normalize_decoder()
                with torch.no_grad():
                    fired = (out["z"] > 0).any(0)
                    last_fired += x.shape[0]
                    last_fired[fired] = 0
                log.vectors += x.shape[0]
                step += 1
                if step % config.log_every == 0 or step == total:
                    with torch.no_grad():
                        var = (sae.normalize(x) - sae.normalize(x).mean(0)).pow(2).sum(-1).mean() / sae.config.d_in
                        entry = {
                            "step": step,
                            "mse": float(out["mse"]),
                            "fvu": float(out["mse"] / var.clamp(min=1e-12)),
                            "l0": float((out["z"] > 0).sum(-1).float().mean()),
                            "dead": float(dead.float().mean()),
                            "aux": float(out["aux"]),
                            "lr": opt.param_groups[0]["lr"],
                        }
                    log.history.append(entry)
                    if bar is not None:
                        bar.set_postfix(fvu=f"{entry['fvu']:.3f}", l0=f"{entry['l0']:.1f}", dead=f"{entry['dead']:.2f}")
                if bar is not None:
                    bar.update(1)
            epoch += 1
    finally:
        if bar is not None:
            bar.close()
        sae.eval()
    if hasattr(sae, "calibrate"):  # e.g. the BatchTopK inference threshold
        sae.calibrate(data.sample(config.init_sample, seed=config.seed + 1).to(device))
    log.steps = step
    log.seconds = time.perf_counter() - start
    return log
