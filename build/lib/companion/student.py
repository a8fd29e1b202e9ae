r"""The 2-homogeneous student :math:`f(x) = \sum_{k=1}^m \|v_k\|^2 \sigma(\langle \bar v_k, x\rangle)`.

Its state is one matrix :math:`V \in \mathbb R^{m\times d}` with rows :math:`v_k`; the output weight
of neuron k is tied to its squared norm, and :math:`\bar v_k = v_k/\|v_k\|`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._perturb import perturb_start
from companion._validate import require_float_dtype, require_int, require_real
from companion.hermite import Activation
from companion.teacher import Teacher


def check_norm_sq(name: str, norm_sq: float, m: int, dtype) -> float:
    r"""Refuse a squared norm that makes the student or its loss non-finite in ``dtype``.

    The loss is quadratic in the norms (:math:`w^\top\kappa(G)w \le m^2 w_{\max}^2`), so it stays
    finite for :math:`w \le \sqrt{\text{max}}/m`; a norm below the smallest normal number is zero.
    """
    finfo = np.finfo(np.dtype(dtype))
    high = math.sqrt(float(finfo.max)) / m
    low = float(finfo.tiny)
    if not low <= norm_sq <= high:
        raise ValueError(
            f"{name} must lie in [{low:.3g}, {high:.3g}] for m = {m} in {np.dtype(dtype).name} (beyond it the "
            f"student or its loss is not finite), got {norm_sq}"
        )
    return norm_sq


def init_student(key: jax.Array, m: int, d: int, norm_sq: float | None = None, dtype="float32") -> Float[Array, "m d"]:
    r"""Initial student: directions i.i.d. uniform on :math:`\mathbb S^{d-1}`, a common norm.

    Args:
        key: PRNG key.
        m: width (number of neurons), >= 1.
        d: input dimension, >= 1.
        norm_sq: :math:`\|v_k(0)\|^2` for every k, > 0; default :math:`1/m`, which keeps the
            initial output :math:`O(1/\sqrt m)` in :math:`L^2` because random directions are nearly
            orthogonal.
        dtype: ``"float32"`` (default) or ``"float64"``.
    Returns:
        V of shape (m, d).
    """
    m = require_int("m", m, 1)
    d = require_int("d", d, 1)
    dtype = require_float_dtype("dtype", dtype)
    norm_sq = 1.0 / m if norm_sq is None else require_real("norm_sq", norm_sq, low=0.0, low_open=True)
    check_norm_sq("norm_sq", norm_sq, m, dtype)
    g = jax.random.normal(key, (m, d), dtype=jnp.dtype(dtype))
    return perturb_start(g / jnp.linalg.norm(g, axis=1, keepdims=True) * jnp.sqrt(jnp.asarray(norm_sq, g.dtype)))


def _safe_norm(V):
    # The clamp keeps v/||v|| and its gradient finite at v = 0; a zero row contributes nothing.
    return jnp.sqrt(jnp.maximum(jnp.sum(V * V, axis=-1), jnp.finfo(V.dtype).tiny))


def norms_sq(V: Float[Array, "m d"]) -> Float[Array, " m"]:
    r""":math:`\|v_k\|^2`, the output weights, shape (m,)."""
    return jnp.sum(V * V, axis=-1)


def unit_directions(V: Float[Array, "m d"]) -> Float[Array, "m d"]:
    r""":math:`\bar v_k = v_k / \|v_k\|` (a zero row stays zero), shape (m, d)."""
    return V / _safe_norm(V)[..., None]


def overlaps(V: Float[Array, "m d"], teacher: Teacher) -> Float[Array, "m P"]:
    r"""The student × teacher overlap matrix :math:`\bar v_{k,p} = \langle \bar v_k, v_p^*\rangle`."""
    return unit_directions(V) @ teacher.directions.T


def student_output(V: Float[Array, "m d"], x: Float[Array, "n d"], activation: Activation) -> Float[Array, " n"]:
    r""":math:`f(x) = \sum_k \|v_k\|^2 \sigma(\langle\bar v_k, x\rangle)`, shape (n, d) -> (n,)."""
    return activation(x @ unit_directions(V).T) @ norms_sq(V)


def student_holding(teacher: Teacher, learned, m: int | None = None) -> Float[Array, "m d"]:
    r"""A student that has learned exactly the directions in ``learned``.

    Row j holds :math:`v_j = \sqrt{a_p}\, v_p^*` for the j-th p of ``learned`` (so
    :math:`\|v_j\|^2 = a_p` and :math:`\bar v_j = v_p^*`); the remaining rows are zero.

    Args:
        teacher: the teacher.
        learned: indices p (0-based) of the learned directions, distinct, in [0, P).
        m: width (default ``len(learned)``); must be >= ``len(learned)``.
    """
    learned = np.asarray(learned, dtype=np.int64).reshape(-1)
    if learned.size and (learned.min() < 0 or learned.max() >= teacher.P):
        raise ValueError(f"learned: indices must lie in [0, P) = [0, {teacher.P}), got {learned.tolist()}")
    if len(set(learned.tolist())) != learned.size:
        raise ValueError(f"learned: indices must be distinct, got {learned.tolist()}")
    m = (
        learned.size
        if m is None
        else require_int("m", m, max(learned.size, 1), why=f" (it must hold {learned.size} directions)")
    )
    V = jnp.zeros((m, teacher.d), teacher.directions.dtype)
    rows = jnp.sqrt(teacher.coefficients[learned])[:, None] * teacher.directions[learned]
    return V.at[: learned.size].set(rows)
