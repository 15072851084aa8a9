"""Per-document batched LoRA adapters for test-time training (FRONTIER F6.5).

Row b of a batch holds one document and has its own adapters: for each adapted projection
a pair A [bsz, r, in], B [bsz, out, r] adding delta(x) = (x A_b^T) B_b^T * alpha / r to row b.
A starts uniform in (-1/sqrt(in), 1/sqrt(in)), B at zero, so a fresh adapter changes nothing
until its first step.

One set per EXECUTED layer pass (slot): with depth recurrence a repeated layer has one set
per repeat. Each set adapts Q, K, V (fed the block's normed attention input), "O" (fed the
same normed input, added after the out-projection before attn_scale) and the MLP (fed the
normed MLP input, added before mlp_scale); one more on the LM head (final-normed hidden to
logits, before the soft-cap). The model consults them through `forward_hidden(...,
adapters=)` and `compute_logits(..., adapters=)`: `slot(k)` gives pass k's set.

Every document draws its A from its own generator (`init_rows`), seeded by the document's
index, so what a document starts from does not depend on its batch, its row or the number
of processes. One draw per document: u = U(0, 1) values for all its A's in order (the head,
then every slot's q, k, v, o, mlp that are enabled), each A = (2u - 1) / sqrt(in) of its
[r, in] slice.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pgolf.errors import ConfigError

SLOT_PARTS = ("q", "k", "v", "o", "mlp")


class BatchedLoRA(nn.Module):
    def __init__(self, bsz: int, in_features: int, out_features: int, rank: int, alpha: float, device=None):
        super().__init__()
        self.bound = 1.0 / math.sqrt(in_features)
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.zeros(bsz, rank, in_features, device=device))
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return ((x @ self.A.transpose(1, 2).to(x.dtype)) @ self.B.transpose(1, 2).to(x.dtype)) * self.scale


class SlotLoRA(nn.Module):
    """One executed layer pass's adapters; a part switched off is None."""

    def __init__(self, bsz: int, dim: int, kv_dim: int, rank: int, alpha: float, parts: tuple[str, ...], device=None):
        super().__init__()
        outs = {"q": dim, "k": kv_dim, "v": kv_dim, "o": dim, "mlp": dim}
        for name in SLOT_PARTS:
            lora = BatchedLoRA(bsz, dim, outs[name], rank, alpha, device) if name in parts else None
            setattr(self, name, lora)

    def loras(self) -> list[BatchedLoRA]:
        return [getattr(self, n) for n in SLOT_PARTS if getattr(self, n) is not None]


def adapter_parts(k_lora: bool = True, o_lora: bool = True, mlp_lora: bool = True) -> tuple[str, ...]:
    """Q and V are always adapted (as the record); K, O and MLP by switch."""
    return tuple(n for n, on in zip(SLOT_PARTS, (True, k_lora, True, o_lora, mlp_lora)) if on)


def num_slots(model) -> int:
    encoder, decoder = model.schedules[model.looping]
    return len(encoder) + len(decoder)


def check_rank(model, rank: int, parts: tuple[str, ...]) -> None:
    """A rank above a projection's smaller side is refused (the adapter would be over-parametrised)."""
    cfg = model.config
    dim, kv = cfg.model_dim, cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads)
    sides = {"q": (dim, dim), "k": (dim, kv), "v": (dim, kv), "o": (dim, dim), "mlp": (dim, dim)}
    sides = {n: sides[n] for n in parts} | {"head": (dim, cfg.vocab_size)}
    name, (i, o) = min(sides.items(), key=lambda kv_: min(kv_[1]))
    if rank > min(i, o):
        raise ConfigError(
            f"eval.ttt_lora_rank={rank} is larger than the {name} projection it adapts "
            f"({i} -> {o}): at most {min(i, o)}"
        )


class DocumentAdapters(nn.Module):
    """All adapters of a batch of `bsz` documents for `model`."""

    def __init__(self, model, bsz: int, rank: int, alpha: float, parts: tuple[str, ...] = SLOT_PARTS):
        super().__init__()
        check_rank(model, rank, parts)
        cfg = model.config
        dim = cfg.model_dim
        kv = cfg.num_kv_heads * (dim // cfg.num_heads)
        self.bsz = bsz
        device = model.tok_emb.weight.device  # built where the model is (at the record's size, 445 M values)
        self.head = BatchedLoRA(bsz, dim, cfg.vocab_size, rank, alpha, device)
        self.slots = nn.ModuleList(SlotLoRA(bsz, dim, kv, rank, alpha, parts, device) for _ in range(num_slots(model)))

    def slot(self, k: int) -> SlotLoRA:
        return self.slots[k]

    def loras(self) -> list[BatchedLoRA]:
        return [self.head, *(lo for s in self.slots for lo in s.loras())]

    @torch.no_grad()
    def init_rows(self, seeds: list[int]) -> None:
        """Fresh adapters for rows 0..len(seeds)-1: row b's A from a generator seeded with seeds[b], B = 0.

        One draw per document (a few kernels per batch, not one per adapter and document): u, the
        document's U(0, 1) values for all its A's in `loras()` order, each A = (2u - 1) * bound.
        """
        device, n = self.head.A.device, len(seeds)
        loras = self.loras()
        sizes = [lo.A[0].numel() for lo in loras]
        u = torch.empty(n, sum(sizes), device=device)
        for b, seed in enumerate(seeds):
            gen = torch.Generator(device=device)
            gen.manual_seed(int(seed))
            u[b].uniform_(0.0, 1.0, generator=gen)
        off = 0
        for lo, size in zip(loras, sizes):
            lo.A[:n] = ((2 * u[:, off : off + size] - 1) * lo.bound).view(n, *lo.A.shape[1:])
            lo.B[:n] = 0
            off += size

    @torch.no_grad()
    def keep_rows(self, keep: Tensor) -> None:
        """Drop every row not in `keep` (documents with no chunk left), gradients included.
        The parameters are replaced by new ones (hand `parameters()` to the optimiser again)."""
        for lo in self.loras():
            for name in ("A", "B"):
                old = getattr(lo, name)
                new = nn.Parameter(old.data[keep])
                new.grad = None if old.grad is None else old.grad[keep]
                setattr(lo, name, new)


class BatchedAdamW:
    """AdamW (decoupled weight decay, bias correction; torch.optim.AdamW's arithmetic) over
    tensors whose first axis is the document, so rows can be dropped between steps
    (`keep_rows`): a finished document then costs nothing. All rows share the step count,
    as every document of a batch starts at its chunk 0 together."""

    def __init__(self, params: list, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
        self.params, self.lr, self.betas, self.eps, self.wd = list(params), lr, betas, eps, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def keep_rows(self, keep: Tensor, params: list) -> None:
        """Keep the state of rows `keep`; `params` are the (new) parameters, in the same order."""
        self.params = list(params)
        self.m = [m[keep] for m in self.m]
        self.v = [v[keep] for v in self.v]

    @torch.no_grad()
    def step(self) -> None:
        """One step over all tensors at once (multi-tensor kernels: ~170 adapter tensors per batch)."""
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2_sqrt = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
        ps = self.params
        gs = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        torch._foreach_mul_(ps, 1 - self.lr * self.wd)
        torch._foreach_lerp_(self.m, gs, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, gs, gs, value=1 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(ps, self.m, denom, value=-self.lr / bc1)


def document_seed(base_seed: int, doc_index: int) -> int:
    """The generator seed of a document's adapters (a function of the document alone)."""
    return (int(base_seed) << 32) + int(doc_index)
