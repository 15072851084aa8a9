"""The audit's C2 probe: the full distribution a method scores a sampled target with.

The scorer shows the probe, for every sampled target it scores, the method's final
log-probabilities over the whole vocabulary (computed in float64 while a probe is attached),
and separately the NLL it adds to the total. C2 holds at a target when the distribution sums
to 1 (within 1e-6) and -log p(y) is the NLL that was accumulated. A method that adds an NLL
without showing a distribution (bypassing Scorer.score) is reported as unmeasured, i.e. fails.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

SUM_TOLERANCE = 1e-6
NLL_TOLERANCE = 1e-6


class Probe:
    def __init__(self, targets):
        self.targets = np.unique(np.asarray(targets, dtype=np.int64))
        self.shown: dict[int, list[tuple[float, float, float]]] = {}  # t -> [(sum p, -log p_y, nll it scored)]
        self.added: dict[int, list[float]] = {}  # t -> NLLs added to the total

    def take(self, idx: np.ndarray, logp: Tensor, nll: Tensor, y: Tensor) -> None:
        rows = np.flatnonzero(np.isin(idx, self.targets))
        if not rows.size:
            return
        lp = logp[rows].detach().double().cpu().numpy()
        ys = y[rows].detach().cpu().numpy()
        nl = nll[rows].detach().double().cpu().numpy()
        for r, row in enumerate(rows.tolist()):
            total = float(np.exp(lp[r]).sum())
            self.shown.setdefault(int(idx[row]), []).append((total, float(-lp[r, ys[r]]), float(nl[r])))

    def accumulated(self, idx: np.ndarray, nll64: np.ndarray) -> None:
        m = np.isin(idx, self.targets)
        for t, v in zip(idx[m].tolist(), nll64[m].tolist()):
            self.added.setdefault(int(t), []).append(float(v))

    def verdict(self) -> dict:
        """{"pass", "checked", "max_sum_error", "max_nll_error", "unmeasured"} over the sampled targets."""
        sum_err, nll_err, checked, unmeasured = 0.0, 0.0, 0, []
        for t in self.targets.tolist():
            shown, added = self.shown.get(t, []), self.added.get(t, [])
            if not added:
                continue  # not scored at all: C4's concern
            if len(shown) != len(added):
                unmeasured.append(t)
                continue
            for (total, nlp, _), a in zip(shown, added):
                sum_err = max(sum_err, abs(total - 1.0))
                nll_err = max(nll_err, abs(nlp - a))
                checked += 1
        ok = checked > 0 and not unmeasured and sum_err <= SUM_TOLERANCE and nll_err <= NLL_TOLERANCE
        return {"pass": ok, "checked": checked, "max_sum_error": sum_err, "max_nll_error": nll_err,
                "unmeasured": unmeasured[:8]}  # fmt: skip
