"""Parallel residual lanes (FRONTIER F2.8; PRs #1204 -> #1412 -> #1530).

From a given decoder layer on, the residual stream splits into two lanes. Attention reads
lane 0 (through the block's resid_mix with x0), the MLP reads lane 1 directly, and both
outputs are routed back into both lanes with learned weights:

    lane_c <- resid[i, c] * lane_c + post[i, 0, c] * A + post[i, 1, c] * M

(row 0 of `post` routes attention, row 1 the MLP; column c is the target lane). At the end
the lanes are averaged (or one is kept).
"""

from __future__ import annotations

from torch import Tensor

PARALLEL_RESID_INIT = 1.1  # bf16-rounded to 1.1015625 by the model's init, as in the record


def parallel_block(
    block, lane0: Tensor, lane1: Tensor, x0: Tensor, resid: Tensor, post: Tensor, ve, v_first, doc, adapter=None
):
    """One block on two lanes. resid [2] and post [2, 2] are this layer's rows of the lambdas.
    An `adapter` sits on the branches as in the sequential block (attention on lane 0, MLP on lane 1)."""
    a, v_raw = block.attn_branch(block.mix(lane0, x0), ve, v_first, doc, adapter)
    m = block.mlp_branch(lane1, adapter)
    r, p = resid.to(lane0.dtype), post.to(lane0.dtype)
    new0 = r[0] * lane0 + p[0, 0] * a + p[1, 0] * m
    new1 = r[1] * lane1 + p[0, 1] * a + p[1, 1] * m
    return new0, new1, v_raw


def merge_lanes(lane0: Tensor, lane1: Tensor, final: str) -> Tensor:
    if final == "attn":
        return lane0
    if final == "mlp":
        return lane1
    return 0.5 * (lane0 + lane1)
