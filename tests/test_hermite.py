"""Hermite toolkit: orthonormality, derivatives, coefficients of known functions, kernel."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.polynomial.hermite_e import HermiteE, hermegauss

import companion as cm
from companion.hermite import hermite_stack

NODES, WEIGHTS = hermegauss(60)
WEIGHTS = WEIGHTS / math.sqrt(2 * math.pi)


def test_orthonormal_up_to_degree_20():
    H = hermite_stack(20, NODES)
    gram = H.T @ (WEIGHTS[:, None] * H)  # the 60-node rule is exact below degree 120
    assert np.abs(gram - np.eye(21)).max() < 1e-12


@pytest.mark.parametrize("k", [0, 1, 2, 4, 7, 12])
def test_matches_numpy_hermite_e(k):
    z = np.linspace(-4, 4, 33)
    expected = HermiteE.basis(k)(z) / math.sqrt(math.factorial(k))
    np.testing.assert_allclose(cm.hermite(k, z), expected, rtol=1e-10, atol=1e-10)


def test_h4_closed_form():
    z = np.linspace(-3, 3, 11)
    np.testing.assert_allclose(cm.hermite(4, z), (z**4 - 6 * z**2 + 3) / math.sqrt(24), atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6, 12])
def test_derivative_by_finite_differences(k):
    z, h = np.linspace(-2.5, 2.5, 21), 1e-6
    fd = (cm.hermite(k, z + h) - cm.hermite(k, z - h)) / (2 * h)
    np.testing.assert_allclose(cm.hermite_derivative(k, z), fd, rtol=1e-6, atol=1e-6)


def test_stack_works_on_jax_arrays_and_keeps_dtype():
    z = jnp.linspace(-1, 1, 5, dtype=jnp.float32)
    out = hermite_stack(6, z)
    assert out.shape == (5, 7) and out.dtype == jnp.float32


def test_relu_coefficients_match_closed_form():
    # sigma_k = He_{k-2}(0) phi(0) / sqrt(k!) for k >= 2; He_{2j}(0) = (-1)^j (2j-1)!!
    relu = cm.get_activation("relu")
    phi0 = 1 / math.sqrt(2 * math.pi)
    expected = [phi0, 0.5]
    for k in range(2, 13):
        j2 = k - 2
        he0 = 0.0 if j2 % 2 else (-1) ** (j2 // 2) * float(np.prod(np.arange(j2 - 1, 0, -2)) if j2 else 1.0)
        expected.append(he0 * phi0 / math.sqrt(math.factorial(k)))
    np.testing.assert_allclose(relu.coefficients, expected[: relu.degree + 1], atol=1e-12)
    assert relu.information_exponent == 1 and relu.parity == "neither"
    assert 0 < relu.tail < 2e-3  # E[relu^2] = 1/2 minus the first 13 squares


@pytest.mark.parametrize(
    "name, k_star, parity",
    [
        ("h4", 4, "even"),
        ("h3", 3, "odd"),
        ("h6", 6, "even"),
        ("relu", 1, "neither"),
        ("abs", 2, "even"),
        ("tanh", 1, "odd"),
    ],
)
def test_information_exponent_and_parity(name, k_star, parity):
    act = cm.get_activation(name)
    assert act.information_exponent == k_star
    assert act.parity == parity


def test_polynomial_callable_is_exact():
    # z^4 = He_4 + 6 He_2 + 3 -> normalized (3, 0, 6*sqrt2, 0, sqrt24)
    act = cm.activation_from_callable(lambda z: z**4, degree=6)
    np.testing.assert_allclose(act.coefficients, [3, 0, 6 * math.sqrt(2), 0, math.sqrt(24)], atol=1e-10)
    assert act.tail < 1e-10 and act.information_exponent == 2


def test_truncated_activation_evaluates_its_expansion():
    tanh = cm.get_activation("tanh")
    z = np.linspace(-2, 2, 9)
    assert np.abs(tanh(z) - np.tanh(z)).max() < 0.02  # degree-12 truncation is close on [-2, 2]


def test_divergent_expansion_is_rejected():
    with pytest.raises(ValueError, match="does not converge"):
        cm.activation_from_callable(lambda z: np.exp(z**2 / 4))


def test_bad_activation_specs():
    with pytest.raises(ValueError, match="activation: unknown name"):
        cm.get_activation("swish")
    with pytest.raises(ValueError, match="constant"):
        cm.activation_from_coefficients([1.0, 0.0])
    with pytest.raises(ValueError, match="coefficients must be a non-empty finite"):
        cm.activation_from_coefficients([0.0, float("nan")])
    with pytest.raises(ValueError, match="k must be >= 1"):
        cm.hermite_activation(0)


@settings(max_examples=30, deadline=None)
@given(
    coefficients=st.lists(st.floats(-2, 2), min_size=2, max_size=7).filter(lambda c: any(abs(x) > 1e-3 for x in c[1:])),
    rho=st.floats(-1, 1),
)
def test_kernel_is_mehler_series(coefficients, rho):
    act = cm.activation_from_coefficients(coefficients)
    expected = sum(c * c * rho**k for k, c in enumerate(act.coefficients))
    assert float(act.kernel(jnp.float64(rho))) == pytest.approx(expected, abs=1e-10)
    d_expected = sum(k * c * c * rho ** (k - 1) for k, c in enumerate(act.coefficients) if k)
    assert float(act.kernel_derivative(jnp.float64(rho))) == pytest.approx(d_expected, abs=1e-9)
    assert float(act.kernel(jnp.float64(1.0))) == pytest.approx(act.second_moment, rel=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    coefficients=st.lists(st.floats(-2, 2), min_size=2, max_size=6).filter(lambda c: any(abs(x) > 1e-3 for x in c[1:]))
)
def test_quadrature_recovers_given_coefficients(coefficients):
    act = cm.activation_from_coefficients(coefficients)
    recovered = cm.activation_from_callable(act, degree=act.degree + 2)
    np.testing.assert_allclose(recovered.coefficients[: act.degree + 1], act.coefficients, atol=1e-9)


def test_mehler_identity_by_monte_carlo():
    # E[h_j(u.x) h_k(w.x)] = delta_jk rho^k, checked at 4 standard errors (from the sample variance).
    rng = np.random.default_rng(0)
    n, rho = 400_000, 0.7
    z1, z2 = rng.standard_normal((2, n))
    z2 = rho * z1 + math.sqrt(1 - rho**2) * z2
    for j, k in [(2, 2), (3, 3), (4, 4), (2, 4), (3, 4)]:
        prod = cm.hermite(j, z1) * cm.hermite(k, z2)
        se = prod.std(ddof=1) / math.sqrt(n)
        expected = rho**k if j == k else 0.0
        assert abs(prod.mean() - expected) < 4 * se, (j, k)


def test_check_even_warns_for_odd_and_low_exponent():
    with pytest.warns(UserWarning, match="even activation"):
        cm.make_teacher(8, 2, beta=1.0, activation="h3")
    with pytest.warns(UserWarning, match="k\\* > 2"):
        cm.make_teacher(8, 2, beta=1.0, activation="h2")
