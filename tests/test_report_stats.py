"""Statistics: descriptive values, the Student-t CDF against closed forms and t tables, Welch's test."""

from __future__ import annotations

import math

import pytest

from pgolf.report.stats import (
    betainc_reg,
    challenge_significance,
    mean,
    one_sample_t_test,
    population_std,
    sample_std,
    t_cdf,
    t_sf,
    welch_t_test,
)


def test_descriptive():
    xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert mean(xs) == 5.0
    assert population_std(xs) == pytest.approx(2.0)
    assert sample_std(xs) == pytest.approx(math.sqrt(32 / 7))
    assert math.isnan(sample_std([1.0]))


def test_betainc_closed_forms():
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1-x)^b
    assert betainc_reg(1, 1, 0.3) == pytest.approx(0.3, abs=1e-14)
    assert betainc_reg(3.5, 1, 0.6) == pytest.approx(0.6**3.5, rel=1e-12)
    assert betainc_reg(1, 2.5, 0.2) == pytest.approx(1 - 0.8**2.5, rel=1e-12)
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
    assert betainc_reg(2.3, 0.7, 0.9) == pytest.approx(1 - betainc_reg(0.7, 2.3, 0.1), rel=1e-12)


@pytest.mark.parametrize("t", [-30.0, -3.1, -0.7, 0.0, 0.4, 1.3, 12.0])
def test_t_cdf_closed_forms(t):
    # df=1 is Cauchy; df=2 has the closed form 1/2 + t / (2 sqrt(2 + t^2)).
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


@pytest.mark.parametrize(
    "t, df, upper_tail",
    [  # one-sided critical values from a standard t table (3 decimals)
        (6.314, 1, 0.05),
        (12.706, 1, 0.025),
        (2.353, 3, 0.05),
        (5.841, 3, 0.005),
        (4.032, 5, 0.005),
        (2.228, 10, 0.025),
        (2.764, 10, 0.01),
        (2.042, 30, 0.025),
        (2.457, 30, 0.01),
    ],
)
def test_t_table_quantiles(t, df, upper_tail):
    assert t_sf(t, df) == pytest.approx(upper_tail, rel=2e-3)
    assert t_cdf(-t, df) == pytest.approx(upper_tail, rel=2e-3)


def test_t_known_values():
    assert t_sf(2.0, 3) == pytest.approx(0.0697, abs=5e-5)
    assert t_cdf(0.0, 4.5) == 0.5
    # Large df tends to the normal law.
    assert t_sf(1.959964, 1e9) == pytest.approx(0.025, rel=1e-5)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0


def _density(x: float, df: float) -> float:
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


@pytest.mark.parametrize("t, df", [(-11.83, 3.31), (-2.5, 4.7), (1.1, 3.31)])
def test_fractional_df_against_integrated_density(t, df):
    """Welch's df is fractional: check against Simpson integration of the density."""
    a, b, n = min(t, 0.0), max(t, 0.0), 20000
    h = (b - a) / n
    s = _density(a, df) + _density(b, df)
    s += sum((4 if i % 2 else 2) * _density(a + i * h, df) for i in range(1, n))
    area = s * h / 3  # P(min(t,0) < T < max(t,0))
    expected = 0.5 - area if t < 0 else 0.5 + area
    assert t_cdf(t, df) == pytest.approx(expected, rel=1e-6, abs=1e-10)


def test_pr1019_welch_quote():
    """BEYOND §6.1 quotes t = -11.83, df 3.31 (PR #1019 vs #549): p is far below 0.01."""
    p = t_cdf(-11.83, 3.31)
    assert 1e-4 < p < 1e-3
    assert p == pytest.approx(4.015e-4, rel=1e-3)


def test_welch_hand_computed():
    a = [1.10, 1.12, 1.11]
    b = [1.20, 1.25, 1.22, 1.23]
    # By hand: means 1.11 and 1.225; sums of squares 0.0002 and 0.0013; s^2/n per group:
    ma, mb = 1.11, 1.225
    va, vb = 0.0002 / 2 / 3, 0.0013 / 3 / 4
    t_hand = (ma - mb) / math.sqrt(va + vb)
    df_hand = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    r = welch_t_test(a, b)
    assert r.t == pytest.approx(t_hand, rel=1e-10)
    assert r.df == pytest.approx(df_hand, rel=1e-10)
    assert r.p == pytest.approx(t_cdf(t_hand, df_hand), rel=1e-12)
    assert r.t == pytest.approx(-9.6619, abs=1e-4)
    assert r.df == pytest.approx(4.4922, abs=1e-4)
    two = welch_t_test(a, b, alternative="two-sided")
    assert two.p == pytest.approx(2 * r.p)


def test_welch_shift_and_degenerate():
    a, b = [1.0, 1.2, 1.1], [2.0, 2.2, 2.1]
    shifted = welch_t_test(a, b, shift=-1.0)  # mean(a) - mean(b) = -1 exactly: t = 0
    assert shifted.t == pytest.approx(0.0, abs=1e-9) and shifted.p == pytest.approx(0.5, abs=1e-9)
    flat = welch_t_test([1.0, 1.0], [2.0, 2.0])
    assert flat.p == 0.0 and flat.t == -math.inf


def test_one_sample_hand_computed():
    xs = [1.0, 1.2, 1.4]
    r = one_sample_t_test(xs, 1.5)
    assert r.t == pytest.approx((1.2 - 1.5) / (0.2 / math.sqrt(3)))
    assert r.df == 2
    assert r.p == pytest.approx(0.5 + r.t / (2 * math.sqrt(2 + r.t**2)))  # df=2 closed form


def test_challenge_rule_welch_and_published():
    ref = [1.9000, 1.9030, 1.8985]
    clearly = [1.8800, 1.8815, 1.8790]
    res = challenge_significance(clearly, ref)
    assert res.test == "welch" and res.passes and res.p < 0.01
    assert res.delta == pytest.approx(mean(ref) - mean(clearly))
    # Better by less than the 0.005-nat margin: must fail however small the spread.
    barely = [x - 0.003 for x in ref]
    assert not challenge_significance(barely, ref).passes
    # Published number: one-sample t-test against ref - 0.005.
    pub = challenge_significance(clearly, 1.9005)
    assert pub.test == "one-sample" and pub.n_ref == 1 and pub.passes
    hand = one_sample_t_test(clearly, 1.9005 - 0.005)
    assert pub.p == pytest.approx(hand.p) and pub.t == pytest.approx(hand.t)
    one = challenge_significance([1.0], 2.0)
    assert one.test == "none" and not one.passes and one.to_dict()["p"] is None
