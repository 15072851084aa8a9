"""A record of what an evaluation scored and what its update steps read, kept by the method itself.

The audit's conditions C3 (score before update) and C4 (single pass) are checked from this
record, not from a method's label: a method that takes a ledger calls

- ``ledger.scored(targets)`` when it adds the scores of those targets to the total, and
- ``ledger.read(positions, what)`` just before an update step (a TTT/LoRA optimiser step, a
  global SGD step, an n-gram statistics update) uses the tokens at those stream positions,
  as inputs or as targets.

Indexing is the stream's: the stream holds tokens s[0..N]; target t is s[t + 1], predicted
from s[0..t]. Token s[j] is known once target j - 1 has been scored (s[0] is given). So a read
of position j is legal when j == 0 or target j - 1 was scored earlier. Both calls take numpy
integer arrays (or anything np.asarray accepts); a ledger of None costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Violation:
    condition: str  # "C3" or "C4"
    what: str  # the update step's label, or "score"
    positions: list[int]  # up to 8 offending stream positions (C3) or target indices (C4)
    count: int  # how many offended in this call

    def line(self) -> str:
        shown = ", ".join(map(str, self.positions))
        if self.condition == "C3":
            return f"C3: {self.what} read {self.count} token(s) not yet scored (stream positions {shown} ...)"
        return f"C4: {self.count} target(s) scored more than once (targets {shown} ...)"


@dataclass
class ScoreLedger:
    n_targets: int
    times_scored: np.ndarray = field(init=False)
    violations: list[Violation] = field(default_factory=list)
    reads: int = 0  # update steps seen
    tokens_read: int = 0

    calls: int = 0  # scoring calls seen

    def __post_init__(self) -> None:
        self.times_scored = np.zeros(self.n_targets, dtype=np.int32)
        # The scoring call that first scored each target (-1: never): the method's scoring order.
        self.order = np.full(self.n_targets, -1, dtype=np.int64)
        self.nll = np.zeros(self.n_targets, dtype=np.float64)  # the NLL accumulated per target (nats)

    def scored(self, targets, nll=None) -> None:
        t = np.asarray(targets, dtype=np.int64).ravel()
        if t.size and (t.min() < 0 or t.max() >= self.n_targets):
            raise IndexError(f"ledger: target index outside 0..{self.n_targets - 1}")
        fresh = t[self.order[t] < 0]
        self.order[fresh] = self.calls
        self.calls += 1
        if nll is not None:
            self.add_nll(t, nll)
        before = self.times_scored[t] > 0
        np.add.at(self.times_scored, t, 1)
        dup = np.unique(t[before])
        if t.size != np.unique(t).size:  # the same target twice within one call
            u, c = np.unique(t, return_counts=True)
            dup = np.union1d(dup, u[c > 1])
        if dup.size:
            self.violations.append(Violation("C4", "score", dup[:8].tolist(), int(dup.size)))

    def add_nll(self, targets, nll) -> None:
        """Add the NLL the method accumulated for these targets (the audit's C1 compares them)."""
        np.add.at(self.nll, np.asarray(targets, dtype=np.int64).ravel(), np.asarray(nll, dtype=np.float64).ravel())

    def read(self, positions, what: str) -> None:
        p = np.unique(np.asarray(positions, dtype=np.int64).ravel())
        self.reads += 1
        self.tokens_read += int(p.size)
        p = p[p >= 1]
        if p.size and p.max() - 1 >= self.n_targets:
            raise IndexError(f"ledger: stream position outside 0..{self.n_targets}")
        unscored = p[self.times_scored[p - 1] == 0]
        if unscored.size:
            self.violations.append(Violation("C3", what, unscored[:8].tolist(), int(unscored.size)))

    # ----------------------------------------------------------------- verdicts
    def c3_ok(self) -> bool:
        return not any(v.condition == "C3" for v in self.violations)

    def c4_ok(self) -> bool:
        """Every target scored exactly once and none twice."""
        return not any(v.condition == "C4" for v in self.violations) and bool(np.all(self.times_scored == 1))

    def scored_before(self, p: int) -> np.ndarray:
        """Targets whose scores were fixed before target p's token could be known: those scored
        in an earlier call, and the earlier ones in the stream of p's own call. A causal method
        (C1, in its own scoring order) must not change any of them when target p changes."""
        o = self.order
        idx = np.arange(self.n_targets)
        return ((o >= 0) & (o < o[p])) | ((o == o[p]) & (idx < p))

    def unscored(self) -> int:
        return int(np.sum(self.times_scored == 0))

    def merge(self, other: ScoreLedger) -> None:
        """Fold another rank's ledger into this one (same stream)."""
        self.times_scored += other.times_scored
        self.nll += other.nll
        self.violations.extend(other.violations)
        self.reads += other.reads
        self.tokens_read += other.tokens_read
