r"""The teacher: an additive model of single-index features with power-law weights.

.. math::
    f_*(x) = \sum_{p=1}^{P} a_p\, \sigma(\langle v_p^*, x\rangle), \qquad x \sim N(0, I_d),

with orthonormal directions :math:`v_p^*` (or, beyond the paper's assumptions, equicorrelated
ones: :func:`correlated_directions`) and, in the power-law case,
:math:`a_p = p^{-\beta} / Z_P`, :math:`Z_P = (\sum_{q\le P} q^{-2\beta})^{1/2}`, so that
:math:`\sum_p a_p^2 = 1`. The condition number is :math:`\kappa = a_1 / a_P`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._validate import require_finite_array, require_float_dtype, require_int, require_real, warn
from companion.hermite import Activation, check_even, get_activation


def power_law_coefficients(P: int, beta: float, normalize: bool = True) -> np.ndarray:
    r"""Power-law second-layer weights :math:`a_p \propto p^{-\beta}`, :math:`p = 1..P`.

    Args:
        P: number of teacher directions (>= 1).
        beta: decay exponent :math:`\beta \ge 0`. For :math:`\beta \le 1/2` the weights are not
            square-summable as :math:`P\to\infty` (the total loss diverges with P); this is allowed,
            with a warning, for finite P.
        normalize: divide by :math:`Z_P` so that :math:`\sum_p a_p^2 = 1` (the paper's convention).
    Returns:
        float64 array of shape (P,), decreasing.
    """
    P = require_int("P", P, 1)
    beta = require_real("beta", beta, low=0.0, why=" (a negative beta makes the weights grow with p)")
    if beta <= 0.5:
        warn(
            f"beta = {beta} <= 1/2: sum_p p^(-2 beta) diverges as P -> infinity, so the loss is not "
            "square-summable and no scaling law in P exists; fine for this finite P"
        )
    a = np.arange(1, P + 1, dtype=np.float64) ** (-beta)
    return a / np.sqrt(np.sum(a**2)) if normalize else a


def condition_number(coefficients) -> float:
    r""":math:`\kappa = a_{\max} / a_{\min}` (:math:`= a_1 / a_P = P^\beta` for the power law)."""
    a = np.asarray(coefficients, dtype=np.float64)
    return float(a.max() / a.min())


class Teacher(eqx.Module):
    r"""The additive teacher :math:`f_*(x) = \sum_p a_p \sigma(\langle v^*_p, x\rangle)` (a pytree).

    Attributes:
        coefficients: :math:`a`, shape (P,).
        directions: :math:`V^*` with rows :math:`v^*_p`, shape (P, d), unit rows (orthonormal unless
            built with ``directions="correlated"``).
        second_moment: :math:`\mathbb E[f_*(x)^2] = a^\top \kappa_\sigma(V^* V^{*\top}) a`, a scalar
            computed once at construction (the loss needs it every call).
        activation: :math:`\sigma` (static).
    """

    coefficients: Float[Array, " P"]
    directions: Float[Array, "P d"]
    second_moment: Float[Array, ""]
    activation: Activation = eqx.field(static=True)

    @property
    def d(self) -> int:
        return self.directions.shape[1]

    @property
    def P(self) -> int:
        return self.directions.shape[0]

    def __call__(self, x: Float[Array, "n d"]) -> Float[Array, " n"]:
        r""":math:`f_*(x)` for a batch of inputs, shape (n, d) -> (n,)."""
        return self.activation(x @ self.directions.T) @ self.coefficients


def _orthonormal_frame(key, P: int, d: int, dtype) -> jax.Array:
    """P orthonormal rows in R^d, Haar-distributed (QR of a Gaussian matrix, signs fixed)."""
    gaussian = jax.random.normal(key, (d, P), dtype=jnp.float64)
    q, r = jnp.linalg.qr(gaussian)
    q = q * jnp.sign(jnp.diagonal(r))  # makes the frame Haar-distributed, not just orthonormal
    return q.T.astype(dtype)


def correlation_range(P: int) -> tuple[float, float]:
    r"""Open interval of pairwise correlations :math:`\rho` for which P equicorrelated unit vectors exist.

    The Gram matrix :math:`G = (1-\rho)I + \rho\,\mathbf 1\mathbf 1^\top` has eigenvalues
    :math:`1 + (P-1)\rho` (once, along :math:`\mathbf 1`) and :math:`1-\rho` (P - 1 times); it is
    positive definite exactly for :math:`-1/(P-1) < \rho < 1` (for P = 1 only :math:`\rho < 1` matters).
    """
    P = require_int("P", P, 1)
    return (-1.0 / (P - 1) if P > 1 else -math.inf, 1.0)


def _check_correlation(correlation, P: int) -> float:
    low, high = correlation_range(P)
    rho = require_real("correlation", correlation)
    if not low < rho < high:
        raise ValueError(
            f"correlation must lie in the open interval (-1/(P-1), 1) = ({low:.4g}, {high:g}) for P = {P} "
            f"directions (outside it (1-rho) I + rho 11^T is not a Gram matrix), got {rho}"
        )
    return rho


def correlated_directions(
    P: int, d: int, correlation: float, key: jax.Array | None = None, dtype="float32"
) -> Float[Array, "P d"]:
    r"""P unit vectors in :math:`\mathbb R^d` with Gram matrix :math:`(1-\rho)I + \rho\,\mathbf 1\mathbf 1^\top`.

    Every pair has inner product :math:`\rho` (= ``correlation``). The rows are
    :math:`V^* = G^{1/2} Q`, with :math:`G^{1/2} = \sqrt{1-\rho}\,I + c\,\mathbf 1\mathbf 1^\top`,
    :math:`c = (\sqrt{1+(P-1)\rho} - \sqrt{1-\rho})/P` (the symmetric square root, so that
    :math:`v_p^*` leans most towards the p-th frame vector), and Q a P × d orthonormal frame:
    :math:`e_1..e_P` when ``key`` is None, a Haar-random frame otherwise. The common direction
    :math:`u = \sum_p v_p^*/\|\sum_p v_p^*\|` has :math:`\langle u, v_p^*\rangle^2 = (1+(P-1)\rho)/P`.

    Args:
        P: number of directions, :math:`1 \le P \le d`.
        d: dimension.
        correlation: :math:`\rho \in (-1/(P-1), 1)`; 0 gives the orthonormal frame itself.
        key: PRNG key of a random frame, or None for the axes.
        dtype: of the result (computed in float64).
    Raises:
        ValueError: correlation outside the open interval (the message names it and the range).
    """
    d = require_int("d", d, 1)
    P = require_int("P", P, 1, d, why=f" (P directions are built in a P-dimensional frame, so P <= d = {d})")
    require_float_dtype("dtype", dtype)
    rho = _check_correlation(correlation, P)
    root = math.sqrt(1.0 - rho) * np.eye(P) + (math.sqrt(1.0 + (P - 1) * rho) - math.sqrt(1.0 - rho)) / P
    frame = np.eye(P, d) if key is None else np.asarray(_orthonormal_frame(key, P, d, jnp.float64))
    rows = root @ frame
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # unit to round-off
    return jnp.asarray(rows, dtype=jnp.dtype(dtype))


def make_teacher(
    d: int,
    P: int,
    beta: float | None = None,
    coefficients: Sequence[float] | np.ndarray | None = None,
    activation="h4",
    directions: str = "axes",
    key: jax.Array | None = None,
    dtype="float32",
    correlation: float | None = None,
) -> Teacher:
    r"""Build the teacher :math:`f_*`.

    Args:
        d: input dimension (>= 1).
        P: number of orthonormal directions, :math:`1 \le P \le d`.
        beta: power-law exponent; gives :math:`a_p = p^{-\beta}/Z_P`. Exactly one of ``beta``
            and ``coefficients`` must be given.
        coefficients: user-given :math:`a_p \ge 0`, shape (P,), used as they are.
        activation: anything :func:`companion.hermite.get_activation` accepts.
        directions: ``"axes"`` (:math:`v_p^* = e_p`; no loss of generality, since the student's
            initialization is rotation invariant), ``"random"`` (a Haar frame drawn from ``key``)
            or ``"correlated"`` (beyond the paper: unit vectors with pairwise inner product
            ``correlation``, see :func:`correlated_directions`; built on the axes, or on a Haar
            frame when ``key`` is given).
        key: PRNG key, required for ``directions="random"``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        correlation: :math:`\rho \in (-1/(P-1), 1)`, required for (and only for)
            ``directions="correlated"``.
    """
    d = require_int("d", d, 1)
    P = require_int("P", P, 1, d, why=f" (P orthonormal directions need P <= d = {d})")
    dtype = jnp.dtype(require_float_dtype("dtype", dtype))  # an integer dtype would round a_p to zero
    if (beta is None) == (coefficients is None):
        raise ValueError("make_teacher: give exactly one of beta (power law) or coefficients")
    if beta is not None:
        a = power_law_coefficients(P, beta)
    else:
        a = require_finite_array("coefficients", np.asarray(coefficients, dtype=np.float64))
        if a.shape != (P,):
            raise ValueError(f"coefficients must have shape (P,) = ({P},), got {a.shape}")
        if np.any(a < 0) or not np.any(a > 0):
            raise ValueError(
                "coefficients must be >= 0 and not all zero: the 2-homogeneous student's output "
                "weights ||v||^2 are non-negative, so it cannot match a negative a_p"
            )
    act = get_activation(activation)
    check_even(act, "make_teacher")
    if correlation is not None and directions != "correlated":
        raise ValueError(f"correlation is only used with directions='correlated', got directions={directions!r}")
    if directions == "axes":
        frame = jnp.eye(P, d, dtype=dtype)
    elif directions == "random":
        if key is None:
            raise ValueError("make_teacher: directions='random' needs a PRNG key (key=jax.random.key(...))")
        frame = _orthonormal_frame(key, P, d, dtype)
    elif directions == "correlated":
        if correlation is None:
            raise ValueError("make_teacher: directions='correlated' needs correlation=rho in (-1/(P-1), 1)")
        frame = correlated_directions(P, d, correlation, key=key, dtype=dtype)
    else:
        raise ValueError(f"directions must be 'axes', 'random' or 'correlated', got {directions!r}")
    gram = np.asarray(frame, dtype=np.float64) @ np.asarray(frame, dtype=np.float64).T
    with np.errstate(over="ignore", invalid="ignore"):
        moment = a @ np.asarray(act.kernel(gram)) @ a
        representable = np.isfinite(np.asarray(a, dtype)).all() and np.isfinite(np.asarray(moment, dtype))
    if not (np.isfinite(moment) and representable):
        raise ValueError(
            f"coefficients: the teacher's second moment E[f*^2] = {moment:.3g} is not finite in {dtype.name} "
            f"(largest a_p = {a.max():.3g}); scale the coefficients down"
        )
    return Teacher(jnp.asarray(a, dtype), frame, jnp.asarray(moment, dtype), act)


def sample(key: jax.Array, teacher: Teacher, n: int) -> tuple[Float[Array, "n d"], Float[Array, " n"]]:
    r"""Draw n fresh samples :math:`x_i \sim N(0, I_d)`, :math:`y_i = f_*(x_i)` (noiseless labels)."""
    n = require_int("n", n, 1)
    x = jax.random.normal(key, (n, teacher.d), dtype=teacher.directions.dtype)
    return x, teacher(x)
