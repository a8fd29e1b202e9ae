r"""Normalized Hermite polynomials and the Hermite expansion of an activation.

Conventions (used by every chapter):

* ``h_k = He_k / sqrt(k!)`` are the *normalized probabilists'* Hermite polynomials, so that
  :math:`\mathbb E_{z\sim N(0,1)}[h_j(z) h_k(z)] = \delta_{jk}`;
* an activation is :math:`\sigma = \sum_k \hat\sigma_k h_k`, with coefficients
  :math:`\hat\sigma_k = \mathbb E[\sigma(z) h_k(z)]`;
* its *information exponent* :math:`k_*` is the lowest degree :math:`k \ge 1` with
  :math:`\hat\sigma_k \ne 0`;
* for unit vectors ``u, w`` Mehler's identity gives the correlation kernel
  :math:`\mathbb E_x[\sigma(u\cdot x)\sigma(w\cdot x)] = \sum_k \hat\sigma_k^2 (u\cdot w)^k`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from companion._validate import require_int, warn

#: Coefficients smaller than this (in absolute value) count as zero when reading off the
#: information exponent and the parity; quadrature errors are far below it.
COEFFICIENT_TOL = 1e-8


def hermite_stack(degree: int, z):
    r"""Values of :math:`h_0, \dots, h_K` at ``z``, by the stable three-term recurrence.

    :math:`h_{k+1}(z) = (z\,h_k(z) - \sqrt{k}\,h_{k-1}(z)) / \sqrt{k+1}`.

    Args:
        degree: the largest degree K (>= 0).
        z: array of any shape.
    Returns:
        array of shape ``z.shape + (K + 1,)``; works on NumPy and JAX arrays alike.
    """
    xp = jnp if isinstance(z, jax.Array) else np
    z = xp.asarray(z)
    values = [xp.ones_like(z)]
    if degree >= 1:
        values.append(z)
    for k in range(1, degree):
        values.append((z * values[k] - math.sqrt(k) * values[k - 1]) / math.sqrt(k + 1))
    return xp.stack(values, axis=-1)


def hermite(k: int, z):
    r"""The normalized Hermite polynomial :math:`h_k(z)` (any array shape)."""
    k = require_int("k", k, 0)
    return hermite_stack(k, z)[..., k]


def hermite_derivative(k: int, z):
    r""":math:`h_k'(z) = \sqrt{k}\, h_{k-1}(z)` (any array shape)."""
    k = require_int("k", k, 0)
    if k == 0:
        return (jnp if isinstance(z, jax.Array) else np).zeros_like(z)
    return math.sqrt(k) * hermite(k - 1, z)


def _gauss_hermite_rule(points: int):
    """Nodes and weights of E_{z~N(0,1)}[g(z)] ~ sum_i w_i g(z_i) (exact for deg g < 2n)."""
    nodes, weights = hermegauss(points)
    return nodes, weights / math.sqrt(2.0 * math.pi)


def _split_gauss_legendre_rule(points: int, breakpoints: Sequence[float], half_width: float = 12.0):
    """Composite Gauss–Legendre rule for E[g(z)] on [-L, L], with panel edges at the breakpoints.

    For a g that is smooth between breakpoints (ReLU and |z| have a kink at 0) this converges
    exponentially, where a Gauss–Hermite rule converges only like 1/n. The Gaussian mass beyond
    L = 12 is below 1e-32.
    """
    edges = sorted({-half_width, half_width, *[float(b) for b in breakpoints]})
    x, w = leggauss(points)
    nodes: list[np.ndarray] | np.ndarray
    weights: list[np.ndarray] | np.ndarray
    nodes, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        # 8 panels between breakpoints keep each panel short against the Gaussian's width.
        for a, b in zip(np.linspace(lo, hi, 9)[:-1], np.linspace(lo, hi, 9)[1:], strict=False):
            nodes.append(0.5 * (b - a) * x + 0.5 * (a + b))
            weights.append(0.5 * (b - a) * w)
    nodes, weights = np.concatenate(nodes), np.concatenate(weights)
    return nodes, weights * np.exp(-0.5 * nodes**2) / math.sqrt(2.0 * math.pi)


def _project(fn: Callable, degree: int, nodes, weights):
    values = np.asarray(fn(nodes), dtype=np.float64)
    if values.shape != nodes.shape or not np.all(np.isfinite(values)):
        return None, math.inf
    coefficients = hermite_stack(degree, nodes).T @ (weights * values)
    return coefficients, float(np.sum(weights * values**2))


def hermite_coefficients(
    fn: Callable,
    degree: int = 12,
    points: int = 150,
    breakpoints: Sequence[float] | None = None,
):
    r"""Hermite coefficients :math:`\hat\sigma_0..\hat\sigma_K` of a scalar function by quadrature.

    Gauss–Hermite quadrature with ``points`` nodes (exact for polynomials of degree
    < 2·points). When ``breakpoints`` are given (kinks of ``fn``), a composite Gauss–Legendre rule
    with panel edges there is used instead, since Gauss–Hermite converges only like 1/n across a
    kink. The accuracy is *measured*: the rule is repeated with half the points and the largest
    change of any coefficient is returned as ``error``.

    Args:
        fn: vectorized ``float64 array -> float64 array`` (NumPy or JAX function).
        degree: largest degree K.
        points: nodes of the rule (<= 250 for Gauss–Hermite, whose weights underflow beyond).
        breakpoints: kinks of ``fn``, or None for a smooth ``fn``.
    Returns:
        ``(coefficients, second_moment, error)``: an array of shape (K+1,), :math:`\mathbb E[\sigma^2]`,
        and the error estimate.
    Raises:
        ValueError: if the values are not finite or the quadrature does not converge (for example
            when :math:`\mathbb E[\sigma^2] = \infty`, so the Hermite expansion does not exist).
    """
    degree = require_int("degree", degree, 0, 60)
    if breakpoints is None:
        points = require_int("points", points, 2 * degree + 2, 250)
        rule: Callable[[int], tuple[np.ndarray, np.ndarray]] = _gauss_hermite_rule
    else:
        points = require_int("points", points, degree + 2, 400)
        rule = lambda n: _split_gauss_legendre_rule(n, breakpoints)  # noqa: E731
    fine, moment = _project(fn, degree, *rule(points))
    coarse, moment_coarse = _project(fn, degree, *rule(points // 2))
    if fine is None or coarse is None:
        raise ValueError("activation: its values are not finite at the quadrature nodes")
    error = float(np.max(np.abs(fine - coarse)))
    moment_change = abs(moment - moment_coarse) / max(moment, 1e-300)
    if moment_change > 1e-3 or not math.isfinite(moment):
        raise ValueError(
            "activation: its Hermite expansion does not converge (E[sigma(z)^2] changed by "
            f"{moment_change:.2g} relative between {points // 2} and {points} quadrature points; "
            "sigma must be square-integrable under N(0,1))"
        )
    return fine, moment, error


def _horner(coefficients: Sequence[float], x):
    """sum_k c_k x^k by Horner's rule: one fused multiply-add per degree, any array shape."""
    result = jnp.zeros_like(x) + coefficients[-1]
    for c in coefficients[-2::-1]:
        result = result * x + c
    return result


@dataclass(frozen=True)
class Activation:
    r"""An activation :math:`\sigma` through its Hermite coefficients :math:`\hat\sigma_0..\hat\sigma_K`.

    Every closed form of the book (kernel, population loss, gradient flow) uses the finite
    expansion ``coefficients``. When the activation's true expansion is infinite (ReLU, tanh),
    ``coefficients`` is its degree-K truncation and ``tail`` =
    :math:`\mathbb E[\sigma^2] - \sum_{k\le K}\hat\sigma_k^2` is the energy left out; the closed
    forms are then those of the truncated activation, which ``__call__`` evaluates.

    Attributes:
        name: a short label (``"h4"``, ``"relu"``).
        coefficients: :math:`(\hat\sigma_0, \dots, \hat\sigma_K)` as a tuple of floats.
        tail: energy beyond degree K (0 for a finite expansion).
        quadrature_error: measured accuracy of the coefficients (0 when exact).
        exact: the original function, when the expansion was computed from one (kept for
            reference and plotting; the model uses the truncated expansion).
    """

    name: str
    coefficients: tuple[float, ...]
    tail: float = 0.0
    quadrature_error: float = 0.0
    exact: Callable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        coefficients = tuple(float(c) for c in self.coefficients)
        if not coefficients or not all(math.isfinite(c) for c in coefficients):
            raise ValueError(f"activation coefficients must be a non-empty finite sequence, got {self.coefficients!r}")
        while len(coefficients) > 1 and abs(coefficients[-1]) <= COEFFICIENT_TOL:
            coefficients = coefficients[:-1]  # trailing zeros only cost time
        object.__setattr__(self, "coefficients", coefficients)
        if all(abs(c) <= COEFFICIENT_TOL for c in coefficients[1:]):
            raise ValueError(
                f"activation {self.name!r}: all Hermite coefficients of degree >= 1 vanish, so the "
                "activation is a constant and carries no direction to learn"
            )

    @property
    def degree(self) -> int:
        """K, the largest degree kept."""
        return len(self.coefficients) - 1

    @property
    def information_exponent(self) -> int:
        r""":math:`k_*`: the lowest degree :math:`k\ge1` with :math:`|\hat\sigma_k| > 10^{-8}`."""
        return next(k for k, c in enumerate(self.coefficients) if k >= 1 and abs(c) > COEFFICIENT_TOL)

    @property
    def leading_coefficient(self) -> float:
        r""":math:`\hat\sigma_{k_*}`."""
        return self.coefficients[self.information_exponent]

    @property
    def parity(self) -> str:
        """``"even"``, ``"odd"`` or ``"neither"`` (read off the nonzero coefficients)."""
        degrees = {k % 2 for k, c in enumerate(self.coefficients) if abs(c) > COEFFICIENT_TOL}
        return {frozenset({0}): "even", frozenset({1}): "odd"}.get(frozenset(degrees), "neither")

    @property
    def second_moment(self) -> float:
        r""":math:`\mathbb E[\sigma(z)^2] = \sum_k \hat\sigma_k^2` (+ the tail, if truncated)."""
        return float(sum(c * c for c in self.coefficients) + self.tail)

    @property
    def kernel_coefficients(self) -> tuple[float, ...]:
        r""":math:`(\hat\sigma_0^2, \dots, \hat\sigma_K^2)`: the power series of the kernel."""
        return tuple(c * c for c in self.coefficients)

    def kernel(self, rho):
        r"""Correlation kernel :math:`\kappa_\sigma(\rho) = \sum_k \hat\sigma_k^2 \rho^k`.

        By Mehler's identity, :math:`\mathbb E_x[\sigma(u\cdot x)\sigma(w\cdot x)] =
        \kappa_\sigma(u\cdot w)` for unit vectors u, w. Elementwise on any array shape.
        """
        return _horner(self.kernel_coefficients, rho)

    def kernel_derivative(self, rho):
        r""":math:`\kappa_\sigma'(\rho) = \sum_k k\,\hat\sigma_k^2 \rho^{k-1}` (elementwise)."""
        coefficients = [k * c for k, c in enumerate(self.kernel_coefficients)][1:] or [0.0]
        return _horner(coefficients, rho)

    def __call__(self, z):
        r""":math:`\sigma(z) = \sum_{k\le K} \hat\sigma_k h_k(z)` (elementwise, NumPy or JAX)."""
        return hermite_stack(self.degree, z) @ (jnp if isinstance(z, jax.Array) else np).asarray(
            self.coefficients, dtype=z.dtype
        )

    def derivative(self, z):
        r""":math:`\sigma'(z) = \sum_{k\ge1} \hat\sigma_k \sqrt{k}\, h_{k-1}(z)` (elementwise)."""
        xp = jnp if isinstance(z, jax.Array) else np
        if self.degree == 0:
            return xp.zeros_like(z)
        weights = [c * math.sqrt(k) for k, c in enumerate(self.coefficients)][1:]
        return hermite_stack(self.degree - 1, z) @ xp.asarray(weights, dtype=z.dtype)


def hermite_activation(k: int, coefficient: float = 1.0) -> Activation:
    r"""The pure Hermite activation :math:`\sigma = c\, h_k` (information exponent k)."""
    k = require_int("k", k, 1, 60)
    return Activation(name=f"h{k}", coefficients=(0.0,) * k + (float(coefficient),))


def activation_from_coefficients(coefficients: Sequence[float] | np.ndarray, name: str = "custom") -> Activation:
    r"""An activation with the given finite Hermite expansion :math:`(\hat\sigma_0, \dots, \hat\sigma_K)`."""
    return Activation(name=name, coefficients=tuple(coefficients))


def activation_from_callable(
    fn: Callable,
    name: str = "custom",
    degree: int = 12,
    points: int = 150,
    breakpoints: Sequence[float] | None = None,
) -> Activation:
    """The degree-``degree`` Hermite truncation of a scalar function (see :func:`hermite_coefficients`)."""
    coefficients, moment, error = hermite_coefficients(fn, degree, points, breakpoints)
    tail = max(moment - float(np.sum(coefficients**2)), 0.0)
    return Activation(name, tuple(coefficients), tail=tail, quadrature_error=error, exact=fn)


def _relu(z):
    return np.maximum(z, 0.0)


#: Named activations: name -> (function, kinks). Pure Hermite ``h<k>`` are built on demand.
NAMED_ACTIVATIONS: dict[str, tuple[Callable, tuple[float, ...] | None]] = {
    "relu": (_relu, (0.0,)),
    "abs": (np.abs, (0.0,)),
    "tanh": (np.tanh, None),
}


def get_activation(spec, degree: int = 12) -> Activation:
    """Turn a name (``"h4"``, ``"relu"``, ``"abs"``, ``"tanh"``), a callable, a coefficient
    sequence or an :class:`Activation` into an :class:`Activation`."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key.startswith("h") and key[1:].isdigit():
            return hermite_activation(int(key[1:]))
        if key in NAMED_ACTIVATIONS:
            fn, kinks = NAMED_ACTIVATIONS[key]
            return activation_from_callable(fn, key, degree, points=120 if kinks else 150, breakpoints=kinks)
        raise ValueError(
            f"activation: unknown name {spec!r}; use 'h<k>' (k >= 1) or one of {sorted(NAMED_ACTIVATIONS)}"
        )
    if callable(spec):
        return activation_from_callable(spec, getattr(spec, "__name__", "custom"), degree)
    if isinstance(spec, (Sequence, np.ndarray)):
        return activation_from_coefficients(spec)
    raise ValueError(f"activation: expected a name, callable, coefficient sequence or Activation, got {spec!r}")


def check_even(activation: Activation, where: str) -> None:
    """Warn when the theory's assumption (an even σ with information exponent > 2) fails."""
    if activation.parity != "even":
        warn(
            f"{where}: activation {activation.name!r} is {activation.parity}, but the paper's theory "
            "assumes an even activation; results here are outside the theorem"
        )
    elif activation.information_exponent <= 2:
        warn(
            f"{where}: activation {activation.name!r} has information exponent "
            f"{activation.information_exponent}, but the theory needs k* > 2"
        )
