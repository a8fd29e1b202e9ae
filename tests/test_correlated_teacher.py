"""Equicorrelated teacher directions: the Gram matrix, errors, and the closed-form loss and flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import companion as cm
from companion.teacher import correlated_directions, correlation_range


@pytest.mark.parametrize("rho", [-0.1, 0.0, 0.3, 0.9])
def test_gram_matrix_is_the_requested_one(rho):
    P, d = 6, 11
    for key in (None, jax.random.key(2)):
        V = np.asarray(correlated_directions(P, d, rho, key=key, dtype="float64"))
        assert V.shape == (P, d)
        np.testing.assert_allclose(V @ V.T, (1 - rho) * np.eye(P) + rho, atol=1e-12)
    # on the axes the vectors live in the first P coordinates
    V = np.asarray(correlated_directions(P, d, rho, dtype="float64"))
    np.testing.assert_allclose(V[:, P:], 0.0, atol=0)


def test_make_teacher_correlated_and_second_moment():
    rho, P = 0.4, 5
    t = cm.make_teacher(12, P, beta=0.8, directions="correlated", correlation=rho, dtype="float64")
    G = np.asarray(t.directions) @ np.asarray(t.directions).T
    np.testing.assert_allclose(G, (1 - rho) * np.eye(P) + rho, atol=1e-12)
    a = np.asarray(t.coefficients)
    # h4: E f*^2 = a^T (G^4 entrywise) a, larger than sum a_p^2 = 1 for rho != 0
    assert float(t.second_moment) == pytest.approx(a @ (G**4) @ a, rel=1e-12)
    assert float(t.second_moment) > 1.0 + 1e-3
    # rho = 0 reproduces the orthonormal axes teacher exactly
    t0 = cm.make_teacher(12, P, beta=0.8, directions="correlated", correlation=0.0, dtype="float64")
    np.testing.assert_array_equal(np.asarray(t0.directions), np.eye(P, 12))


@pytest.mark.parametrize("rho", [1.0, 1.5, -0.25, -1.0, float("nan")])
def test_bad_correlation_raises_naming_it(rho):
    assert correlation_range(5) == (-0.25, 1.0)
    with pytest.raises(ValueError, match="correlation must"):
        correlated_directions(5, 8, rho)
    with pytest.raises(ValueError, match="correlation must"):
        cm.make_teacher(8, 5, beta=1.0, directions="correlated", correlation=rho)


def test_other_errors():
    with pytest.raises(ValueError, match="needs correlation"):
        cm.make_teacher(8, 3, beta=1.0, directions="correlated")
    with pytest.raises(ValueError, match="only used with directions='correlated'"):
        cm.make_teacher(8, 3, beta=1.0, correlation=0.2)
    with pytest.raises(ValueError, match="P must be >= 1 and <= 4"):
        correlated_directions(5, 4, 0.1)
    with pytest.raises(ValueError, match="'axes', 'random' or 'correlated'"):
        cm.make_teacher(8, 3, beta=1.0, directions="diagonal")


@pytest.fixture(scope="module")
def correlated64():
    teacher = cm.make_teacher(8, 4, beta=0.8, directions="correlated", correlation=0.5, dtype="float64")
    V = cm.init_student(jax.random.key(3), 5, 8, norm_sq=0.3, dtype="float64")
    V = V.at[0].set(0.7 * teacher.directions[0] + 0.2 * teacher.directions[1])  # near a teacher direction
    return teacher, V


def test_closed_form_loss_matches_monte_carlo(correlated64):
    # Tolerance: 4 standard errors of the Monte Carlo mean (from the same samples), and the error
    # bar must be small against the cross terms that only exist for correlated directions.
    teacher, V = correlated64
    closed = float(cm.population_loss(V, teacher))
    mean, se = cm.monte_carlo_loss(jax.random.key(11), V, teacher, n=400_000, batch=100_000)
    assert abs(mean - closed) < 4 * se
    a = np.asarray(teacher.coefficients)
    cross = 0.5 * float(a @ (0.5**4 * (np.ones((4, 4)) - np.eye(4))) @ a)  # teacher cross terms a_p a_q rho^4
    assert se < 0.5 * cross
    # and E f*^2 (stored once) against Monte Carlo of the teacher alone
    m2, se2 = cm.monte_carlo_loss(jax.random.key(12), jnp.zeros_like(V[:1]), teacher, n=400_000, batch=100_000)
    assert abs(2 * m2 - float(teacher.second_moment)) < 4 * 2 * se2


def test_vector_field_is_minus_gradient_and_teacher_is_a_zero(correlated64):
    teacher, V = correlated64
    np.testing.assert_allclose(cm.vector_field(V, teacher), -cm.population_gradient(V, teacher), atol=1e-12)
    held = cm.student_holding(teacher, [0, 1, 2, 3])
    assert float(cm.population_loss(held, teacher)) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(cm.vector_field(held, teacher), 0.0, atol=1e-12)
    # cancellation is still exact: holding S leaves 1/2 a_S'^T kappa(G_S'S') a_S'
    S, rest = [0, 2], [1, 3]
    a = np.asarray(teacher.coefficients)
    G = np.asarray(teacher.directions) @ np.asarray(teacher.directions).T
    expected = 0.5 * a[rest] @ (G[np.ix_(rest, rest)] ** 4) @ a[rest]
    assert float(cm.population_loss(cm.student_holding(teacher, S), teacher)) == pytest.approx(expected, abs=1e-12)
