r"""The population loss in closed form (a tensor decomposition), and a Monte Carlo check.

With :math:`w_k = \|v_k\|^2`, :math:`\kappa_\sigma(\rho) = \sum_j \hat\sigma_j^2 \rho^j` (Mehler),
:math:`C = \bar V V^{*\top}` (m × P) and :math:`G = \bar V \bar V^\top` (m × m),

.. math::
    L(V) = \tfrac12\mathbb E(f_* - f)^2
         = \tfrac12\Big[\mathbb E f_*^2 - 2\, w^\top \kappa_\sigma(C)\, a + w^\top \kappa_\sigma(G)\, w\Big],

where :math:`\kappa_\sigma` acts entrywise. This equals
:math:`\tfrac12\sum_j\hat\sigma_j^2\|\sum_p a_p v_p^{*\otimes j} - \sum_k w_k \bar v_k^{\otimes j}\|_F^2`.
Cost: two matrix products, :math:`O(m d (m + P))`, plus entrywise polynomials.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._validate import require_int
from companion.student import norms_sq, student_output, unit_directions
from companion.teacher import Teacher


def population_loss(V: Float[Array, "m d"], teacher: Teacher) -> Float[Array, ""]:
    r"""Closed-form :math:`L(V) = \tfrac12\mathbb E_x(f_*(x) - f(x))^2` (exact for a finite expansion)."""
    w = norms_sq(V)
    unit = unit_directions(V)
    kernel = teacher.activation.kernel
    cross = kernel(unit @ teacher.directions.T) @ teacher.coefficients  # sum_p a_p kappa(C_kp), (m,)
    self_term = w @ kernel(jnp.clip(unit @ unit.T, -1.0, 1.0)) @ w
    return 0.5 * (teacher.second_moment - 2.0 * w @ cross + self_term)


#: :math:`\nabla_V L(V)` by automatic differentiation of the closed form, shape (m, d).
population_gradient = jax.grad(population_loss)


def residual_loss(teacher: Teacher, learned) -> float:
    r"""The loss left when the directions in ``learned`` are held exactly ("automatic cancellation").

    For orthonormal teacher directions and a student holding :math:`\bar v = v_p^*`,
    :math:`\|v\|^2 = a_p` for :math:`p\in S` (and nothing else), the residual is the teacher
    restricted to the complement of S, whose loss is

    .. math::
        \tfrac12\Big[\hat\sigma_0^2\big(\textstyle\sum_{p\notin S} a_p\big)^2
        + \big(\textstyle\sum_{j\ge1}\hat\sigma_j^2\big)\sum_{p\notin S} a_p^2\Big]
        \;=\; \tfrac12\,\mathbb E[\sigma^2] \sum_{p\notin S} a_p^2 \quad\text{if } \hat\sigma_0 = 0 .

    Computed in float64 from the formula, independently of :func:`population_loss`.

    Args:
        teacher: the teacher (P directions).
        learned: indices p of the held directions, integers in [0, P) (a negative index is refused,
            not wrapped around); repeats hold a direction once.
    Raises:
        ValueError: an index outside [0, P) or not an integer (the message names ``learned``).
    """
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    indices = np.asarray(learned).reshape(-1)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"learned: indices must be integers in [0, P) = [0, {a.size}), got {indices.tolist()}")
    if indices.size and (indices.min() < 0 or indices.max() >= a.size):  # no wrap-around of negative indices
        raise ValueError(f"learned: indices must lie in [0, P) = [0, {a.size}), got {indices.tolist()}")
    rest = np.ones(a.size, dtype=bool)
    rest[indices.astype(np.int64)] = False
    s2 = np.asarray(teacher.activation.kernel_coefficients)
    return float(0.5 * (s2[0] * a[rest].sum() ** 2 + s2[1:].sum() * np.sum(a[rest] ** 2)))


@partial(jax.jit, static_argnames="n")
def _batch_moments(key, V, teacher: Teacher, n: int):
    x = jax.random.normal(key, (n, teacher.d), V.dtype)
    r = teacher(x) - student_output(V, x, teacher.activation)
    half_sq = 0.5 * r.astype(jnp.float64) ** 2
    return jnp.sum(half_sq), jnp.sum(half_sq**2)



def monte_carlo_loss(
    key: jax.Array, V: Float[Array, "m d"], teacher: Teacher, n: int = 100_000, batch: int = 10_000
) -> tuple[float, float]:
    r"""Monte Carlo estimate of :math:`L(V)` from n fresh samples, with its standard error.

    Returns ``(mean, stderr)`` where ``stderr`` = sample std of :math:`\tfrac12(f_*-f)^2` over
    :math:`\sqrt n`. The integrand has degree :math:`2K` in x (8 for :math:`h_4`), so it is
    heavy-tailed: use the closed form to measure, and this only as a check.
    """
    n = require_int("n", n, 2)
    batch = require_int("batch", batch, 1)
    total, total_sq, done = 0.0, 0.0, 0
    for i, size in enumerate([batch] * (n // batch) + ([n % batch] if n % batch else [])):
        s, s2 = _batch_moments(jax.random.fold_in(key, i), V, teacher, size)
        total, total_sq, done = total + float(s), total_sq + float(s2), done + size
    mean = total / done
    variance = max(total_sq / done - mean**2, 0.0) * done / (done - 1)
    return mean, math.sqrt(variance / done)
