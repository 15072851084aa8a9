"""Hessian calibration for the frontier export, callable inside the training budget (F5.2, F7.3(a), F8.2).

The trainer calls `calibrate_run(...)` after its loop and before the final validation,
with the seconds left of its budget: it collects the Hessians from TRAINING tokens
(`record_batches`, the record's calibration sampler), writes them to RUN/hessians.safetensors
and the accounting to RUN/calibration.json (seconds, loop seconds, budget, whether
loop + calibration fit). `pgolf export` then uses them and reports that accounting; a run
without them is calibrated at export time, which the report marks as outside the budget.

Hooks: the input of every nn.Linear (key "<module>.weight"), the input of the tied head
(the final-normed hidden state, key "tok_emb.weight", as the record's final_norm hook), and
whatever a model lists in `quant_taps()` — (module, [weight names], "input" | "output") —
for weights that are not Linear modules (the frontier model's banks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pgolf.errors import DataError

HESSIANS_FILE = "hessians.safetensors"
CALIBRATION_JSON = "calibration.json"


# --------------------------------------------------------------------------- data
def record_batches(
    data_dir: str | Path, seq_len: int, batch_seqs: int, n_batches: int, rank: int = 0, world_size: int = 8
) -> Iterator[Tensor]:
    """The record's `ShuffledSequenceLoader` inputs, [batch_seqs, seq_len] int64, from the TRAIN split only.

    Rank r reads shards files[r::world_size] with a PCG64(r) generator: a random phase per
    shard, a random permutation of its (seq_len + 1)-token windows, each draw from a shard
    chosen in proportion to its remaining windows (F5.2). The default, rank 0 of 8, is the
    data that shaped the record's artifact (only rank 0 writes it, F8.3).
    """
    from pgolf.data import shards
    from pgolf.quant.gptq import TRAIN_SHARD

    files = [p for p in shards.list_shards(data_dir, "train")][rank::world_size]
    for p in files:
        if not TRAIN_SHARD.search(Path(p).name):
            raise DataError(f"{p}: not a training shard; calibration reads the train split only")
    if not files:
        raise DataError(f"{data_dir}: no training shards for calibration rank {rank} of {world_size}")
    rng = np.random.Generator(np.random.PCG64(rank))
    toks = [shards.read_shard(p) for p in files]
    starts: list[list[int]] = [[] for _ in files]

    def reset(si: int) -> None:
        n = len(toks[si])
        max_phase = min(seq_len - 1, max(0, n - seq_len - 1))
        phase = int(rng.integers(max_phase + 1)) if max_phase > 0 else 0
        count = (n - 1 - phase) // seq_len
        starts[si] = (phase + rng.permutation(count) * seq_len).tolist()

    for si in range(len(files)):
        reset(si)
    for _ in range(n_batches):
        x = torch.empty((batch_seqs, seq_len), dtype=torch.int64)
        remaining = np.array([len(s) for s in starts], dtype=np.float64)
        for bi in range(batch_seqs):
            total = remaining.sum()
            if total <= 0:
                for si in range(len(files)):
                    reset(si)
                remaining = np.array([len(s) for s in starts], dtype=np.float64)
                total = remaining.sum()
                if total <= 0:
                    raise DataError(f"{data_dir}: training shards are shorter than one calibration window")
            si = int(rng.choice(len(files), p=remaining / total))
            st = starts[si].pop()
            remaining[si] -= 1
            x[bi] = torch.from_numpy(np.asarray(toks[si][st : st + seq_len], dtype=np.int64))
        yield x


# --------------------------------------------------------------------------- Hessians
@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    batches: Iterable[Tensor],
    names: Iterable[str] | None = None,
    dtype: torch.dtype = torch.float64,
    max_seconds: float | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """(Hessians, act_rms, info): H = Σ XᵀX / n_batches (the record's normalisation; GPTQ ignores the
    scale), act_rms_c = sqrt(Σ x_c² / N) for AWQ-lite; info has batches, tokens, seconds and
    whether `max_seconds` cut it short (then fewer batches were used)."""
    wanted = None if names is None else set(names)
    sums: dict[str, Tensor] = {}
    sq: dict[str, Tensor] = {}
    count: dict[str, int] = {}

    def add(keys: list[str], x: Tensor) -> None:
        x = x.detach().reshape(-1, x.size(-1)).to(dtype)
        xtx, x2 = x.T @ x, x.square().sum(0)
        for k in keys:
            if wanted is not None and k not in wanted:
                continue
            sums[k] = sums[k] + xtx if k in sums else xtx.clone()
            sq[k] = sq[k] + x2 if k in sq else x2.clone()
            count[k] = count.get(k, 0) + x.size(0)

    hooks = []
    tapped: set[str] = set()
    taps = model.quant_taps() if hasattr(model, "quant_taps") else []
    for mod, keys, where in taps:
        keys = list(keys)
        tapped.update(keys)
        if where == "input":
            hooks.append(mod.register_forward_hook(lambda _m, i, _o, k=keys: add(k, i[0])))
        else:
            hooks.append(mod.register_forward_hook(lambda _m, _i, o, k=keys: add(k, o)))
    for name, mod in model.named_modules():
        key = f"{name}.weight"
        if isinstance(mod, nn.Linear) and key not in tapped:
            hooks.append(mod.register_forward_hook(lambda _m, i, _o, k=[key]: add(k, i[0])))
    tied = getattr(model, "lm_head", None) is None and hasattr(model, "tok_emb") and "tok_emb.weight" not in tapped
    t0 = time.perf_counter()
    n_batches, tokens, cut = 0, 0, False
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        for ids in batches:
            if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
                cut = True
                break
            hidden = model.forward_hidden(ids.to(device))
            if tied:
                add(["tok_emb.weight"], hidden)
            n_batches += 1
            tokens += ids.numel()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    hess = {k: (s / max(1, n_batches)).float().cpu() for k, s in sums.items()}
    act = {k: (sq[k] / max(1, count[k])).sqrt().float().cpu() for k in sq}
    info = {"batches": n_batches, "tokens": tokens, "seconds": time.perf_counter() - t0, "cut_short": cut}
    return hess, act, info


# --------------------------------------------------------------------------- inside the training budget
def calibrate_run(
    model: nn.Module,
    run_dir: str | Path,
    batches: Iterable[Tensor],
    loop_seconds: float,
    budget_seconds: float,
    dtype: torch.dtype = torch.float64,
    names: Iterable[str] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict:
    """Collect Hessians with what is left of the budget; write RUN/hessians.safetensors and RUN/calibration.json.

    `budget_seconds` <= 0 means no cap: calibration then runs to the end and counts as within.
    """
    from safetensors.torch import save_file

    left = budget_seconds - loop_seconds if budget_seconds > 0 else None
    hess, act, info = collect_hessians(model, batches, names, dtype, max_seconds=left)
    run_dir = Path(run_dir)
    tensors = {f"H.{k}": v.contiguous() for k, v in hess.items()} | {f"R.{k}": v.contiguous() for k, v in act.items()}
    save_file(tensors, str(run_dir / HESSIANS_FILE))
    acct = accounting(info, loop_seconds, budget_seconds, at_export=False)
    (run_dir / CALIBRATION_JSON).write_text(json.dumps(acct, indent=1) + "\n")
    log(
        f"calibration: {info['batches']} batches, {info['seconds']:.1f}s; loop + calibration "
        f"{acct['loop_plus_calibration_s']:.1f}s of {budget_seconds:.0f}s "
        f"({'within' if acct['within_budget'] else 'OVER'})"
    )
    return acct


def accounting(info: dict, loop_seconds: float | None, budget_seconds: float | None, at_export: bool) -> dict:
    """What the export report says about when the training data was read for calibration."""
    total = None if loop_seconds is None else loop_seconds + info["seconds"]
    if at_export:
        within = False  # calibrated after training: the training budget cannot have covered it
    else:
        within = budget_seconds is None or budget_seconds <= 0 or (total is not None and total <= budget_seconds)
    return {
        **{k: info[k] for k in ("batches", "tokens", "cut_short")},
        "calibration_s": round(info["seconds"], 3),
        "loop_s": loop_seconds,
        "loop_plus_calibration_s": None if total is None else round(total, 3),
        "budget_s": budget_seconds,
        "within_budget": within,
        "when": "at export, after training" if at_export else "in the trainer, inside its budget",
    }


def load_run_hessians(run_dir: str | Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict] | None:
    """(Hessians, act_rms, accounting) a trainer saved, or None."""
    run_dir = Path(run_dir)
    path, acct_path = run_dir / HESSIANS_FILE, run_dir / CALIBRATION_JSON
    if not path.is_file() or not acct_path.is_file():
        return None
    from safetensors.torch import load_file

    from pgolf.errors import ArtifactError

    try:
        t = load_file(str(path))
        acct = json.loads(acct_path.read_text())
    except Exception as e:  # noqa: BLE001 - safetensors/json raise several types for a bad file
        raise ArtifactError(f"{path}: unreadable calibration ({' '.join(str(e).split())[:160]})") from None
    hess = {k[2:]: v for k, v in t.items() if k.startswith("H.")}
    act = {k[2:]: v for k, v in t.items() if k.startswith("R.")}
    return hess, act, acct
