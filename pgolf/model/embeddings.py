"""Input-side modules: the hashed bigram embedding, the smear gate, the shared value embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear

BIGRAM_MUL_CUR = 36313
BIGRAM_MUL_PREV = 27191


def bigram_ids(ids: Tensor, buckets: int) -> Tensor:
    """Bucket of each position: ((36313*id[t]) ^ (27191*id[t-1])) mod (buckets-1), in int32.

    Position 0 of every row gets the reserved bucket buckets-1 ("no predecessor"),
    even when the stream has a real predecessor.
    """
    x = ids.to(torch.int32)
    mod = buckets - 1
    out = torch.empty_like(x)
    out[..., 0] = mod
    out[..., 1:] = torch.bitwise_xor(BIGRAM_MUL_CUR * x[..., 1:], BIGRAM_MUL_PREV * x[..., :-1]) % mod
    return out.long()


class BigramHash(nn.Module):
    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        # Zero-filled here, then overwritten by the global orthogonal init (seed order, SPEC 11.20).
        self.proj = CastedLinear(dim, model_dim) if dim != model_dim else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))

    def forward(self, ids: Tensor, emb) -> Tensor:
        h = emb(self.embed, bigram_ids(ids, self.buckets))
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)


class SmearGate(nn.Module):
    """x[t] <- (1-g) x[t] + g x[t-1] with g = sigmoid(gate), x[-1] = 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))[None, None, :]
        prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        return (1 - g) * x + g * prev


class ValueEmbedding(nn.Module):
    """One table shared by the configured layers; each layer scales it by its own scalar."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = CastedLinear(dim, kv_dim) if dim != kv_dim else None
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.1, dtype=torch.float32))

    def forward(self, ids: Tensor, emb) -> Tensor:
        h = emb(self.embed, ids)
        if self.proj is not None:
            h = self.proj(h)
        return h * self.scale.to(h.dtype)
