"""Evaluation: plain, sliding, SLOT (two-pass, not score-first), causal SLOT, TTT, and the
frontier's per-document LoRA TTT (ttt-lora) with phased global SGD (ttt-phased).

    result, nll = pgolf.eval.evaluate(model, "sliding", val_tokens, tables, cfg, "cpu", record=True)

    from pgolf.eval.audit import audit   # is a method score-first? (measured)

See docs/evaluation.md for what each method does and which ones are score-first.
"""

from pgolf.eval.api import METHODS, canonical_method, evaluate
from pgolf.eval.common import SCORE_FIRST, EvalResult, Totals
from pgolf.eval.windows import Window, plan_windows, seed_scored_count, seed_windows

__all__ = [
    "METHODS",
    "SCORE_FIRST",
    "EvalResult",
    "Totals",
    "Window",
    "canonical_method",
    "evaluate",
    "plan_windows",
    "seed_scored_count",
    "seed_windows",
]
