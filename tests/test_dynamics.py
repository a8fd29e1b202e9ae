"""Tests of companion.dynamics: the vector field, the integrators, escape times and the ODE predictors."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import companion as c
from companion.dynamics import (
    BlowUpError,
    Trajectory,
    crossing_time,
    decoupled_blowup_time,
    decoupled_crossing_time,
    decoupled_solution,
    direction_escapes,
    euler_flow,
    log_times,
    logistic_norm,
    logistic_time,
    pair_escape_times,
    reduced_direction_field,
    reference_flow,
    refined_escape_times,
    single_neuron_crossing_time,
    stability_step,
    vector_field,
)

H4 = c.get_activation("h4")
H6 = c.get_activation("h6")
MIXED = c.activation_from_coefficients([0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.5, 0.0, 0.3], name="mixed")

_field = jax.jit(vector_field)
_grad = jax.jit(c.population_gradient)


def _setup(preset="test", dtype="float64", **overrides):
    return c.ModelConfig.preset(preset, dtype=dtype, **overrides).build()


# ---------------------------------------------------------------------------------------------
# Vector field
# ---------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    log_scale=st.floats(-4.0, 1.0),
    activation=st.sampled_from([H4, H6, MIXED]),
    directions=st.sampled_from(["axes", "random"]),
)
def test_vector_field_is_minus_autodiff_gradient(seed, log_scale, activation, directions):
    teacher = c.make_teacher(
        16, 4, beta=0.8, activation=activation, directions=directions, key=jax.random.key(seed), dtype="float64"
    )
    V = jax.random.normal(jax.random.key(seed + 1), (8, 16), dtype=jnp.float64) * 10.0**log_scale
    F, G = _field(V, teacher), _grad(V, teacher)
    scale = float(jnp.max(jnp.abs(G)))
    assert scale > 0
    assert float(jnp.max(jnp.abs(F + G))) <= 1e-12 * scale


def test_vector_field_splits_into_norm_and_direction_equations():
    """2<v_k, dv_k/dt> = 4 w_k g_k with g_k = E[(f*-f) sigma(v̄_k.x)] (brief §4.2)."""
    teacher, V = _setup()
    V = V * 10.0  # norms of order 1/16 * 100, so the student term matters
    w = np.asarray(c.norms_sq(V))
    C, G = np.asarray(c.overlaps(V, teacher)), np.asarray(c.unit_directions(V) @ c.unit_directions(V).T)
    a = np.asarray(teacher.coefficients)
    g = (C**4) @ a - (G**4) @ w
    dw = 2.0 * np.sum(np.asarray(V) * np.asarray(vector_field(V, teacher)), axis=1)
    np.testing.assert_allclose(dw, 4.0 * w * g, rtol=1e-10, atol=1e-14)


def test_norm_rate_at_full_alignment_is_logistic():
    """A neuron sitting on v_p^* alone: dw/dt = 4 kappa(1) w (a_p - w), for any activation."""
    for activation in (H4, MIXED):
        teacher = c.make_teacher(12, 3, beta=0.8, activation=activation, dtype="float64")
        a = np.asarray(teacher.coefficients)
        for w in (1e-3, 0.5 * a[1], 1.3 * a[1]):
            V = jnp.zeros((2, 12), jnp.float64).at[0, 1].set(math.sqrt(w))
            F = np.asarray(vector_field(V, teacher))
            rate = 2.0 * math.sqrt(w) * F[0, 1]
            kappa1 = float(activation.kernel(1.0))
            assert rate == pytest.approx(4.0 * kappa1 * w * (a[1] - w), rel=1e-10)
            assert np.all(F[1] == 0.0)  # a zero neuron stays zero


def test_reduced_field_is_the_lone_neuron_direction_flow():
    """m = 1: d/dt <v̄, v_p*> under the full field equals reduced_direction_field(c)."""
    teacher = c.make_teacher(
        20, 5, beta=0.8, activation=MIXED, directions="random", key=jax.random.key(3), dtype="float64"
    )
    V = jax.random.normal(jax.random.key(4), (1, 20), dtype=jnp.float64) * 0.7
    _, dc = jax.jvp(lambda X: c.overlaps(X, teacher)[0], (V,), (vector_field(V, teacher),))
    expected = reduced_direction_field(c.overlaps(V, teacher)[0], teacher.coefficients, MIXED)
    np.testing.assert_allclose(np.asarray(dc), np.asarray(expected), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Integrators
# ---------------------------------------------------------------------------------------------


def test_euler_converges_to_the_reference_at_first_order():
    teacher, V0 = _setup()
    times = np.array([0.0, 2.0, 5.0, 10.0])  # through the first escapes of this teacher
    ref = reference_flow(V0, teacher, times, rtol=1e-10, atol=1e-13)
    errors = []
    for dt in (0.02, 0.01):
        run = euler_flow(V0, teacher, times, dt)
        np.testing.assert_array_equal(run.times, times)
        errors.append(np.max(np.abs(run.overlaps - ref.overlaps)) + np.max(np.abs(run.loss - ref.loss)))
    assert errors[1] < 1e-2
    assert 1.8 < errors[0] / errors[1] < 2.2  # halving dt halves the error: Euler is first order
    # t = 0 records the initial state itself
    np.testing.assert_allclose(ref.overlaps[0], ref.initial_overlaps, atol=1e-14)
    np.testing.assert_allclose(ref.loss[0], float(c.population_loss(V0, teacher)), rtol=1e-12)
    assert ref.final_state.shape == V0.shape and run.final_state.shape == V0.shape


def test_euler_is_gradient_descent_when_records_are_multiples_of_dt():
    teacher, V0 = _setup()
    dt, n = 0.25, 12
    run = euler_flow(V0, teacher, dt * np.array([4, 8, 12]), dt)
    V = V0
    for _ in range(n):
        V = V - dt * _grad(V, teacher)
    np.testing.assert_allclose(run.final_state, np.asarray(V), rtol=1e-12, atol=1e-15)
    assert run.steps == n
    np.testing.assert_allclose(run.norms_sq[-1], np.asarray(c.norms_sq(V)), rtol=1e-12)


def test_euler_records_match_the_state_summaries():
    teacher, V0 = _setup(dtype="float32")
    run = euler_flow(V0, teacher, log_times(5.0, 5), 0.1)
    V = jnp.asarray(run.final_state)
    np.testing.assert_allclose(run.overlaps[-1], np.asarray(c.overlaps(V, teacher)), atol=1e-6)
    np.testing.assert_allclose(run.loss[-1], float(c.population_loss(V, teacher)), rtol=1e-5)
    assert run.overlaps.dtype == np.float32 and run.times.dtype == np.float64


def test_euler_blow_up_is_detected_and_explained():
    teacher, V0 = _setup(dtype="float32")
    with pytest.warns(UserWarning, match="linearly unstable"):
        with pytest.raises(BlowUpError, match=r"blew up at t = .*dt = 3 is too large; try dt =") as info:
            euler_flow(V0, teacher, [300.0], 3.0)
    # it stops where it happened (a multiple of dt, long before the end of its record interval)
    assert 0.0 < info.value.time < 150.0
    assert info.value.time / 3.0 == pytest.approx(round(info.value.time / 3.0))
    # A stable step gives no warning and no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        euler_flow(V0, teacher, np.arange(0.25, 30.0, 0.25), 0.25)
    assert 0.25 < stability_step(teacher) < 3.0


def test_norm_bound_counts_as_blow_up():
    teacher, V0 = _setup()
    with pytest.raises(BlowUpError, match="exceeded 1e-05"):
        euler_flow(V0, teacher, [1.0], 0.1, max_norm_sq=1e-5)


def test_integrator_bad_input_names_the_parameter():
    teacher, V0 = _setup()
    with pytest.raises(ValueError, match="dt"):
        euler_flow(V0, teacher, [1.0], 0.0)
    with pytest.raises(ValueError, match="dt"):
        euler_flow(V0, teacher, [1.0], -0.1)
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        euler_flow(V0, teacher, [1.0, 1.0, 2.0], 0.1)
    with pytest.raises(ValueError, match="times must be >= 0"):
        euler_flow(V0, teacher, [-1.0, 2.0], 0.1)
    with pytest.raises(ValueError, match="horizon"):
        euler_flow(V0, teacher, [0.0], 0.1)
    with pytest.raises(ValueError, match="times must be finite"):
        reference_flow(V0, teacher, [1.0, np.inf])
    with pytest.raises(ValueError, match="V0"):
        euler_flow(V0[:, :5], teacher, [1.0], 0.1)
    with pytest.raises(ValueError, match="max_norm_sq"):
        euler_flow(V0, teacher, [1.0], 0.1, max_norm_sq=0.0)
    with pytest.raises(ValueError, match="rtol"):
        reference_flow(V0, teacher, [1.0], rtol=0.0)
    with pytest.raises(ValueError, match="t_max"):
        log_times(0.0, 10)
    with pytest.raises(ValueError, match="n must be"):
        log_times(10.0, 1)
    with pytest.raises(ValueError, match="t_min"):
        log_times(10.0, 10, t_min=20.0)


def test_reference_flow_reports_an_early_stop():
    teacher, V0 = _setup()
    with pytest.raises(RuntimeError, match="max_steps"):
        reference_flow(V0, teacher, [50.0], max_steps=3)


def test_log_times():
    t = log_times(100.0, 7, t_min=0.1)
    assert t[0] == pytest.approx(0.1) and t[-1] == pytest.approx(100.0) and t.size == 7
    np.testing.assert_allclose(np.diff(np.log(t)), math.log(1000.0) / 6)


# ---------------------------------------------------------------------------------------------
# Escape times from a record
# ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    t_min=st.floats(1e-3, 1.0),
    decades=st.floats(0.5, 4.0),
    n=st.integers(3, 60),
    slope=st.floats(0.05, 2.0),
    target=st.floats(0.01, 0.99),
)
def test_crossing_is_exact_for_curves_linear_in_log_time(t_min, decades, n, slope, target):
    times = np.geomspace(t_min, t_min * 10**decades, n)
    t_star = float(np.exp(np.log(times[0]) + target * (np.log(times[-1]) - np.log(times[0]))))
    values = 0.5 + slope * (np.log(times) - np.log(t_star))  # reaches 1/2 exactly at t_star
    got = crossing_time(times, values, 0.5)
    assert got == pytest.approx(t_star, rel=1e-9)


def test_crossing_time_edge_cases():
    times = np.array([0.0, 1.0, 2.0, 4.0])
    values = np.array(
        [
            [0.0, 0.6, 0.1, np.nan],  # crosses in (0, 1]: linear in t from t = 0
            [0.1, 0.1, 0.9, 0.2],  # crosses in (1, 2]
            [0.1, 0.2, 0.3, 0.4],  # never
            [0.1, np.nan, 0.2, 0.7],  # NaN counts as below
        ]
    ).T
    got = crossing_time(times, values, 0.5)
    assert got[0] == pytest.approx(0.5 / 0.6)
    assert got[1] == pytest.approx(math.exp(0.5 * math.log(2.0)))  # halfway in log t
    assert got[2] == math.inf
    assert got[3] == pytest.approx(math.exp(math.log(2.0) + 0.6 * math.log(2.0)))
    # already above at the first record: the first record time
    assert crossing_time([1.0, 2.0], [0.7, 0.9], 0.5) == 1.0
    # the first crossing counts, not a later one
    assert crossing_time([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0], 0.5) == pytest.approx(math.sqrt(2.0))
    with pytest.raises(ValueError, match="values"):
        crossing_time(times, np.zeros(3))
    with pytest.raises(ValueError, match="threshold"):
        crossing_time(times, np.zeros(4), threshold=np.nan)


def _synthetic_trajectory(times, overlaps):
    R, m, P = overlaps.shape
    return Trajectory(
        times, overlaps, np.zeros((R, m)), np.zeros(R), overlaps[0], np.zeros(m), np.zeros((m, 1)), 0, 0.1, "euler"
    )


def test_pair_and_direction_escapes_on_a_synthetic_record():
    times = np.array([1.0, 2.0, 4.0, 8.0])
    s = np.zeros((4, 3, 2))  # overlaps (signed): squares matter
    s[:, 0, 0] = -np.sqrt([0.1, 0.3, 0.7, 0.9])  # student 0 on teacher 0: crosses in (2, 4]
    s[:, 1, 0] = np.sqrt([0.1, 0.6, 0.9, 0.9])  # student 1 on teacher 0: crosses earlier, in (1, 2]
    s[:, 2, 1] = np.sqrt([0.0, 0.0, 0.0, 0.2])  # nobody crosses on teacher 1
    traj = _synthetic_trajectory(times, s)
    pair = pair_escape_times(traj)
    assert pair[0, 0] == pytest.approx(2.0 * 2.0**0.5)
    assert pair[1, 0] == pytest.approx(2.0**0.8)
    assert np.isinf(pair[:, 1]).all()
    students, when = direction_escapes(traj)
    assert students.tolist() == [1, -1]
    assert when[0] == pytest.approx(2.0**0.8) and np.isinf(when[1])


# ---------------------------------------------------------------------------------------------
# Decoupled ODE, logistic norm, single-neuron and refined predictors
# ---------------------------------------------------------------------------------------------


def test_h4_blowup_time_is_one_over_8_a_s0():
    assert float(decoupled_blowup_time(0.01, 0.5, H4)) == pytest.approx(1.0 / (8 * 0.5 * 0.01), rel=1e-14)
    # h6 (I = 3): 1/(4*3*2 a s0^2)
    assert float(decoupled_blowup_time(0.1, 0.5, H6)) == pytest.approx(1.0 / (24 * 0.5 * 0.01), rel=1e-14)
    # the leading coefficient enters squared: sigma = 0.5 h4 escapes 4 times later
    half = c.activation_from_coefficients([0, 0, 0, 0, 0.5])
    assert float(decoupled_blowup_time(0.01, 0.5, half)) == pytest.approx(4.0 / (8 * 0.5 * 0.01))
    assert np.isinf(decoupled_blowup_time(0.1, 1.0, c.get_activation("h2")))


@pytest.mark.parametrize("activation", [H4, H6, c.activation_from_coefficients([0, 0, 0, 0, 0.7, 0, 0.3])])
def test_decoupled_solution_solves_its_ode(activation):
    k = activation.information_exponent
    I, rate = k / 2, 2 * k * activation.leading_coefficient**2
    a, s0 = 0.3, 0.02
    T = float(decoupled_blowup_time(s0, a, activation))
    t_eval = np.linspace(0.0, 0.95 * T, 20)
    numeric = solve_ivp(lambda t, s: rate * a * s**I, (0.0, t_eval[-1]), [s0], t_eval=t_eval, rtol=1e-11, atol=1e-14).y[
        0
    ]
    np.testing.assert_allclose(decoupled_solution(t_eval, s0, a, activation), numeric, rtol=1e-7)
    assert np.isinf(decoupled_solution(1.01 * T, s0, a, activation))


@settings(max_examples=40, deadline=None)
@given(
    s0=st.floats(1e-4, 0.4),
    a=st.floats(1e-3, 2.0),
    threshold=st.floats(0.45, 0.99),
    activation=st.sampled_from([H4, H6]),
)
@example(s0=1e-4, a=0.9717570870203859, threshold=0.7259114686789392, activation=H6)  # found by CI
def test_decoupled_crossing_time_reaches_the_threshold(s0, a, threshold, activation):
    t = decoupled_crossing_time(s0, a, activation, threshold)
    assert 0.0 < t < decoupled_blowup_time(s0, a, activation)
    # s(t) = (s0^-(I-1) - c t)^(-1/(I-1)) subtracts two numbers of size s0^-(I-1) to leave s^-(I-1):
    # a float64 round-off of eps * (s/s0)^(I-1) relative, the conditioning of the closed form itself.
    I = activation.information_exponent // 2
    cancellation = 64 * np.finfo(np.float64).eps * (threshold / s0) ** (I - 1)
    assert float(decoupled_solution(t, s0, a, activation)) == pytest.approx(threshold, rel=1e-10 + cancellation)


@settings(max_examples=40, deadline=None)
@given(
    a=st.floats(1e-3, 1.0),
    w0_fraction=st.floats(1e-6, 0.9),
    fraction=st.floats(0.01, 0.999),
    moment=st.floats(0.2, 3.0),
)
def test_logistic_norm_and_time_are_inverse(a, w0_fraction, fraction, moment):
    w0 = w0_fraction * a
    if fraction <= w0_fraction:
        return
    t = float(logistic_time(w0, a, fraction, moment))
    assert float(logistic_norm(t, w0, a, moment)) == pytest.approx(fraction * a, rel=1e-9)


def test_logistic_norm_solves_its_ode():
    a, w0, moment = 0.4, 1e-3, 1.5
    t = np.linspace(0.0, 20.0, 200)
    numeric = solve_ivp(lambda _, w: 4 * moment * w * (a - w), (0, 20), [w0], t_eval=t, rtol=1e-11, atol=1e-15).y[0]
    np.testing.assert_allclose(logistic_norm(t, w0, a, moment), numeric, rtol=1e-7)
    assert float(logistic_norm(1e4, w0, a, moment)) == pytest.approx(a)


def test_single_neuron_time_matches_the_h4_closed_form():
    s0, a, thr = np.array([0.005, 0.03, 0.2]), np.array([0.5, 0.1, 0.02]), 0.5
    closed = (1 / s0 - 1 / thr + np.log(thr * (1 - s0) / (s0 * (1 - thr)))) / (8 * a)
    np.testing.assert_allclose(single_neuron_crossing_time(s0, a, H4, thr), closed, rtol=1e-6)
    # saturation makes it later than the leading-order crossing of the same threshold
    assert np.all(single_neuron_crossing_time(s0, a, H4) > decoupled_crossing_time(s0, a, H4))


def test_refined_predictor_with_one_direction_is_the_single_neuron_time():
    got = refined_escape_times([[0.2]], [0.01], [0.4], H4, [0], [0])
    assert got[0] == pytest.approx(float(single_neuron_crossing_time(0.04, 0.4, H4)), rel=1e-6)


def test_refined_predictor_needs_deflation_of_the_stronger_direction():
    """Student 1 is drawn to the strong direction 0 more than to its target 1.

    Alone it never reaches direction 1. Once student 0 has learned direction 0 first, the
    deflated drive lets student 1 escape on direction 1.
    """
    C0 = np.array([[0.4, 0.05], [0.2, 0.3]])
    a = np.array([1.0, 0.3])
    alone = refined_escape_times(C0, [0.01, 0.01], a, H4, [1], [1])
    assert np.isinf(alone[0])
    both = refined_escape_times(C0, [0.01, 0.01], a, H4, [0, 1], [0, 1])
    assert np.all(np.isfinite(both)) and both[0] < both[1]
    # and it is later than if direction 0 did not exist at all
    assert both[1] > float(single_neuron_crossing_time(0.09, 0.3, H4))


def test_refined_predictor_bad_input():
    with pytest.raises(ValueError, match="teachers"):
        refined_escape_times([[0.2, 0.1]], [0.01], [0.4, 0.1], H4, [0, 0], [0, 0])
    with pytest.raises(ValueError, match="students"):
        refined_escape_times([[0.2, 0.1]], [0.01], [0.4, 0.1], H4, [3], [0])
    with pytest.raises(ValueError, match="threshold"):
        refined_escape_times([[0.2]], [0.01], [0.4], H4, [0], [0], threshold=1.5)
    with pytest.raises(ValueError, match="initial_overlaps"):
        refined_escape_times([[0.2]], [0.01, 0.02], [0.4], H4, [0], [0])
    with pytest.raises(ValueError, match="s0"):
        decoupled_blowup_time(0.0, 0.5, H4)
    with pytest.raises(ValueError, match="a must"):
        decoupled_solution(1.0, 0.1, -0.5, H4)
    with pytest.raises(ValueError, match="fraction"):
        logistic_time(0.01, 0.5, 1.0)


def test_axes_fast_path_agrees_with_a_rotated_teacher():
    """Rotation invariance: a random frame with V0 rotated along gives the same records."""
    axes_teacher, V0 = _setup()
    d, P = axes_teacher.d, axes_teacher.P
    frame = c.make_teacher(d, d, beta=0.8, directions="random", key=jax.random.key(7), dtype="float64").directions
    rotated = c.make_teacher(d, P, coefficients=axes_teacher.coefficients, directions="axes", dtype="float64")
    rotated = type(rotated)(rotated.coefficients, frame[:P], rotated.second_moment, rotated.activation)
    W0 = V0 @ frame  # row k of W0 has <w_k, frame_p> = v_{k,p}
    np.testing.assert_allclose(
        np.asarray(vector_field(V0, axes_teacher, axes=True)), np.asarray(vector_field(V0, axes_teacher)), atol=1e-16
    )
    times = [1.0, 3.0]
    fast = euler_flow(V0, axes_teacher, times, 0.1)
    general = euler_flow(W0, rotated, times, 0.1)
    np.testing.assert_allclose(general.overlaps, fast.overlaps, atol=1e-12)
    np.testing.assert_allclose(general.loss, fast.loss, rtol=1e-12)
