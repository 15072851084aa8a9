"""The greedy L1 nearest-neighbour row order of the per-group container (FRONTIER F5.9).

Start at row 0, then repeatedly take the unused row with the smallest sum |Δ| to the
current one, ties to the lowest row index. The record computes the distances in fp32
on int8 values; they are sums of at most C·254, exact in int32 as in fp32, so the order
is the same. This version keeps the unused rows compacted (rebuilt whenever half of them
are used) and computes in int16/int32, instead of re-gathering every unused row in fp32 at every
step.
"""

from __future__ import annotations

import numpy as np

from pgolf.errors import ArtifactError


def l1_chain(matrix: np.ndarray) -> np.ndarray:
    """The row order (uint16 when rows <= 65536, else uint32) of an int8 matrix [R, C]."""
    n = matrix.shape[0]
    dtype = np.uint16 if n <= 65536 else np.uint32
    if n == 0:
        return np.zeros(0, dtype=dtype)
    x = np.ascontiguousarray(matrix).astype(np.int16)
    idx = np.arange(n)
    alive = np.ones(n, dtype=bool)
    alive[0] = False
    n_alive = n - 1
    order = np.empty(n, dtype=np.int64)
    order[0] = 0
    cur = x[0].copy()
    big = np.iinfo(np.int32).max
    for step in range(1, n):
        d = np.abs(x - cur).sum(axis=1, dtype=np.int32)
        d[~alive] = big
        k = int(np.argmin(d))  # the first minimum: the lowest original index, idx being ascending
        order[step] = idx[k]
        alive[k] = False
        n_alive -= 1
        cur = x[k].copy()
        if n_alive and n_alive * 2 <= alive.size:
            x, idx = x[alive], idx[alive]
            alive = np.ones(n_alive, dtype=bool)
    return order.astype(dtype)


def inverse(order: np.ndarray, where: str) -> np.ndarray:
    """inv with inv[order[k]] = k, after checking that `order` is a permutation of range(len(order))."""
    n = len(order)
    o = order.astype(np.int64)
    if n and (o.min() < 0 or o.max() >= n or np.bincount(o, minlength=n).max() != 1):
        raise ArtifactError(f"{where}: a stored row order is not a permutation of its {n} rows")
    inv = np.empty(n, dtype=np.int64)
    inv[o] = np.arange(n)
    return inv
