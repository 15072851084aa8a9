"""The seed's two-pass SLOT (SPEC §8.4). NOT score-first: see §8.5 and docs/evaluation.md.

Per batch of windows: hidden states once (no grad), then per window a hidden offset
delta [d] and a logit bias [V], both zero-initialised, fitted by AdamW for `steps`
steps on the window's own scored targets (batch-wide mean, as the seed), and the
scored targets' NLL is taken with the fitted tensors. The score of a target therefore
depends on that target itself: it is reported, labelled `score_first: false`, and
never mixed with valid scores.

Two implementations with the same loss and gradients:

- "full" (the seed's): head, soft-cap and cross-entropy over every position of every
  window in every step, masked to the scored positions.
- "scored" (default): the scored hidden states of the whole batch gathered into one
  [n_scored, d] matrix with a window index that picks each row's delta and bias; the
  head runs on those rows only (96 of 2048 per full window at the seed's settings), its
  product with the output matrix once per batch, and the gradients in closed form
  (`WindowOffsets`).

Differences from the seed, both documented: the windows are `plan_windows`' (tail
targets scored once, not 21-22 times), and batches are consecutive windows in stream
order for every world size (the seed deals windows to ranks round-robin, so its
batches, and through the batch-wide loss its numbers, depend on the number of GPUs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.data.bpb import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.common import Scorer, Totals, autocast_context, my_share
from pgolf.eval.sliding import WindowBatch, make_batch, window_batches

SCHEDULES = ("seed", "exact")
IMPLS = ("scored", "full")
ADAMW = {"weight_decay": 1e-8, "eps": 1e-5}  # the seed's (and the SLOT paper's) settings, default betas


def lr_at(i: int, steps: int, lr_max: float, lr_min: float, schedule: str = "seed") -> float:
    """Learning rate of step i (0-based) of a cosine from lr_max towards lr_min.

    "seed": denominator `steps`, so the last step stays above lr_min (SPEC §11.6);
    "exact": denominator steps-1, so the last step uses lr_min; a single step uses lr_max.
    """
    if schedule == "seed":
        frac = i / steps
    elif schedule == "exact":
        frac = i / (steps - 1) if steps > 1 else 0.0
    else:
        raise ConfigError(f"eval.slot_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * frac))


class Head:
    """The model's output head on fp32 tensors, as a pure function of (hidden, bias).

    Mirrors GPT.compute_logits (bias before the soft-cap) with the weight detached, so
    fitting delta/bias never touches the model's parameters.
    """

    def __init__(self, model):
        w = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
        self.weight = w.detach().float()
        self.cap = float(model.config.logit_softcap)

    def __call__(self, h: Tensor, bias: Tensor | None = None) -> Tensor:
        logits = F.linear(h, self.weight)
        if bias is not None:
            logits = logits + bias
        return self.cap * torch.tanh(logits / self.cap)


def ce(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def fit(params: list[Tensor], backward: Callable[[], None], steps: int, lr: float, lr_min: float, schedule: str):
    """`steps` AdamW updates of `params` (zeros, fp32); `backward()` fills their .grad. The seed's settings."""
    if steps <= 0:
        return
    opt = torch.optim.AdamW(params, lr=lr, **ADAMW)
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(i, steps, lr, lr_min, schedule)
        opt.zero_grad(set_to_none=True)
        backward()
        opt.step()


class WindowOffsets:
    """Per-window hidden offset delta_w [d] and logit bias beta_w [V] over a set of rows.

    Row i belongs to window w = win[i] and has head input h_i and target y_i; the loss is
    sum_i window_weight[w] * CE(cap*tanh(((h_i + delta_w) W^T + beta_w)/cap), y_i).

    Because delta_w is shared by the window's rows, (h_i + delta_w) W^T = h_i W^T + delta_w W^T:
    the big product h W^T is computed once, and each step only adds a [windows, V] offset.
    The gradients are written out: with dz_i = (softmax_i - onehot(y_i)) (1 - tanh_i^2),
    grad beta_w = window_weight[w] sum_{i in w} dz_i and grad delta_w = (grad beta_w) W. No [rows, V] x [V, d]
    product is needed in the loop at all. Same loss and gradients as autograd through the
    seed's expression (up to float rounding; tested against it).
    """

    def __init__(
        self, head: Head, h: Tensor, y: Tensor, win: Tensor, window_weight: Tensor, nwin: int, use_bias: bool = True
    ):
        self.w_out, self.cap = head.weight, head.cap
        # [n, V], fixed during the fit; pre-divided by the cap so each step is one add and one tanh.
        self.base = F.linear(h, self.w_out).div_(self.cap)
        self.y, self.win = y, win
        self.window_weight = window_weight[:, None]  # [windows, 1]: each row's loss weight is its window's
        self.rows = torch.arange(y.numel(), device=y.device)
        self.nwin = nwin
        self.delta = torch.zeros(nwin, h.size(-1), device=h.device)
        self.bias = torch.zeros(nwin, self.w_out.size(0), device=h.device) if use_bias else None

    @property
    def params(self) -> list[Tensor]:
        return [self.delta] if self.bias is None else [self.delta, self.bias]

    def _tanh(self) -> Tensor:
        off = F.linear(self.delta, self.w_out)  # [windows, V]
        if self.bias is not None:
            off = off + self.bias
        return off.div_(self.cap).index_select(0, self.win).add_(self.base).tanh_()

    def backward(self) -> None:
        t = self._tanh()
        g = torch.softmax(t * self.cap, dim=-1)
        g[self.rows, self.y] -= 1.0  # dCE/dlogits
        g.addcmul_(g, t.square_(), value=-1.0)  # times dlogits/dz = 1 - tanh^2
        gsum = torch.zeros(self.nwin, g.size(1), device=g.device).index_add_(0, self.win, g)
        gsum.mul_(self.window_weight)
        self.delta.grad = gsum @ self.w_out
        if self.bias is not None:
            self.bias.grad = gsum

    def logits(self) -> Tensor:
        """Final logits of the fitted rows with the current delta/bias."""
        return self._tanh().mul_(self.cap)

    def nll(self) -> Tensor:
        """NLL of the fitted rows with the current delta/bias."""
        logits = self.logits()
        return torch.logsumexp(logits, dim=-1) - logits[self.rows, self.y]

    def logits_of(self, h: Tensor, win: Tensor) -> Tensor:
        """Final logits of other rows (e.g. the positions a causal fit did not see)."""
        logits = F.linear(h + self.delta[win], self.w_out)
        if self.bias is not None:
            logits = logits + self.bias[win]
        return self.cap * torch.tanh(logits / self.cap)

    def nll_of(self, h: Tensor, y: Tensor, win: Tensor) -> Tensor:
        """NLL of other rows with the current delta/bias."""
        return ce(self.logits_of(h, win), y)


def hidden_fp32(model, b: WindowBatch, device, autocast, hidden_fn) -> Tensor:
    """The frozen model's hidden states of a batch, computed once (bf16 on CUDA), as fp32."""
    with torch.no_grad(), autocast_context(device, autocast):
        h = hidden_fn(b.x)
    return h.float()


def slot_problem(
    head: Head, b: WindowBatch, h: Tensor, impl: str
) -> tuple[list[Tensor], Callable[[], None], Callable[[], Tensor]]:
    """(params, backward, final_nll) of one batch: what `fit` optimises, then what is scored."""
    params, backward, final_logits = slot_parts(head, b, h, impl)
    y = b.y[b.rows, b.cols]
    return params, backward, lambda: ce(final_logits(), y)


def slot_parts(
    head: Head, b: WindowBatch, h: Tensor, impl: str
) -> tuple[list[Tensor], Callable[[], None], Callable[[], Tensor]]:
    """(params, backward, final_logits) of one batch; final_logits: [n_scored, V] in stream order."""
    if impl == "full":
        nwin, d, V = h.size(0), h.size(-1), head.weight.size(0)
        delta = torch.zeros(nwin, 1, d, device=h.device, requires_grad=True)
        bias = torch.zeros(nwin, 1, V, device=h.device, requires_grad=True)
        mask = torch.zeros(b.y.shape, dtype=torch.float32, device=h.device)
        mask[b.rows, b.cols] = 1.0
        n_valid = mask.sum()

        def backward_full() -> None:
            # The seed: logits for every position of every window, masked to the scored ones.
            ((ce(head(h + delta, bias), b.y) * mask).sum() / n_valid).backward()

        def final_full() -> Tensor:
            return head(h + delta, bias)[b.rows, b.cols]

        return [delta, bias], backward_full, final_full
    if impl != "scored":
        raise ConfigError(f"eval.slot_impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    # Unscored positions carry no loss and (delta, bias are shared per window) no gradient:
    # only the scored rows of all windows, each picking its window's delta and bias, with the
    # seed's batch-wide normalisation 1/n_scored.
    nwin = h.size(0)
    weight = torch.full((nwin,), 1.0 / b.n_scored, device=h.device)
    fitter = WindowOffsets(head, h[b.rows, b.cols], b.y[b.rows, b.cols], b.rows, weight, nwin)
    return fitter.params, fitter.backward, fitter.logits


def slot_batch(
    head: Head,
    b: WindowBatch,
    h: Tensor,
    steps: int,
    lr: float,
    lr_min: float,
    schedule: str,
    impl: str,
    ledger=None,
) -> Tensor:
    """Final logits of the batch's scored targets (stream order) after fitting per-window delta/bias on them."""
    params, backward, final_logits = slot_parts(head, b, h, impl)
    if ledger is not None and steps > 0:
        # The fit's loss reads the scored targets themselves (and their inputs), before they are scored.
        lo, hi = b.windows[0].start, b.windows[-1].start + b.windows[-1].score_to
        ledger.read(np.arange(lo, hi + 1), "SLOT fit")
    fit(params, backward, steps, lr, lr_min, schedule)
    with torch.no_grad():
        return final_logits()


def evaluate_slot(
    model,
    tokens: np.ndarray,
    tables: ByteTables,
    seq_len: int,
    stride: int,
    batch_seqs: int,
    device: torch.device,
    steps: int = 24,
    lr: float = 0.012,
    lr_min: float = 0.001,
    schedule: str = "seed",
    impl: str = "scored",
    autocast: str = "auto",
    record: bool = False,
    hidden_fn: Callable[[Tensor], Tensor] | None = None,
    progress=None,
    post=None,
    probe=None,
    ledger=None,
) -> Totals:
    """Two-pass SLOT over targets 0..N-1 of `tokens`; each target scored once (after fitting on it)."""
    if impl not in IMPLS:
        raise ConfigError(f"eval.slot_impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    lr_at(0, max(steps, 1), lr, lr_min, schedule)  # validates the schedule name up front
    hidden_fn = hidden_fn or model.forward_hidden
    n_targets = len(tokens) - 1
    scorer = Scorer(tables, device, record=record, post=post, probe=probe, ledger=ledger)
    head = Head(model)
    was_training = model.training
    model.eval()
    try:
        for group in my_share(window_batches(n_targets, seq_len, stride, batch_seqs)):
            b = make_batch(tokens, group, device, pad_to=seq_len)
            h = hidden_fp32(model, b, device, autocast, hidden_fn)
            logits = slot_batch(head, b, h, steps, lr, lr_min, schedule, impl, ledger)
            scorer.score(logits, b.y[b.rows, b.cols], b.x[b.rows, b.cols], first_target=b.first_target)
            if progress is not None:
                progress.update(b.n_scored)
    finally:
        model.train(was_training)
    return scorer.finish(n_targets)
