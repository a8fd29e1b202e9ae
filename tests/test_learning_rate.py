"""The stability probe: a run's divergence time, and the bracket search for the largest stable rate."""

from __future__ import annotations

import math

import pytest

from companion.config import ModelConfig
from companion.learning_rate import divergence_time, find_stability_edge, stability_edge

MODEL = ModelConfig(d=16, m=4, P=2, seed=0)


def test_divergence_time_is_finite_above_the_edge_and_inf_well_below():
    assert math.isinf(divergence_time(MODEL, 0.25 * stability_edge(MODEL.d), horizon=2.0))
    t = divergence_time(MODEL, 0.01, horizon=5.0)  # 18x the d = 16 edge
    assert 0.0 < t <= 5.0 + 0.01


@pytest.mark.parametrize("guess", [None, 0.02], ids=["from-the-edge-rule", "from-above"])
def test_bracket_is_one_stable_and_one_diverging_probe_within_the_factor(guess):
    lines: list[str] = []
    stable, unstable, probes = find_stability_edge(MODEL, horizon=5.0, factor=2.0, guess=guess, log=lines.append)
    assert stable < unstable <= 2.0 * stable * (1 + 1e-9)
    times = dict(probes)
    assert math.isinf(times[stable]) and math.isfinite(times[unstable])
    assert len(lines) == len(probes) and any("diverged at t=" in s for s in lines) and any("stable" in s for s in lines)
    if guess is not None:  # started above the edge: it halved down to a stable rate
        assert probes[0] == (guess, times[guess]) and math.isfinite(times[guess])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr": 0.0}, "lr"), ({"lr": 1e-3, "horizon": -1.0}, "horizon")],
)
def test_divergence_time_refuses_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        divergence_time(MODEL, **kwargs)


def test_bracket_search_refuses_a_factor_of_one_or_a_bad_guess():
    with pytest.raises(ValueError, match="factor"):
        find_stability_edge(MODEL, factor=1.0)
    with pytest.raises(ValueError, match="guess"):
        find_stability_edge(MODEL, guess=-1.0)
