"""Small, dependency-free statistics for comparing seeds.

The challenge (BEYOND.md §6.1) asks a new record to beat the current one by at
least 0.005 nats of val_loss with p < 0.01, and records quote Welch's t-test.
Everything here uses `math` only, so the numbers can be checked by hand and no
SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CHALLENGE_MARGIN_NATS = 0.005
CHALLENGE_ALPHA = 0.01


# --------------------------------------------------------------------------- descriptive
def mean(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("mean of an empty sequence")
    return math.fsum(xs) / len(xs)


def _ss(xs: Sequence[float]) -> float:
    m = mean(xs)
    return math.fsum((x - m) ** 2 for x in xs)


def sample_std(xs: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (n - 1); nan for fewer than 2 values."""
    if len(xs) < 2:
        return math.nan
    return math.sqrt(_ss(xs) / (len(xs) - 1))


def population_std(xs: Sequence[float]) -> float:
    """Standard deviation dividing by n."""
    if not xs:
        return math.nan
    return math.sqrt(_ss(xs) / len(xs))


def describe(xs: Sequence[float]) -> dict:
    """mean, sample and population std, n and the values, JSON-ready (nan -> None)."""
    xs = [float(x) for x in xs]
    return {
        "mean": finite_or_none(mean(xs)) if xs else None,
        "sample_std": finite_or_none(sample_std(xs)),
        "pop_std": finite_or_none(population_std(xs)),
        "n": len(xs),
        "values": xs,
    }


def finite_or_none(x: float | None) -> float | None:
    """JSON has no nan/inf; map them to null."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


# --------------------------------------------------------------------------- Student t
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, modified Lentz evaluation."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        # even step d_{2m}
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        # odd step d_{2m+1}
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc_reg(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc_reg needs a > 0 and b > 0")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc_reg needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast only below the mean of the beta law; use symmetry above it.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, may be fractional) degrees of freedom."""
    if df <= 0 or math.isnan(df):
        raise ValueError(f"t_cdf needs df > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t < 0 else 1.0
    if math.isinf(df) or df > 1e7:
        return 0.5 * math.erfc(-t / math.sqrt(2.0))
    # P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2); each tail is half of it.
    tail = 0.5 * betainc_reg(df / 2.0, 0.5, df / (df + t * t))
    return tail if t < 0 else 1.0 - tail


def t_sf(t: float, df: float) -> float:
    """P(T > t), computed from the small tail directly for precision."""
    return t_cdf(-t, df)


# --------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class TTest:
    t: float
    df: float
    p: float


def welch_t_test(a: Sequence[float], b: Sequence[float], shift: float = 0.0, alternative: str = "less") -> TTest:
    """Welch's unequal-variance test of mean(a) - mean(b) against `shift`.

    alternative "less": H1 mean(a) - mean(b) < shift (p = lower tail);
    "greater": the upper tail; "two-sided": both. Needs >= 2 values per group.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values in each group")
    va, vb = sample_std(a) ** 2 / len(a), sample_std(b) ** 2 / len(b)
    diff = mean(a) - mean(b) - shift
    se2 = va + vb
    if se2 == 0.0:
        return _degenerate(diff, df=math.inf, alternative=alternative)
    t = diff / math.sqrt(se2)
    # Welch-Satterthwaite; a group with zero spread contributes nothing to the sum.
    den = sum(v * v / (n - 1) for v, n in ((va, len(a)), (vb, len(b))) if v > 0)
    df = se2 * se2 / den
    return TTest(t, df, _p_value(t, df, alternative))


def one_sample_t_test(xs: Sequence[float], mu: float, alternative: str = "less") -> TTest:
    """Student's one-sample test of mean(xs) against a fixed number `mu`."""
    if len(xs) < 2:
        raise ValueError("the one-sample t-test needs at least two values")
    diff = mean(xs) - mu
    se = sample_std(xs) / math.sqrt(len(xs))
    df = float(len(xs) - 1)
    if se == 0.0:
        return _degenerate(diff, df=df, alternative=alternative)
    t = diff / se
    return TTest(t, df, _p_value(t, df, alternative))


def _p_value(t: float, df: float, alternative: str) -> float:
    if alternative == "less":
        return t_cdf(t, df)
    if alternative == "greater":
        return t_sf(t, df)
    if alternative == "two-sided":
        return min(1.0, 2.0 * t_cdf(-abs(t), df))
    raise ValueError(f"alternative must be less, greater or two-sided, got {alternative!r}")


def _degenerate(diff: float, df: float, alternative: str) -> TTest:
    """Zero spread everywhere: the sign of the difference decides outright."""
    t = math.copysign(math.inf, diff) if diff != 0 else 0.0
    if alternative == "two-sided":
        p = 1.0 if diff == 0 else 0.0
    else:
        lower = 0.5 if diff == 0 else (0.0 if diff < 0 else 1.0)
        p = lower if alternative == "less" else 1.0 - lower
    return TTest(t, df, p)


@dataclass(frozen=True)
class Significance:
    """Outcome of the challenge's rule: new mean < reference mean - margin, p < alpha."""

    test: str  # "welch" | "one-sample" | "none"
    t: float | None
    df: float | None
    p: float | None
    mean_new: float
    mean_ref: float
    delta: float  # improvement in nats: mean_ref - mean_new (positive = better)
    margin: float
    alpha: float
    n_new: int
    n_ref: int  # 1 for a published number
    passes: bool
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("t", "df", "p"):
            d[k] = finite_or_none(d[k])
        return d


def challenge_significance(
    new: Sequence[float],
    ref: Sequence[float] | float,
    margin: float = CHALLENGE_MARGIN_NATS,
    alpha: float = CHALLENGE_ALPHA,
) -> Significance:
    """Test H0: mean_new >= mean_ref - margin against H1: mean_new < mean_ref - margin.

    `new` and `ref` are val_loss values in nats, one per seed. A bare number for
    `ref` is a published score without spread: the new runs are then tested with
    the one-sample t-test against ref - margin. Welch's test otherwise.
    """
    new = [float(x) for x in new]
    if not new:
        raise ValueError("no new results to test")
    if isinstance(ref, (int, float)):
        refs = [float(ref)]
    else:
        refs = [float(x) for x in ref]
    if not refs:
        raise ValueError("no reference results to test against")
    m_new, m_ref = mean(new), mean(refs)
    common = dict(
        mean_new=m_new, mean_ref=m_ref, delta=m_ref - m_new, margin=margin, alpha=alpha, n_new=len(new), n_ref=len(refs)
    )
    if len(new) < 2:
        return Significance(
            "none", None, None, None, passes=False, note="a p-value needs at least two new seeds", **common
        )
    if len(refs) == 1:
        r = one_sample_t_test(new, refs[0] - margin, alternative="less")
        test = "one-sample"
        note = "reference is a single number: one-sample t-test against ref - margin"
    else:
        r = welch_t_test(new, refs, shift=-margin, alternative="less")
        test = "welch"
        note = "Welch's t-test, one-sided"
    return Significance(test, r.t, r.df, r.p, passes=bool(r.p < alpha), note=note, **common)
