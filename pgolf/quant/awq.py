"""AWQ-lite (PR #1945, V21; FRONTIER F5.8): a few salient input-column groups on a finer grid.

Saliency of input column c of a weight W [R, C] is act_rms_c * mean_r |W_rc|, with
act_rms_c = sqrt(sum x_c^2 / N) over the calibration inputs of that weight. Groups are
non-overlapping runs of `group_size` columns, scored by their summed saliency; all
groups of all eligible tensors compete in one list (stable sort, descending) and the
top `top_k` are kept. Inside GPTQ those columns use the step fp16(k·σ_r / 127).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from torch import Tensor


def group_scores(w: Tensor, act_rms: Tensor, group_size: int) -> list[tuple[float, int, int]]:
    """(score, start, end) of every whole group of `group_size` input columns, left to right."""
    cols = w.shape[1]
    saliency = act_rms.float() * w.float().abs().mean(dim=0)
    return [
        (float(saliency[g * group_size : (g + 1) * group_size].sum()), g * group_size, (g + 1) * group_size)
        for g in range(cols // group_size)
    ]


def select_groups(
    candidates: Iterable[tuple[str, Tensor]], act_rms: Mapping[str, Tensor], group_size: int, top_k: int
) -> dict[str, list[tuple[int, int]]]:
    """{tensor name: [(start, end), ...]} of the top_k groups over all candidate tensors."""
    scored = []
    for name, w in candidates:
        if name in act_rms:
            scored.extend((score, name, start, end) for score, start, end in group_scores(w, act_rms[name], group_size))
    scored.sort(key=lambda x: -x[0])
    chosen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _score, name, start, end in scored[:top_k]:
        chosen[name].append((start, end))
    return dict(chosen)
