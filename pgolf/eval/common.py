"""What every evaluator shares: the validation stream, the score accumulator, results.

Conventions: the stream `tokens` holds N+1 tokens; target i (0 <= i < N) is
tokens[i+1], predicted from tokens[:i+1]; its byte count uses tokens[i] as the
previous token. Every evaluator scores each target of the stream exactly once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf import dist
from pgolf.data.bpb import ByteTables, bpb
from pgolf.errors import DataError

# Methods whose score of a target is fixed before anything has seen that target.
SCORE_FIRST = {"plain": True, "sliding": True, "slot": False, "slot-causal": True, "ttt": True}
SCORE_FIRST.update({"ttt-lora": True, "ttt-phased": True})  # per-document LoRA TTT (issue 15)
DOCUMENT_METHODS = ("ttt-lora", "ttt-phased")  # need BOS-split documents; always score the whole split
SCORE_FIRST["ngram-tilt"] = True  # sliding + the causal n-gram tilt (issue 15)

CHALLENGE_EVAL_SECONDS = 600.0  # the challenge's evaluation budget


def prepare_stream(tokens: np.ndarray, seq_len: int, max_tokens: int | None = None, whole: bool = False) -> np.ndarray:
    """The stream an evaluation scores.

    With `max_tokens` N: exactly the first N targets (first N+1 tokens). Without: the
    seed's truncation to whole `seq_len` sequences, so full-split numbers match the seed's,
    or with `whole` every target of the split, the tail included (the frontier's rule).
    """
    if max_tokens is not None:
        if max_tokens < 1:
            raise DataError(f"--max-tokens must be >= 1, got {max_tokens}")
        if len(tokens) < max_tokens + 1:
            raise DataError(
                f"--max-tokens {max_tokens} needs {max_tokens + 1} validation tokens; the split has {len(tokens)}"
            )
        return tokens[: max_tokens + 1]
    if whole:
        if len(tokens) < 2:
            raise DataError(f"validation split too short ({len(tokens)} tokens)")
        return tokens
    usable = ((len(tokens) - 1) // seq_len) * seq_len
    if usable <= 0:
        raise DataError(f"validation split too short for seq_len={seq_len} ({len(tokens)} tokens)")
    return tokens[: usable + 1]


def autocast_context(device: torch.device, mode: str = "auto"):
    """bf16 autocast on CUDA (the seed's numerics), fp32 on CPU."""
    if device.type == "cuda" and mode in ("auto", "bf16"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device_ids(tokens: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device, non_blocking=True)


def nll_per_position(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of every position on fp32 logits, shape of `targets`."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous block of n items owned by `rank` (the seed's split)."""
    return n * rank // world, n * (rank + 1) // world


@dataclass
class Totals:
    loss_sum: float
    tokens: int
    bytes: int
    unk_tokens: int
    nll: np.ndarray | None = None  # per-target NLL in stream order, when recorded

    @property
    def val_loss(self) -> float:
        return bpb(self.loss_sum, self.tokens, self.bytes)[0]

    @property
    def val_bpb(self) -> float:
        return bpb(self.loss_sum, self.tokens, self.bytes)[1]


class Scorer:
    """Accumulates float64 sums of scored targets, and optionally each target's NLL by position."""

    def __init__(
        self,
        tables: ByteTables,
        device: torch.device,
        record: bool = False,
        post=None,
        probe=None,
        ledger=None,
    ):
        """`post`: a logits post-processor (targets, logits) -> log-probabilities (e.g. the n-gram
        tilt), with after_scored(targets); `probe`: the audit's C2 hook, shown the full
        log-distribution of sampled targets; `ledger`: a ScoreLedger told what is scored."""
        self.post = post
        self.probe = probe
        self.ledger = ledger
        self.tables = tables.to(device)
        self.device = device
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, tokens, bytes, unk
        self.unk = torch.tensor(list(tables.unk_ids) or [-1], device=device)
        self.record = record
        self.pieces: list[tuple[int | np.ndarray, np.ndarray]] = []

    def score(
        self,
        logits: Tensor,
        targets: Tensor,
        prev: Tensor,
        first_target: int | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """Score targets from the method's final logits [n, V] (rows in the order of `targets`):
        the post-processor (if any) makes the distribution, its NLL is added. Returns the NLL."""
        y = targets.reshape(-1)
        if self.post is None and self.probe is None:
            nll = nll_per_position(logits.reshape(y.numel(), -1), y)
            self.add(nll, targets, prev, first_target, index)
            return nll
        idx = target_indices(y.numel(), first_target, index)
        # Under the audit's probe the distribution is made in float64, so that C2 can check it to 1e-6.
        lg = logits.reshape(y.numel(), -1)
        lg = lg.double() if self.probe is not None else lg.float()
        logp = self.post(idx, lg) if self.post is not None else torch.log_softmax(lg, dim=-1)
        nll = -logp.gather(1, y[:, None]).squeeze(1)
        if self.probe is not None:
            self.probe.take(idx, logp, nll, y)
        self.add(nll, targets, prev, first_target, index)
        if self.post is not None:
            self.post.after_scored(idx)
        return nll

    def add(
        self,
        nll: Tensor,
        targets: Tensor,
        prev: Tensor,
        first_target: int | None = None,
        index: Tensor | None = None,
    ) -> None:
        """Score targets given by their stream indices.

        Either a contiguous run starting at stream index `first_target`, or any set of
        targets with their stream indices in `index` (same shape as `targets`; target i is
        tokens[i+1]), e.g. the chunks of several documents scored together.
        """
        nll = nll.reshape(-1)
        t = targets.reshape(-1)
        p = prev.reshape(-1)
        run_start = None
        if index is None and first_target is not None:
            run_start = int(first_target)
            index = torch.arange(run_start, run_start + t.numel(), device=t.device)
        idx = None if index is None else index.reshape(-1)
        if idx is not None and idx.numel() != t.numel():
            raise ValueError(f"index has {idx.numel()} entries for {t.numel()} targets")
        self.sums[0] += nll.to(torch.float64).sum()
        self.sums[1] += t.numel()
        self.sums[2] += self.tables.count(t, p, idx).sum().to(torch.float64)
        self.sums[3] += torch.isin(t, self.unk).sum().to(torch.float64)
        if self.ledger is not None or self.probe is not None:
            where = target_indices(t.numel(), run_start, idx)
            nll64 = nll.detach().to(torch.float64).cpu().numpy()
            if self.ledger is not None:
                self.ledger.scored(where)  # the ledger's documented call
                if hasattr(self.ledger, "add_nll"):
                    self.ledger.add_nll(where, nll64)
            if self.probe is not None:
                self.probe.accumulated(where, nll64)
        if self.record:
            if idx is None:
                raise ValueError("recording NLLs needs the stream position of each scored target")
            where = run_start if run_start is not None else idx.detach().cpu().numpy().astype(np.int64)
            self.pieces.append((where, nll.detach().to(torch.float64).cpu().numpy()))

    def finish(self, n_targets: int | None = None) -> Totals:
        """All-reduce the sums (and gather recorded NLLs) across ranks."""
        dist.all_reduce_sum(self.sums)
        loss, tokens, nbytes, unk = (float(x) for x in self.sums.cpu())
        out = Totals(loss_sum=loss, tokens=int(round(tokens)), bytes=int(round(nbytes)), unk_tokens=int(round(unk)))
        if self.record:
            pieces = self.pieces
            if dist.active():
                gathered: list = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(gathered, pieces)
                pieces = [p for part in gathered for p in part]
            out.nll = assemble_nll(pieces, n_targets if n_targets is not None else out.tokens)
        return out


def target_indices(n: int, first_target: int | None, index) -> np.ndarray:
    """Stream indices of n scored targets: a run from `first_target`, or the given `index`."""
    if index is not None:
        return (
            index.reshape(-1).detach().cpu().numpy().astype(np.int64) if torch.is_tensor(index) else np.asarray(index)
        )
    if first_target is None:
        raise ValueError("scoring needs the stream position of each target (first_target or index)")
    return np.arange(int(first_target), int(first_target) + n, dtype=np.int64)


def assemble_nll(pieces: list[tuple[int | np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Place recorded scores (a run's first index, or every target's index) into one array,
    checking every target is scored exactly once."""
    out = np.zeros(n, dtype=np.float64)
    seen = np.zeros(n, dtype=np.int32)
    for where, values in pieces:
        idx = np.arange(int(where), int(where) + len(values)) if np.ndim(where) == 0 else np.asarray(where)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise RuntimeError(f"a scored target index is outside the stream's {n} targets")
        out[idx] = values
        np.add.at(seen, idx, 1)
    if not np.all(seen == 1):
        bad = int(np.argmax(seen != 1))
        raise RuntimeError(f"target {bad} was scored {int(seen[bad])} times (each must be scored exactly once)")
    return out


@dataclass
class EvalResult:
    method: str
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    score_first: bool
    unk_tokens: int = 0
    world_size: int = 1
    device: str = "cpu"
    max_tokens: int | None = None
    params: dict = field(default_factory=dict)
    # Seconds of every phase from opening the artifact (imports, read, decompress, dequantise, to_device,
    # compile_warmup, diagnostic, scoring, ttt_training, ngram_hints), their sum, and the verdict.
    phases: dict = field(default_factory=dict)
    total_seconds: float = 0.0
    within_600s: bool = True

    def set_phases(self, phases: dict) -> None:
        self.phases = {k: float(v) for k, v in phases.items()}
        self.total_seconds = float(sum(self.phases.values()))
        self.within_600s = self.total_seconds <= CHALLENGE_EVAL_SECONDS

    def to_dict(self) -> dict:
        return asdict(self)


def make_result(
    method: str, totals: Totals, seconds: float, device: torch.device, params: dict, max_tokens: int | None
) -> EvalResult:
    return EvalResult(
        method=method,
        val_loss=totals.val_loss,
        val_bpb=totals.val_bpb,
        tokens=totals.tokens,
        bytes=totals.bytes,
        seconds=seconds,
        score_first=SCORE_FIRST[method],
        unk_tokens=totals.unk_tokens,
        world_size=torch.distributed.get_world_size() if dist.active() else 1,
        device=str(device),
        max_tokens=max_tokens,
        params=params,
    )


def default_logits_fn(model) -> Callable[[Tensor], Tensor]:
    return lambda x: model.compute_logits(model.forward_hidden(x))


class Timer:
    """Wall time of a section, synchronising CUDA at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.active():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def my_share(items: list) -> list:
    """This rank's contiguous block of a list that every rank builds identically.

    Evaluators form their batches in stream order first and only then hand whole
    batches to ranks, so what a batch contains never depends on the world size.
    """
    rank, world = rank_world()
    lo, hi = rank_slice(len(items), rank, world)
    return items[lo:hi]
