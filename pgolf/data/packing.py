"""The frontier record's training loader: `DocumentPackingLoader` (FRONTIER F1.6, T:615-698).

Instead of the seed's endless stream cut into rows of `train_seq_len`, each rank gets one
row of `local = G / (W·A)` tokens per micro-step, shape [1, local], whose documents the
model keeps apart with `cu_seqlens` (varlen attention) or with segment ids derived from
the BOS positions of the ids (`pgolf.data.documents`):

* all ranks walk the same sorted train shards, whole shards, unshuffled;
* a shard is entered at its first BOS (the tokens before it are skipped);
* one micro-step takes a global span of W·(local+1) tokens; rank r keeps
  `[cursor + r·(local+1), cursor + (r+1)·(local+1))`, inputs its first `local`, targets the
  last `local`; the cursor then moves by the global span;
* when a step's tokens do not fit in what is left of the shard, the tail is dropped and the
  next shard begins (never concatenated across shards); after the last shard, the first.

The record checks the fit before every micro-step; pgolf checks it for the whole step
(A micro-steps) at its first micro-step. With the record's W = 8, A = 1 that is the same
check, and it makes the tokens of a step identical for every split of W·A (the record's
own W < 8 runs differ at shard ends). For the batch just returned, `cu_seqlens`
(int32, padded with `local` to a multiple of 64) and `max_seqlen` are those of
`build_cu_seqlens(bos, local, max_doc_len=train_seq_len, bucket=64)`, as the record builds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.data.documents import build_cu_seqlens
from pgolf.data.loader import DistributedBatcher, batch_geometry
from pgolf.data.shards import list_shards, read_header, read_shard
from pgolf.data.tokenizer import BOS_ID
from pgolf.errors import ConfigError, DataError

LOADERS = ("stream", "packing")


class DocumentPackingLoader:
    """FRONTIER F1.6's loader; `next_batch(G, T, A)` like `DistributedBatcher`, rows [1, local]."""

    def __init__(
        self,
        data_dir: str | Path,
        rank: int,
        world_size: int,
        vocab_size: int | None = None,
        max_doc_len: int = 0,
        bucket: int = 64,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} world_size={world_size}: need 0 <= rank < world_size")
        self.rank, self.world_size = rank, world_size
        self.vocab_size, self.max_doc_len, self.bucket = vocab_size, max_doc_len, bucket
        self.files = list_shards(data_dir, "train")
        self.sizes = [read_header(f) for f in self.files]  # a malformed shard fails now
        self.cu_seqlens: torch.Tensor | None = None
        self.max_seqlen: int | None = None
        self._loaded = -1
        self.reset()

    # ------------------------------------------------------------------ shards
    def _load(self, index: int) -> None:
        if self._loaded != index:
            self.tokens = read_shard(self.files[index], self.vocab_size)
            self.bos = np.flatnonzero(np.asarray(self.tokens) == BOS_ID).astype(np.int64)
            self._loaded = index
        self.shard = index

    def _enter(self, index: int) -> None:
        """Start shard `index` at its first BOS (a shard without one has nothing to give)."""
        self._load(index)
        self.cursor = int(self.bos[0]) if self.bos.size else self.sizes[index]

    def reset(self) -> None:
        """Back to the first shard's first BOS (after the compile warm-up, as the record does)."""
        self._enter(0)
        self.micro = 0

    # ------------------------------------------------------------------ batches
    def next_batch(self, global_tokens: int, seq_len: int, accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): CPU int64 tensors of shape [1, local]; `cu_seqlens`/`max_seqlen` describe them."""
        local = batch_geometry(global_tokens, seq_len, self.world_size, accum_steps)
        span = local + 1
        if self.micro == 0:
            need = accum_steps * self.world_size * span  # the whole step comes from one shard
            tried = 0
            while self.cursor + need > self.sizes[self.shard]:
                tried += 1
                if tried > len(self.files):
                    raise DataError(
                        f"{self.files[0].parent}: no train shard holds one step's {need:,} tokens "
                        f"(world_size*accum_steps*(local+1)) after its first BOS"
                    )
                self._enter((self.shard + 1) % len(self.files))
        start = self.cursor + self.rank * span
        buf = torch.from_numpy(np.asarray(self.tokens[start : start + span], dtype=np.int64))
        x, y = buf[:-1].unsqueeze(0), buf[1:].unsqueeze(0)
        lo, hi = np.searchsorted(self.bos, [start, start + local], side="left")
        cu, self.max_seqlen = build_cu_seqlens(self.bos[lo:hi] - start, local, self.max_doc_len, self.bucket)
        self.cu_seqlens = torch.from_numpy(cu)
        self.cursor += self.world_size * span
        self.micro = (self.micro + 1) % accum_steps
        return x, y

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {
            "loader": "packing",
            "files": [f.name for f in self.files],
            "shard": self.shard,
            "cursor": self.cursor,
            "micro": self.micro,
        }

    def load_state_dict(self, state: dict) -> None:
        names = [f.name for f in self.files]
        if state.get("loader") != "packing":
            raise DataError(f"{self.files[0].parent}: resume state is not a packing loader's (train.loader changed?)")
        if list(state.get("files", names)) != names:
            raise DataError(
                f"{self.files[0].parent}: resume state was saved over shards {state['files']} "
                f"but the data directory has {names}"
            )
        i, cursor, micro = int(state["shard"]), int(state["cursor"]), int(state["micro"])
        if not (0 <= i < len(self.files) and 0 <= cursor <= self.sizes[i] and micro >= 0):
            raise DataError(f"{self.files[0].parent}: resume state shard={i} cursor={cursor} is out of range")
        self._load(i)
        self.cursor, self.micro = cursor, micro


def build_train_loader(
    kind: str, data_dir: str | Path, rank: int, world_size: int, vocab_size: int | None, train_seq_len: int
):
    """The training loader `train.loader` names: the seed's stream or the record's packing."""
    if kind == "stream":
        return DistributedBatcher(data_dir, rank, world_size, vocab_size)
    if kind == "packing":
        return DocumentPackingLoader(data_dir, rank, world_size, vocab_size, max_doc_len=train_seq_len)
    raise ConfigError(f"train.loader={kind!r}: must be one of {', '.join(LOADERS)}")
