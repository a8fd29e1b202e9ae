"""Teacher, student, closed-form loss, cancellation, Monte Carlo, configs and their errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import companion as cm


@pytest.fixture(scope="module")
def small64():
    return cm.ModelConfig.preset("test", dtype="float64").build()


# ---------------------------------------------------------------- teacher
def test_power_law_normalized_and_brief_table():
    a = cm.power_law_coefficients(1024, 0.8)
    assert np.sum(a**2) == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(a) < 0)
    assert a[0] == pytest.approx(0.6652, abs=1e-4)  # table in the paper brief, computed independently
    assert cm.condition_number(a) == pytest.approx(1024**0.8, rel=1e-12)


def test_power_law_errors_and_warning():
    with pytest.raises(ValueError, match="beta must lie in"):
        cm.power_law_coefficients(10, -0.1)
    with pytest.raises(ValueError, match="P must be >= 1"):
        cm.power_law_coefficients(0, 1.0)
    with pytest.warns(UserWarning, match="not square-summable"):
        cm.power_law_coefficients(10, 0.5)


def test_teacher_errors():
    with pytest.raises(ValueError, match="P must be >= 1 and <= 4"):
        cm.make_teacher(4, 5, beta=1.0)
    with pytest.raises(ValueError, match="exactly one of beta"):
        cm.make_teacher(4, 2)
    with pytest.raises(ValueError, match="coefficients must be >= 0"):
        cm.make_teacher(4, 2, coefficients=[1.0, -0.5])
    with pytest.raises(ValueError, match="coefficients must be finite"):
        cm.make_teacher(4, 2, coefficients=[1.0, float("inf")])
    with pytest.raises(ValueError, match="shape"):
        cm.make_teacher(4, 2, coefficients=[1.0])
    with pytest.raises(ValueError, match="needs a PRNG key"):
        cm.make_teacher(4, 2, beta=1.0, directions="random")


def test_random_frame_is_orthonormal():
    t = cm.make_teacher(40, 12, beta=1.0, directions="random", key=jax.random.key(3), dtype="float64")
    np.testing.assert_allclose(t.directions @ t.directions.T, np.eye(12), atol=1e-12)
    assert float(t.second_moment) == pytest.approx(1.0, abs=1e-12)


def test_teacher_output_and_samples():
    t = cm.make_teacher(6, 3, coefficients=[0.5, 0.3, 0.1], dtype="float64")
    x, y = cm.sample(jax.random.key(0), t, 5)
    expected = sum(a * cm.hermite(4, np.asarray(x[:, p])) for p, a in enumerate([0.5, 0.3, 0.1]))
    np.testing.assert_allclose(y, expected, atol=1e-12)
    assert x.shape == (5, 6) and y.shape == (5,)


# ---------------------------------------------------------------- student
def test_init_student_norms_and_dtype():
    V = cm.init_student(jax.random.key(0), 10, 20, norm_sq=0.01)
    assert V.dtype == jnp.float32 and V.shape == (10, 20)
    np.testing.assert_allclose(cm.norms_sq(V), 0.01, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(cm.unit_directions(V), axis=1), 1.0, rtol=1e-5)


def test_student_errors():
    with pytest.raises(ValueError, match="m must be >= 1"):
        cm.init_student(jax.random.key(0), 0, 5)
    with pytest.raises(ValueError, match="norm_sq must lie in"):
        cm.init_student(jax.random.key(0), 3, 5, norm_sq=0.0)
    t = cm.make_teacher(8, 4, beta=1.0)
    with pytest.raises(ValueError, match="m must be >= 3"):
        cm.student_holding(t, [0, 1, 2], 2)
    with pytest.raises(ValueError, match="learned: indices must lie"):
        cm.student_holding(t, [4])


def test_overlaps_shape_and_values(small64):
    teacher, V = small64
    C = cm.overlaps(V, teacher)
    assert C.shape == (16, 8)
    np.testing.assert_allclose(C, cm.unit_directions(V)[:, :8], atol=1e-14)  # directions are e_1..e_P


# ---------------------------------------------------------------- loss
def test_loss_at_zero_and_at_teacher(small64):
    teacher, V = small64
    assert float(cm.population_loss(jnp.zeros_like(V), teacher)) == pytest.approx(0.5, abs=1e-14)
    assert float(cm.population_loss(cm.student_holding(teacher, range(8)), teacher)) == pytest.approx(0, abs=1e-14)


def test_loss_matches_tensor_decomposition(small64):
    # 1/2 || sum_p a_p v_p^{x4} - sum_k w_k vbar_k^{x4} ||_F^2, built explicitly in d = 32 at degree 4.
    teacher, V = small64
    V = V[:4] * 3.0
    d = teacher.d

    def tensor(weights, dirs):
        return jnp.einsum("k,ka,kb,kc,ke->abce", weights, dirs, dirs, dirs, dirs)

    T = tensor(teacher.coefficients, teacher.directions) - tensor(cm.norms_sq(V), cm.unit_directions(V))
    assert T.shape == (d,) * 4
    assert float(cm.population_loss(V, teacher)) == pytest.approx(0.5 * float(jnp.sum(T**2)), rel=1e-10)


def test_loss_against_monte_carlo(small64):
    # Tolerance: 4 standard errors of the Monte Carlo mean, estimated from the same samples.
    teacher, V = small64
    V = cm.student_holding(teacher, [0, 3], 16).at[2:].set(V[2:])
    closed = float(cm.population_loss(V, teacher))
    mean, se = cm.monte_carlo_loss(jax.random.key(7), V, teacher, n=200_000, batch=50_000)
    assert abs(mean - closed) < 4 * se
    assert se < 0.05 * closed  # the check has teeth: the error bar is small against the value


def test_gradient_matches_finite_differences(small64):
    teacher, V = small64
    V = V * 4.0
    g = cm.population_gradient(V, teacher)
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(10):
        k, j = rng.integers(16), rng.integers(32)
        e = jnp.zeros_like(V).at[k, j].set(h)
        fd = (cm.population_loss(V + e, teacher) - cm.population_loss(V - e, teacher)) / (2 * h)
        assert float(g[k, j]) == pytest.approx(float(fd), abs=1e-8)


def test_gradient_is_finite_at_zero_rows(small64):
    teacher, _ = small64
    V = cm.student_holding(teacher, [1], 4)
    g = cm.population_gradient(V, teacher)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(g[1:], 0.0, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(learned=st.sets(st.integers(0, 7)), extra=st.integers(0, 3))
def test_cancellation_identity(learned, extra):
    teacher, _ = cm.ModelConfig.preset("test", dtype="float64").build()
    S = sorted(learned)
    V = cm.student_holding(teacher, S, len(S) + extra if S or extra else None)
    expected = 0.5 * float(np.sum(np.delete(np.asarray(teacher.coefficients), S) ** 2))
    assert float(cm.population_loss(V, teacher)) == pytest.approx(expected, abs=1e-12)
    assert cm.residual_loss(teacher, S) == pytest.approx(expected, abs=1e-14)


def test_cancellation_with_constant_term():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = cm.make_teacher(16, 5, beta=0.8, activation="relu", dtype="float64")
    V = cm.student_holding(t, [0, 2], 5)
    assert float(cm.population_loss(V, t)) == pytest.approx(cm.residual_loss(t, [0, 2]), abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 5.0), seed=st.integers(0, 2**16))
def test_loss_is_nonnegative_and_homogeneous_parts(scale, seed):
    # The student is 2-homogeneous, f_{cV} = c^2 f_V, so L(cV) = A - B t + C t^2 in t = c^2 with
    # A = E f*^2 / 2, B = <f_V, f*>, C = E f_V^2 / 2 >= 0. Fit B and C from t = 1, 2 and check the
    # quadratic at t = 3 and 1/2, A at t = 0, and that its minimum over t is >= 0 (Cauchy-Schwarz).
    teacher, _ = cm.ModelConfig.preset("test", dtype="float64").build()
    V = cm.init_student(jax.random.key(seed), 6, teacher.d, norm_sq=scale, dtype="float64")

    def loss_at(t):
        return float(cm.population_loss(np.sqrt(t) * V, teacher))

    A = 0.5 * float(teacher.second_moment)
    assert loss_at(0.0) == pytest.approx(A, rel=1e-12)
    L1, L2 = loss_at(1.0), loss_at(2.0)
    C = (L2 - 2 * L1 + A) / 2  # L(2) - 2 L(1) + A = 2C
    B = A + C - L1
    scale_of_terms = A + abs(B) + C
    for t in (3.0, 0.5):
        assert loss_at(t) == pytest.approx(A - B * t + C * t**2, abs=1e-9 * scale_of_terms * (1 + t**2))
    assert C > 0
    assert A - B**2 / (4 * C) >= -1e-9 * scale_of_terms
    assert L1 >= -1e-12


def test_changing_a_coefficient_changes_the_loss():
    # The closed form must really use the activation's coefficients.
    base = cm.make_teacher(8, 3, beta=1.0, dtype="float64")
    with pytest.warns(UserWarning, match="information exponent 2"):  # h2 + h4 is outside the theorem
        other = cm.make_teacher(8, 3, beta=1.0, activation=[0, 0, 0.1, 0, 1.0], dtype="float64")
    V = cm.init_student(jax.random.key(0), 4, 8, norm_sq=0.5, dtype="float64")
    assert abs(float(cm.population_loss(V, base)) - float(cm.population_loss(V, other))) > 1e-3


# ---------------------------------------------------------------- config
def test_presets_and_config_errors():
    c = cm.ModelConfig.preset("paper")
    assert (c.d, c.P, c.activation, c.beta) == (2048, 1024, "h4", 0.8)
    with pytest.raises(ValueError, match="preset must be one of"):
        cm.ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="m must be >= 1"):
        cm.ModelConfig(m=0)
    with pytest.raises(ValueError, match="P must be >= 1 and <= 16"):
        cm.ModelConfig(d=16, P=32)
    with pytest.raises(ValueError, match="beta must lie in"):
        cm.ModelConfig(beta=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        cm.ModelConfig(dtype="float16")
    with pytest.raises(ValueError, match="activation: unknown name"):
        cm.ModelConfig(activation="gelu")


def test_config_is_deterministic():
    a = cm.ModelConfig.preset("test").student()
    b = cm.ModelConfig.preset("test").student()
    c = cm.ModelConfig.preset("test", seed=1).student()
    assert bool(jnp.all(a == b)) and not bool(jnp.all(a == c))
