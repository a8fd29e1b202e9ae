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
