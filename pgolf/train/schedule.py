"""Pure schedule functions: the wall-clock warmdown, Muon momentum warm-up, EMA update."""

from __future__ import annotations

import torch


def lr_multiplier(step: int, elapsed_ms: float, iterations: int, warmdown_iters: int, max_wallclock_s: float) -> float:
    """The seed's LR multiplier (SPEC §6.4).

    With a wall-clock cap, the warmdown is scheduled in time: the last
    `warmdown_iters` steps' worth of time (estimated from the mean step time so
    far) decays linearly to zero at the cap. Without a cap it is step-based.
    """
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_s <= 0:
        start = max(iterations - warmdown_iters, 0)
        if start <= step < iterations:
            return max((iterations - step) / max(warmdown_iters, 1), 0.0)
        return 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(1000.0 * max_wallclock_s - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def muon_momentum(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Linear ramp from `start` to `end` over `warmup_steps` steps (0-based step index)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], state: dict[str, torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * w, in fp32, for every state-dict entry."""
    for k, v in state.items():
        ema[k].mul_(decay).add_(v.detach().float(), alpha=1.0 - decay)


def training_fraction(step: int, elapsed_ms: float, iterations: int, cap_ms: float | None) -> float:
    """How far training is (FRONTIER F3.5): elapsed / cap with a wall-clock cap, else step / iterations.
    Measured before the step is taken."""
    if cap_ms is None:
        return step / max(iterations, 1)
    return elapsed_ms / max(cap_ms, 1e-9)


def frac_lr_multiplier(frac: float, warmdown_frac: float, min_lr: float) -> float:
    """#1855's LR multiplier: 1 until 1 - warmdown_frac, then linear to 0, floored at min_lr."""
    if warmdown_frac <= 0:
        return 1.0
    if frac >= 1.0 - warmdown_frac:
        return max((1.0 - frac) / warmdown_frac, min_lr)
    return 1.0


class Schedule:
    """Everything a step's settings depend on, from the config alone: the trainer asks it before
    each step (and tests simulate a budget with it). Pure: no clock of its own.

    With `train.warmdown_frac` > 0 the LR follows #1855 (F3.5), else the seed's warmdown_iters
    rule; `train.gptq_reserve_seconds` comes off the wall-clock budget; the loops switch on
    at `model.enable_looping_at` of the training fraction.
    """

    def __init__(self, cfg) -> None:
        self.t, self.o, self.m = cfg.train, cfg.optim, cfg.model
        t = self.t
        capped = t.max_wallclock_seconds > 0
        self.budget_s = t.max_wallclock_seconds - t.gptq_reserve_seconds if capped else 0.0
        self.cap_ms = 1000.0 * self.budget_s if capped else None

    def fraction(self, step: int, elapsed_ms: float) -> float:
        return training_fraction(step, elapsed_ms, self.t.iterations, self.cap_ms)

    def lr_mult(self, step: int, elapsed_ms: float) -> float:
        t = self.t
        if t.warmdown_frac > 0:
            return frac_lr_multiplier(self.fraction(step, elapsed_ms), t.warmdown_frac, t.min_lr)
        mult = lr_multiplier(step, elapsed_ms, t.iterations, t.warmdown_iters, self.budget_s)
        return max(mult, t.min_lr) if mult < 1.0 else mult

    def momentum(self, step: int) -> float:
        o = self.o
        return muon_momentum(step, o.muon_momentum_warmup_start, o.muon_momentum, o.muon_momentum_warmup_steps)

    def looping(self, step: int, elapsed_ms: float) -> bool:
        return self.m.num_loops > 0 and self.fraction(step, elapsed_ms) >= self.m.enable_looping_at
