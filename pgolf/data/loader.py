"""Training batches and validation tokens, exactly as the challenge's script cuts them.

`TokenStream` is one infinite, deterministic stream over the sorted train shards;
`DistributedBatcher` gives every rank its slice of the same chunk (SPEC 2.4), so
the tokens of a step do not depend on the world size or on gradient accumulation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import list_shards, read_header, read_shard
from pgolf.errors import ConfigError, DataError


class TokenStream:
    """The train shards as one stream: `take(n)` returns the next n tokens, wrapping at the end.

    One shard is mapped at a time (memory-mapped, read-only). `take` returns a new
    uint16 array (the shard dtype); callers convert to int64 where they need it.
    """

    def __init__(self, files: list[Path], vocab_size: int | None = None) -> None:
        if not files:
            raise DataError("token stream: no shards given")
        self.files = [Path(f) for f in files]
        self.vocab_size = vocab_size
        # Headers first: a malformed shard fails now, not hours into training.
        self.sizes = [read_header(f) for f in self.files]
        if sum(self.sizes) == 0:
            raise DataError(f"{self.files[0].parent}: empty train split (all train shards hold 0 tokens)")
        self.file_index = 0
        self.pos = 0
        self._tokens: np.ndarray | None = None
        self._loaded: int | None = None

    def _current(self) -> np.ndarray:
        if self._loaded != self.file_index:
            self._tokens = read_shard(self.files[self.file_index], self.vocab_size)
            self._loaded = self.file_index
        assert self._tokens is not None
        return self._tokens

    def _advance_file(self) -> None:
        self.file_index = (self.file_index + 1) % len(self.files)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if n < 0:
            raise ValueError("n must be >= 0")
        out = np.empty(n, dtype=np.uint16)
        filled = 0
        while filled < n:
            if self.pos >= self.sizes[self.file_index]:
                self._advance_file()
                continue
            tokens = self._current()
            k = min(n - filled, len(tokens) - self.pos)
            out[filled : filled + k] = tokens[self.pos : self.pos + k]
            filled += k
            self.pos += k
        return out

    def state_dict(self) -> dict:
        return {"file_index": self.file_index, "pos": self.pos, "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict) -> None:
        names = [f.name for f in self.files]
        if list(state.get("files", names)) != names:
            raise DataError(
                f"{self.files[0].parent}: resume state was saved over shards {state['files']} "
                f"but the data directory has {names}"
            )
        i, pos = int(state["file_index"]), int(state["pos"])
        if not (0 <= i < len(self.files) and 0 <= pos <= self.sizes[i]):
            raise DataError(f"{self.files[0].parent}: resume state file_index={i} pos={pos} is out of range")
        self.file_index, self.pos = i, pos

    def reset(self) -> None:
        """Rewind to the first token of the first shard (the seed does this after warmup)."""
        self.file_index, self.pos = 0, 0


def batch_geometry(global_tokens: int, seq_len: int, world_size: int, accum_steps: int) -> int:
    """Tokens per rank per micro-step; refuses a batch that does not split into whole sequences."""
    for name, v in (("seq_len", seq_len), ("world_size", world_size), ("accum_steps", accum_steps)):
        if v < 1:
            raise ConfigError(f"{name}={v}: must be >= 1")
    parts = world_size * accum_steps
    if global_tokens <= 0 or global_tokens % (parts * seq_len):
        raise ConfigError(
            f"train_batch_tokens={global_tokens} is not divisible into whole sequences: it must be a positive "
            f"multiple of world_size*accum_steps*seq_len = {world_size}*{accum_steps}*{seq_len} = {parts * seq_len}"
        )
    return global_tokens // parts


class DistributedBatcher:
    """SPEC 2.4: each micro-step every rank takes W*(local+1) tokens and keeps its own span."""

    def __init__(self, data_dir: str | Path, rank: int, world_size: int, vocab_size: int | None = None) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} world_size={world_size}: need 0 <= rank < world_size")
        self.rank, self.world_size = rank, world_size
        self.stream = TokenStream(list_shards(data_dir, "train"), vocab_size)

    def next_batch(self, global_tokens: int, seq_len: int, accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) as CPU int64 tensors of shape [local // seq_len, seq_len]; y is x shifted by one."""
        local = batch_geometry(global_tokens, seq_len, self.world_size, accum_steps)
        span = local + 1
        chunk = self.stream.take(self.world_size * span)
        mine = torch.from_numpy(chunk[self.rank * span : (self.rank + 1) * span].astype(np.int64))
        x = mine[:-1].reshape(-1, seq_len)
        y = mine[1:].reshape(-1, seq_len)
        return x, y

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "stream" not in state:
            where = self.stream.files[0].parent
            raise DataError(f"{where}: resume state is not a stream loader's (train.loader changed?)")
        self.stream.load_state_dict(state["stream"])

    def reset(self) -> None:
        self.stream.reset()


def load_val_tokens(data_dir: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """All validation shards concatenated in sorted order (uint16, in memory)."""
    files = list_shards(data_dir, "val")
    parts = [np.asarray(read_shard(f, vocab_size)) for f in files]
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    return tokens.astype(np.uint16, copy=False)


def truncate_val(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """SPEC 2.5: keep the first usable+1 tokens, usable = ((len-1) // seq_len) * seq_len."""
    if seq_len < 1:
        raise ConfigError(f"seq_len={seq_len}: must be >= 1")
    usable = ((len(tokens) - 1) // seq_len) * seq_len
    if usable <= 0:
        raise DataError(f"validation split too short for seq_len={seq_len} ({len(tokens)} tokens)")
    return tokens[: usable + 1]
