"""The optax minibatch trainer: one step by hand, errors, divergence, caching; analysis helpers."""

import jax
import numpy as np
import pytest

import companion as cm
from companion import assumptions
from companion.optim import OptimConfig, OptimDivergenceError, draw, make_optimizer, train
from companion.sgd import minibatch_loss


@pytest.fixture(scope="module")
def model():
    return cm.ModelConfig(d=12, P=3, m=5, dtype="float64", init_norm_sq=0.2)


def test_optax_sgd_reproduces_a_hand_sgd_step(model):
    lr, B = 0.05, 7
    result = train(OptimConfig(model, "sgd", lr=lr, steps=2, batch=B, record=(0, 1, 2)), cache=False)
    teacher, V = model.build()
    key = model.keys()["data"]
    for t in range(2):  # two steps by hand, with jax.grad of the minibatch loss (not the engine's gradient)
        x, y = draw(key, t, teacher, B)
        V = V - lr * jax.grad(minibatch_loss)(V, x, y, teacher.activation)
    np.testing.assert_allclose(result.final_state, V, atol=1e-13)
    assert result.loss[0] == pytest.approx(float(cm.population_loss(model.student(), teacher)), rel=1e-12)
    assert result.samples.tolist() == [0, B, 2 * B]


def test_adam_first_step_is_a_signed_step(model):
    # Adam's first update is -lr * g / (|g| + eps): every coordinate moves by about lr.
    lr = 1e-3
    result = train(OptimConfig(model, "adam", lr=lr, steps=1, batch=3, record=(0, 1)), cache=False)
    teacher, V0 = model.build()
    x, y = draw(model.keys()["data"], 0, teacher, 3)
    g = np.asarray(jax.grad(minibatch_loss)(V0, x, y, teacher.activation))
    np.testing.assert_allclose(result.final_state - np.asarray(V0), -lr * g / (np.abs(g) + 1e-8), atol=1e-12)


def test_label_noise_changes_only_labels(model):
    teacher = model.teacher()
    key = model.keys()["data"]
    x0, y0 = draw(key, 5, teacher, 4)
    x1, y1 = draw(key, 5, teacher, 4, label_noise=0.5)
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(x1))
    assert not np.allclose(np.asarray(y0), np.asarray(y1))


def test_errors_name_the_parameter(model):
    with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'adamw', 'momentum', 'rmsprop', 'sgd'\]"):
        OptimConfig(model, "lbfgs")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("nesterov", 0.1)
    with pytest.raises(ValueError, match="lr must lie in"):
        OptimConfig(model, "sgd", lr=-0.1)
    with pytest.raises(ValueError, match="lr must lie in"):
        make_optimizer("adam", 0.0)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        OptimConfig(model, "sgd", batch=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        OptimConfig(model, "sgd", steps=0)
    with pytest.raises(ValueError, match="label_noise must lie in"):
        OptimConfig(model, "sgd", label_noise=-1.0)
    with pytest.raises(ValueError, match="record must be strictly increasing"):
        OptimConfig(model, "sgd", steps=10, record=(0, 5, 5))
    with pytest.raises(ValueError, match="options: 'adam' does not accept"):
        OptimConfig(model, "adam", options=(("not_an_option", 1.0),))


def test_divergence_is_reported(model):
    with pytest.raises(OptimDivergenceError, match="diverged at step"):
        train(OptimConfig(model, "sgd", lr=50.0, steps=200, batch=1, record=4), cache=False)


def test_cache_round_trip(model, tmp_path):
    config = OptimConfig(model, "adam", lr=1e-2, steps=30, batch=2, record=5)
    first = train(config, cache=tmp_path)
    second = train(config, cache=tmp_path)
    assert not first.cached and second.cached
    np.testing.assert_array_equal(first.loss, second.loss)
    np.testing.assert_array_equal(first.final_state, second.final_state)


def test_single_neuron_times_match_the_h4_closed_form():
    # h4: 8 a t(s) = 1/s0 - 1/s + log(s (1 - s0) / (s0 (1 - s))), in units of 1/a
    s0 = np.array([0.01, 0.05])
    got = assumptions.single_neuron_times(s0, cm.get_activation("h4"), levels=(0.5,))[:, 0]
    expected = (1 / s0 - 2 + np.log((1 - s0) / s0)) / 8
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_top_feature_leaves_v1_only_for_large_correlation():
    a = cm.power_law_coefficients(16, 0.8)
    h4 = cm.get_activation("h4")
    assert assumptions.top_feature(a, 0.0, h4).v1 == pytest.approx(1.0, abs=1e-9)
    assert assumptions.top_feature(a, 0.7, h4).u > assumptions.top_feature(a, 0.7, h4).v1
    rho = assumptions.merge_correlation(a, h4)
    assert 0.3 < rho < 0.6
