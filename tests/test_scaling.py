"""Scaling-law tools: superposition, exponents, power-law fits, compute frontier."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import companion as cm
from companion.scaling import (
    compute_exponent,
    fit_power_law,
    idealized_escape_times,
    lower_envelope,
    superposition_loss,
    tail_beyond,
    time_exponent,
    unstable_sample_exponent,
    width_exponent,
)


def test_exponents_at_beta_08():
    assert time_exponent(0.8) == pytest.approx(-0.75)
    assert width_exponent(0.8) == pytest.approx(-0.6)
    assert compute_exponent(0.8) == pytest.approx(-1 / 3)
    assert unstable_sample_exponent(0.8) == pytest.approx(-0.375)
    for f in (time_exponent, width_exponent, compute_exponent, unstable_sample_exponent):
        with pytest.raises(ValueError, match="beta"):
            f(0.5)


def test_superposition_matches_closed_form_of_idealized_student():
    # A student holding exactly the directions escaped by time t has the superposition loss.
    teacher = cm.make_teacher(32, 12, beta=0.9, dtype="float64")
    a = np.asarray(teacher.coefficients)
    T = idealized_escape_times(a, scale=3.0)
    times = np.array([0.5, 4.0, 6.0, 9.0, 20.0, 100.0])
    predicted = superposition_loss(a, T, times)
    for t, value in zip(times, predicted, strict=True):
        learned = np.flatnonzero(T <= t)
        V = cm.student_holding(teacher, learned, 12)
        assert float(cm.population_loss(V, teacher)) == pytest.approx(value, abs=1e-13)


def test_tail_beyond_makes_the_infinite_teacher():
    # 1/2 sum_{p > P} a_p^2 with the P-term normalization, against a long explicit sum.
    P, beta = 50, 0.8
    Z2 = np.sum(np.arange(1, P + 1) ** (-2 * beta))
    explicit = 0.5 * np.sum(np.arange(P + 1, 2_000_001, dtype=np.float64) ** (-2 * beta)) / Z2
    # The explicit sum misses p > 2e6, about 2e6^(1 - 2 beta)/(2 beta - 1)/2/Z2.
    missing = 0.5 * (2e6) ** (1 - 2 * beta) / (2 * beta - 1) / Z2
    assert tail_beyond(P, beta) == pytest.approx(explicit + missing, rel=1e-4)
    with pytest.raises(ValueError, match="beta"):
        tail_beyond(10, 0.4)


@settings(max_examples=25, deadline=None)
@given(slope=st.floats(-2.0, 2.0), noise=st.floats(0.0, 0.05), seed=st.integers(0, 1000))
def test_fit_recovers_slope_of_noisy_power_law(slope, noise, seed):
    rng = np.random.default_rng(seed)
    x = np.logspace(0, 3, 60)
    y = 2.0 * x**slope * np.exp(noise * rng.standard_normal(x.size))
    fit = fit_power_law(x, y)
    # 60 points over 3 decades with lognormal noise sigma: slope s.e. ~ sigma / (std(log x) sqrt(n)) ~ 0.5 sigma / 2.
    assert abs(fit.slope - slope) < 6 * max(fit.stderr, 1e-9) + 1e-9
    assert abs(fit.slope - slope) <= 0.06
    assert fit.low <= fit.slope + 1e-9 and fit.slope - 1e-9 <= fit.high
    assert fit.n == 60


def test_fit_window_and_refusal():
    x = np.logspace(0, 2, 30)
    y = np.where(x < 10, x**-1.0, 10 * x**-2.0)
    assert fit_power_law(x, y, window=(10, 100)).slope == pytest.approx(-2.0, abs=1e-9)
    assert fit_power_law(x, y, window=(1, 9.9)).slope == pytest.approx(-1.0, abs=1e-9)
    with pytest.raises(ValueError, match="min_points"):
        fit_power_law(x, y, window=(50, 100), min_points=8)
    with pytest.raises(ValueError, match="window"):
        fit_power_law(x, y, window=(10, 1))


def test_lower_envelope():
    grid = np.logspace(0, 2, 5)
    c1 = (np.array([1.0, 100.0]), np.array([1.0, 0.01]))  # y = 1/x
    c2 = (np.array([10.0, 100.0]), np.array([0.01, 0.001]))
    env = lower_envelope([c1, c2], grid)
    np.testing.assert_allclose(env[:2], 1 / grid[:2])
    assert env[2] == pytest.approx(0.01) and env[-1] == pytest.approx(0.001)
    assert np.isnan(lower_envelope([c2], np.array([1.0]))[0])
