"""The unstable-learning-rate experiment: configuration, rates, analysis on known arrays, a tiny run."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from companion import unstable as un
from companion.__main__ import main
from companion.config import ModelConfig
from companion.sgd import SGDConfig, build, run_sgd, theory_lr

MODEL = ModelConfig(d=16, P=8, m=16)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"p_stars": ()}, "p_stars"),
        ({"p_stars": (0, 2)}, "p_stars"),
        ({"p_stars": (2, 9)}, r"P\* <= P = 8"),
        ({"p_stars": (4, 2)}, "strictly increasing"),
        ({"delta": 0.0}, "delta"),
        ({"batch": 0}, "batch"),
        ({"streams": 0}, "streams"),
        ({"horizon": -1.0}, "horizon"),
    ],
)
def test_bad_configuration_names_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        un.UnstableLR(MODEL, p_stars=(1, 8)).replace(**changes)


def test_rates_follow_the_coefficients_and_the_batch():
    config = un.UnstableLR(MODEL, p_stars=(1, 2, 8), batch=4)
    a = np.asarray(MODEL.teacher().coefficients)
    rates = np.array([config.rate(p) for p in config.p_stars])
    np.testing.assert_allclose(rates / rates[-1], a[[0, 1, 7]] / a[7], rtol=1e-6)  # a_p is float32
    assert rates[0] == pytest.approx(4 * theory_lr(MODEL, 0.1, p_star=1), rel=1e-12)
    with pytest.raises(ValueError, match="batch"):
        theory_lr(MODEL, 0.1, batch=0)


def test_same_init_shares_the_start_but_not_the_data():
    config = SGDConfig(MODEL, lr=1e-4, steps=50, record=(0, 50), seeds=3, same_init=True)
    _, V0, keys = build(config)
    assert np.array_equal(np.asarray(V0[0]), np.asarray(V0[2]))
    data = np.asarray(jax.random.key_data(keys)).reshape(3, -1)
    assert len({tuple(row) for row in data}) == 3
    result = run_sgd(config, cache=False)
    assert not np.allclose(result.final_state[0], result.final_state[1])
    independent = build(config.replace(same_init=False))[1]
    assert not np.array_equal(np.asarray(independent[0]), np.asarray(independent[1]))
    with pytest.raises(ValueError, match="same_init"):
        config.replace(same_init="yes")


def _known_result():
    """Two rates, two streams, three directions, hand-made escapes."""
    a = np.array([0.8, 0.5, 0.33])
    escapes = np.array(
        [
            [[1.0, 2.0, 3.0], [1.5, 2.0, np.inf]],  # rate of P* = 1
            [[2.0, 4.0, 6.0], [2.0, 3.0, 5.0]],  # rate of P* = 3 (stable)
        ]
    )
    winners = np.array([[[0, 1, 2], [0, 3, -1]], [[0, 1, 2], [0, 1, 2]]])
    samples = np.array([[0.0, 10.0, 100.0], [0.0, 10.0, 100.0]])
    loss = np.array([[[0.5, 0.2, 0.1], [0.5, 0.2, 0.1]], [[0.5, 0.4, 0.2], [0.5, 0.4, 0.2]]])
    return un.UnstableResult(
        np.array([1, 3]),
        np.array([2.0, 1.0]),
        a,
        samples,
        samples * 0,
        loss,
        escapes,
        winners,
        np.array([0.0, 1.0]),
        np.array([0.5, 0.1]),
        np.array([2.0, 4.0, 5.0]),
        np.array([0, 1, 2]),
        1,
    )


def test_analysis_on_known_arrays():
    r = _known_result()
    deviation, same = un.escape_deviation(r)
    np.testing.assert_allclose(deviation[0, 0], [-0.5, -0.5, -0.4])
    assert same[0, 1].tolist() == [True, False, False]
    # every escape counts by default, whoever won it; a direction never learned has no deviation
    assert deviation[0, 1, 1] == pytest.approx(2.0 / 4.0 - 1) and np.isnan(deviation[0, 1, 2])
    only_same, _ = un.escape_deviation(r, same_winner_only=True)
    assert np.isnan(only_same[0, 1, 1]) and only_same[0, 0, 1] == pytest.approx(-0.5)
    np.testing.assert_allclose(deviation[1, 1], [0.0, -0.25, 0.0])
    np.testing.assert_allclose(un.tracking_ratio(r), [[1.0, 1.6, 0.8 / 0.33], [0.33 / 0.8, 0.33 / 0.5, 1.0]])
    # samples to the own top P*: P* = 1 -> T_1 / eta_1; P* = 3 -> max over all three / eta_3
    np.testing.assert_allclose(un.samples_to_top(r), [[0.5, 0.75], [6.0, 5.0]])
    np.testing.assert_allclose(un.samples_to_top_at(r, -1), [[2.0, 2.0], [6.0, 5.0]])
    # log-linear interpolation of the stream mean: halfway (in log n) between 10 and 100
    assert un.loss_at(r, 0, np.sqrt(10 * 100)) == pytest.approx(np.sqrt(0.2 * 0.1))
    assert np.isnan(un.loss_at(r, 0, 1e4))


def test_tiny_run_learns_the_top_direction_sooner():
    result = un.run_unstable(un.unstable_lr("test"), cache=False)
    assert result.loss.shape[:2] == (2, 2) and result.escapes.shape == (2, 2, 8)
    own, stable = np.median(un.samples_to_top(result)[0]), np.median(un.samples_to_top_at(result, -1)[0])
    assert np.isfinite(own) and own < stable
    n, loss = un.rule_points(result)
    assert np.isfinite(n[0]) and 0.0 < loss[0] < 0.55  # the top direction's run, when it has learned a_1
    assert np.nanmean(result.loss[-1, :, -1]) < loss[0]  # the stable rule ends lower, having learned more


def test_presets_and_cli():
    assert un.unstable_lr("paper").model.d == 2048
    with pytest.raises(ValueError, match="preset must be one of"):
        un.unstable_lr("huge")
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "unstable_lr", "--preset", "huge"])
    assert exit_info.value.code == 2


def test_summary_and_cli_out(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "summary.json"
    assert main(["reproduce", "unstable_lr", "--preset", "test", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["preset"] == "test" and summary["p_stars"] == [1, 8]
    assert len(summary["gain"]["measured"]) == 2 and summary["gain"]["measured"][0] > 1.0  # top direction sooner
    tracking = summary["tracking"]
    assert len(tracking["x"]) == len(tracking["rms"]) >= 1 and all(r >= 0 for r in tracking["rms"])
    # The test preset is too small to fit anything: summarize says so with None rather than a number.
    assert summary["loss"]["rule"] is None and summary["loss"]["stable"] is None
    assert tracking["fit"] is None


def test_tracking_curve_recovers_a_planted_square_root():
    # SGD escapes planted at T_flow * (1 +- 0.1 sqrt(x)), x = a_P*/a_p: the RMS deviation is 0.1 sqrt(x).
    P, S = 16, 2
    a = np.arange(1, P + 1, dtype=np.float64) ** -0.8
    p_stars = np.array([1, 2, 4, 8, 16])
    x = a[p_stars - 1][:, None] / a[None, :]
    flow = np.linspace(1.0, 30.0, P)
    sign = np.array([1.0, -1.0])[None, :, None]
    escapes = flow[None, None, :] * (1 + sign * 0.1 * np.sqrt(x)[:, None, :])
    winners = np.broadcast_to(np.arange(P), escapes.shape)
    r = un.UnstableResult(
        p_stars,
        np.ones(5),
        a,
        np.zeros((5, 2)),
        np.zeros((5, 2)),
        np.zeros((5, S, 2)),
        escapes,
        winners,
        np.zeros(2),
        np.zeros(2),
        flow,
        np.arange(P),
        1,
    )
    curve = un.tracking_curve(r, min_count=2)
    assert curve.fit.slope == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(curve.rms, 0.1 * np.sqrt(curve.x), rtol=0.3)
    assert np.all(curve.same_winner == 1.0)


def test_rate_constant_inverts_a_planted_square_root_law():
    # Rates built with c_used = 20; planted deviations r(x) = delta * sqrt(c_used * x / c_true).
    P, d, k, delta, c_true = 16, 32, 4, 0.1, 80.0
    a = np.arange(1, P + 1, dtype=np.float64) ** -0.8
    p_stars = np.array([1, 2, 4, 8, 16])
    rates = 20.0 * 4 * a[p_stars - 1] * delta**2 * d ** (-k / 2)
    x = np.array([0.5, 1.0, 3.0])
    curve = un.TrackingCurve(x, delta * np.sqrt(20.0 * x / c_true), np.ones(3), np.full(3, 9), None)
    r = un.UnstableResult(
        p_stars, rates, a, *([np.zeros(1)] * 5), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), 4
    )
    constant = un.rate_constant(r, delta, d, k, curve)
    assert constant.used == pytest.approx(20.0)
    np.testing.assert_allclose(constant.per_bin, c_true)
    assert constant.value == pytest.approx(c_true) and constant.at_one == pytest.approx(c_true)
    with pytest.raises(ValueError, match="delta"):
        un.rate_constant(r, 0.0, d, k, curve)


def test_envelope_takes_the_best_rate_at_each_budget():
    # Three rates with different recorded ranges; the rule points of P* = 1, 2 set the window [10, 200].
    P = 4
    a = np.arange(1, P + 1, dtype=np.float64) ** -1.0
    samples = np.array([[10.0, 1e3, np.nan], [10.0, 1e2, 1e4], [10.0, 1e3, 1e5]])
    loss = np.array([[[0.2, 0.05, np.nan]] * 2, [[0.3, 0.02, 0.01]] * 2, [[0.4, 0.1, 0.01]] * 2])
    escapes = np.array([[[1.0, 2.0, 3.0, 4.0]] * 2, [[1.0, 2.0, 3.0, 4.0]] * 2, [[1.0, 2.0, 30.0, 40.0]] * 2])
    r = un.UnstableResult(
        np.array([1, 2, 4]),
        np.array([1e-1, 1e-2, 1e-3]),
        a,
        samples,
        samples,
        loss,
        escapes,
        np.zeros((3, 2, P), int),
        np.zeros(2),
        np.zeros(2),
        np.ones(P),
        np.arange(P),
        1,
    )
    env = un.envelope(r, beta=1.0, points=5)
    assert env.n[0] == pytest.approx(10.0) and env.n[-1] == pytest.approx(200.0)
    table = np.stack([un.loss_at(r, i, env.n) for i in range(3)])
    np.testing.assert_allclose(env.loss, np.nanmin(table, axis=0))
    assert env.best[0] == 0 and env.best[-1] == 1  # the fastest rate first, then the middle one
    assert env.fit is not None and env.fit.slope < 0
