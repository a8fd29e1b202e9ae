"""Predicted loss curves: the settle is the lone-neuron law, and the prediction matches a trained run."""

import numpy as np
import pytest

from companion.config import ModelConfig
from companion.experiments import FlowRun, run_flow
from companion.prediction import (
    PredictionRun,
    plateau_ratio,
    predict,
    predicted_exponents,
    predicted_loss,
    run_prediction,
    settle_time,
)
from companion.scaling import superposition_loss


def test_settle_time_is_logistic_for_small_norms():
    # For u -> 0 the norm grows logistically at rate 4 (rescaled time): tau ~ log(1/u)/4 + const.
    u = np.array([1e-3, 1e-4, 1e-5])
    tau = settle_time(u)
    assert np.all(np.diff(tau) > 0)
    np.testing.assert_allclose(np.diff(tau), np.log(10) / 4, rtol=0.02)
    assert settle_time(np.array([3.0]))[0] == 0.0  # already holds half of a_q at the escape


def test_settle_time_rejects_bad_norms():
    with pytest.raises(ValueError, match="u_esc"):
        settle_time(np.array([0.0, 0.1]))


@pytest.fixture(scope="module")
def tiny():
    model = ModelConfig(d=32, P=8, m=16, seed=0)
    run = run_flow(FlowRun(model, horizon=300.0, records=150), None)
    return model, predict(model), run


def test_prediction_matches_gradient_flow(tiny):
    model, pred, run = tiny
    both = np.isfinite(pred.learned) & np.isfinite(run["learned"])
    assert both.sum() >= 6
    ratio = pred.learned[both] / run["learned"][both]
    assert abs(np.median(ratio) - 1) < 0.1  # the chapter's target is 5% at d = 256
    assert np.mean(pred.winners == run["winners"]) >= 0.75


def test_step_and_smooth_losses(tiny):
    model, pred, run = tiny
    t = run["times"]
    step = predicted_loss(pred, t, "step")
    np.testing.assert_allclose(step, superposition_loss(pred.coefficients, pred.learned, t))
    smooth = predicted_loss(pred, t, "smooth")
    np.testing.assert_allclose(smooth[0], 0.5 * np.sum(pred.coefficients**2), rtol=1e-6)  # nothing learned at t ~ 0
    assert smooth[-1] < 0.05 * smooth[0]

    # The smooth shape follows the measured curve at least as closely as the steps.
    def err(L):
        return np.median(np.abs(np.log(L / run["loss"])))

    assert err(smooth) <= err(step) + 1e-9
    with pytest.raises(ValueError, match="shape"):
        predicted_loss(pred, t, "wiggly")


def test_narrow_student_plateau_counts_unlearned_directions():
    pred = predict(ModelConfig(d=32, P=8, m=2, seed=1))
    assert np.isfinite(pred.learned).sum() == 2
    final = predicted_loss(pred, [1e6])[0]
    np.testing.assert_allclose(final, 0.5 * np.sum(pred.coefficients[~np.isfinite(pred.learned)] ** 2))
    assert plateau_ratio([final], pred.coefficients, [2])[0] >= 1 - 1e-12


def test_cached_prediction_is_identical(tmp_path):
    from companion.cache import Cache

    cache = Cache(tmp_path, namespace="prediction", version="t")
    run = PredictionRun(ModelConfig(d=32, P=8, m=4, seed=2))
    first = run_prediction(run, cache)
    again = run_prediction(run, cache)
    for a, b in zip(first, again, strict=False):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_predicted_exponents_have_the_right_sign(tmp_path):
    out = predicted_exponents(ModelConfig(d=64, P=32, m=1), (2, 4, 8, 16, 32, 64), (0,), cache=tmp_path, refined=False)
    assert -1.2 < out["time"][0] < -0.4
    assert out["width"][0] < 0 and out["frontier"][0] < 0


def test_bad_activation_is_refused():
    teacher, V0 = ModelConfig(d=16, P=4, m=4, activation="h3").build()
    from companion.prediction import predict_from_init

    with pytest.raises(ValueError, match="information exponent"):
        predict_from_init(V0, teacher)


def test_predict_sweep_is_predict_at_every_width_and_seed(tmp_path):
    from companion.prediction import predict_sweep

    model = ModelConfig(d=32, P=8, m=1)
    t = np.logspace(0, 3, 20)
    sweep = predict_sweep(model, [2, 8], [0, 1], t, refined=False, cache=tmp_path)
    assert sweep.loss.shape == (2, 2, 20) and sweep.escapes.shape == sweep.learned.shape == (2, 2, 8)
    one = predict(model.replace(m=8, seed=1), refined=False)
    np.testing.assert_array_equal(sweep.learned[1, 1], one.learned)
    np.testing.assert_allclose(sweep.loss[1, 1], predicted_loss(one, t))
    assert np.isfinite(sweep.learned[:, 0]).sum(-1).tolist() == [2, 2]  # a width-2 student learns two
    with pytest.raises(ValueError, match="non-empty"):
        predict_sweep(model, [], [0], t, cache=False)
    with pytest.raises(ValueError, match="widths must be < P = 8"):
        plateau_ratio(sweep.loss[:, :, -1], one.coefficients, [2, 8])


def test_no_escape_leaves_the_whole_loss_and_empty_norms_settle_at_once():
    pred = predict(ModelConfig(d=32, P=8, m=2, seed=1))
    never = pred._replace(escapes=np.full_like(pred.escapes, np.inf))
    np.testing.assert_allclose(predicted_loss(never, [1.0, 1e6], "smooth"), 0.5 * np.sum(pred.coefficients**2))
    assert settle_time(np.zeros((0,))).shape == (0,)


def test_oracle_of_a_step_prediction_is_the_prediction_itself(tmp_path):
    """Step curves rebuilt from a step prediction's own learning times are that prediction."""
    from companion.prediction import oracle_sweep, predict_sweep

    model = ModelConfig(d=32, P=8, m=1)
    t = np.logspace(-1, 3, 40)
    sweep = predict_sweep(model, [2, 4, 8], [0], t, refined=False, cache=tmp_path)
    a = predict(model.replace(m=2), refined=False).coefficients  # the teacher's (float32) values
    np.testing.assert_allclose(oracle_sweep(sweep, a).loss, sweep.loss, rtol=1e-12)
    with pytest.raises(ValueError, match="coefficients must have shape"):
        oracle_sweep(sweep, a[:4])


def test_gap_attribution_counts_a_missed_direction_and_its_loss(tmp_path):
    from companion.prediction import attribute_frontier_gap, oracle_sweep, predict_sweep

    model = ModelConfig(d=32, P=16, m=1)
    t = np.logspace(-1, 3, 60)
    a = predict(model.replace(m=2), refined=False).coefficients
    pred = predict_sweep(model, [2, 4, 8, 16], [0], t, refined=False, cache=tmp_path)
    # A "measured" sweep: the prediction with one direction of the width-8 student never learned.
    learned = pred.learned.copy()
    q = int(np.flatnonzero(np.isfinite(learned[0, 2]))[0])
    learned[0, 2, q] = np.inf
    meas = oracle_sweep(pred._replace(learned=learned), a)
    gap = attribute_frontier_gap(meas, pred, a, model.P, model.beta)
    assert gap.missed == 1 and gap.unpredicted == 0 and gap.time_ratio == 1.0 and gap.time_quartiles == (1.0, 1.0)
    assert gap.measured_learned == gap.predicted_learned - 1
    assert gap.oracle == gap.measured  # the measured curves here *are* step curves
    assert gap.measured_set == gap.measured  # same times: correcting the set is the whole correction
    np.testing.assert_allclose(gap.missed_share[0, 2], 0.5 * a[q] ** 2 / meas.loss[0, 2, -1])
    assert np.count_nonzero(gap.missed_share) == 1
    same = attribute_frontier_gap(pred, pred, a, model.P, model.beta)
    assert same.missed == 0 and same.predicted == same.measured
    with pytest.raises(ValueError, match="same shapes"):
        attribute_frontier_gap(meas, predict_sweep(model, [2, 4], [0], t, refined=False, cache=tmp_path), a, 16, 0.8)


def test_idle_neurons_at_small_d_duplicate_a_direction_another_neuron_won():
    """d = 32, P = 16, width 8, seed 0 (the GD twin of the SGD book sweep): the two neurons that win no
    direction each end on a direction another neuron won (overlap² > 0.99), holding about a third of it."""
    from companion.experiments import idle_neurons

    model = ModelConfig(d=32, P=16, m=8, seed=0)
    idle = idle_neurons(FlowRun(model, horizon=300.0, dt=0.1, records=60))
    assert idle.idle.tolist() == [2, 4] and idle.duplicate.all()
    assert np.all(idle.overlap_sq > 0.99) and np.all((idle.norm_share > 0.2) & (idle.norm_share < 0.5))
    none = idle_neurons(FlowRun(model.replace(m=2), horizon=300.0, dt=0.1, records=60))
    assert none.idle.size == 0 and none.duplicate.shape == (0,)
