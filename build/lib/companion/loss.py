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
from collections.abc import Callable
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._validate import require_int
from companion.hermite import Activation
from companion.student import norms_sq, student_output, unit_directions
from companion.teacher import Teacher


def population_loss_direct(V: Float[Array, "m d"], teacher: Teacher) -> Float[Array, ""]:
    r"""The closed form as written, :math:`\tfrac12[\mathbb E f_*^2 - 2w^\top\kappa(C)a + w^\top\kappa(G)w]`.

    Its three O(1) terms cancel to the loss, so in float32 it keeps only about
    :math:`10^{-7}/L` relative accuracy (8 % at :math:`L\approx 6\cdot10^{-6}`); use
    :func:`population_loss`, which computes the same quantity in residual form.
    """
    w = norms_sq(V)
    unit = unit_directions(V)
    kernel = teacher.activation.kernel
    cross = kernel(unit @ teacher.directions.T) @ teacher.coefficients  # sum_p a_p kappa(C_kp), (m,)
    self_term = w @ kernel(jnp.clip(unit @ unit.T, -1.0, 1.0)) @ w
    return 0.5 * (teacher.second_moment - 2.0 * w @ cross + self_term)


def _taylor(s2, rho, n: int):
    r""":math:`\kappa^{(n)}(\rho)/n! = \sum_j \hat\sigma_j^2\binom jn\rho^{j-n}` (elementwise)."""
    out = jnp.zeros_like(rho)
    for j in range(len(s2) - 1, n - 1, -1):  # Horner in rho
        out = out * rho + s2[j] * math.comb(j, n)
    return out


def _increment(s2, rho, eps):
    r""":math:`\kappa(\rho+\varepsilon) - \kappa(\rho) = \sum_{n\ge1}\frac{\kappa^{(n)}(\rho)}{n!}\varepsilon^n`, accurate for small ε."""
    out = jnp.zeros_like(rho)
    for n in range(len(s2) - 1, 0, -1):
        out = (out + _taylor(s2, rho, n)) * eps
    return out


def _mixed(s2, rho, alpha, beta, gamma):
    r""":math:`\kappa(\rho+\alpha+\beta+\gamma) - \kappa(\rho+\alpha) - \kappa(\rho+\beta) + \kappa(\rho)`, accurate
    for small increments: :math:`\sum_{n\ge2}\frac{\kappa^{(n)}(\rho)}{n!}\sum_{i=1}^{n-1}\binom ni\alpha^i\beta^{n-i}`
    plus :func:`_increment` from :math:`\rho+\alpha+\beta` by γ."""
    out = _increment(s2, rho + alpha + beta, gamma)
    for n in range(2, len(s2)):
        cross = sum(math.comb(n, i) * alpha**i * beta ** (n - i) for i in range(1, n))
        out = out + _taylor(s2, rho, n) * cross
    return out


def population_loss(V: Float[Array, "m d"], teacher: Teacher) -> Float[Array, ""]:
    r"""Closed-form :math:`L(V) = \tfrac12\mathbb E_x(f_*(x) - f(x))^2` (exact for a finite expansion),
    in residual form so that float32 keeps about three digits down to :math:`L\approx10^{-6}`.

    Each student is referred to its *anchor* :math:`u_k = \pm v^*_{q_k}`, the signed teacher
    direction nearest to :math:`\bar v_k`, with :math:`\Delta_k = \bar v_k - u_k`. With
    :math:`f = \tilde f + (f - \tilde f)`, :math:`\tilde f = \sum_k w_k\sigma(\langle u_k, x\rangle)`,

    .. math::
        2L = r^\top\kappa(AA^\top)\,r - 2\,r^\top X w + w^\top Y w,

    over the 2P anchors :math:`A = [V^*; -V^*]` with residual weights :math:`r = (a, 0) - \sum_k w_k
    e_{\text{anchor}(k)}`; :math:`X_{ik} = \kappa(\langle A_i,\bar v_k\rangle) - \kappa(\langle A_i, u_k\rangle)`
    and :math:`Y_{kl}` (the mixed second difference of :math:`\kappa(\langle x, y\rangle)` from
    :math:`(u_k, u_l)` to :math:`(\bar v_k, \bar v_l)`) are evaluated from the small increments
    :math:`\langle A_i,\Delta_k\rangle`, :math:`\langle\Delta_k,\Delta_l\rangle` by Taylor sums, with
    :math:`\langle u, \bar v - u\rangle = -\tfrac12\|\bar v - u\|^2` for unit vectors. Nothing O(1)
    cancels: every term is of the order of the loss. Equals :func:`population_loss_direct` in exact
    arithmetic (tested in float64); cost :math:`O(md(m + P))` plus elementwise Taylor sums.
    Compiled once per shape and dtype (it is many small operations: called op by op it would be
    about 30 times slower).
    """
    return _population_loss_compiled(V, teacher)


def _population_loss_residual(V, teacher: Teacher):
    """The body of :func:`population_loss`, compiled by :data:`_population_loss_compiled`."""
    s2 = teacher.activation.kernel_coefficients
    w, unit = norms_sq(V), unit_directions(V)
    star, a = teacher.directions, teacher.coefficients
    P = star.shape[0]
    C = unit @ star.T  # (m, P)
    q = jnp.argmax(jnp.abs(C), axis=1)
    sign = jnp.where(jnp.take_along_axis(C, q[:, None], axis=1)[:, 0] < 0, -1.0, 1.0).astype(V.dtype)
    anchor = q + jnp.where(sign < 0, P, 0)  # index into A = [V*; -V*]
    u = sign[:, None] * star[q]  # (m, d): the anchors A[anchor] of A = [V*; -V*]
    delta = unit - u
    half_sq = 0.5 * jnp.sum(delta * delta, axis=1)  # (m,): 1 - <u_k, v̄_k> for unit vectors
    R = star @ star.T
    gram_A = jnp.block([[R, -R], [-R, R]])  # (2P, 2P)
    star_delta = star @ delta.T  # (P, m)
    r = jnp.concatenate([a, jnp.zeros_like(a)]) - jnp.zeros(2 * P, V.dtype).at[anchor].add(w)
    # <A_i, Δ_k>: exact identities where A_i = ±u_k
    same = jnp.arange(2 * P)[:, None] == anchor[None, :]
    opposite = jnp.arange(2 * P)[:, None] == ((anchor + P) % (2 * P))[None, :]
    eps = jnp.where(
        same, -half_sq[None, :], jnp.where(opposite, half_sq[None, :], jnp.concatenate([star_delta, -star_delta]))
    )  # (2P, m)
    X = _increment(s2, gram_A[:, anchor], eps)
    # <u_k, Δ_l> = alpha (k, l), <Δ_k, u_l> = beta (k, l) = alpha (l, k)
    same_kl = anchor[:, None] == anchor[None, :]
    opposite_kl = anchor[:, None] == ((anchor + P) % (2 * P))[None, :]
    alpha = jnp.where(same_kl, -half_sq[None, :], jnp.where(opposite_kl, half_sq[None, :], u @ delta.T))
    Y = _mixed(s2, gram_A[anchor][:, anchor], alpha, alpha.T, delta @ delta.T)
    return 0.5 * (r @ _taylor(s2, gram_A, 0) @ r - 2.0 * r @ X @ w + w @ Y @ w)


_population_loss_compiled = eqx.filter_jit(_population_loss_residual)


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


# ----------------------------------------------------------------------------------------------
# The minibatch loss and its analytic gradient (used by every engine)
# ----------------------------------------------------------------------------------------------
#
# With :math:`r_k = \|v_k\|`, :math:`z_{bk} = \langle\bar v_k, x_b\rangle` and the residual
# :math:`e_b = f(x_b) - y_b`, the per-sample gradient averaged over a batch of B samples is
# :math:`g_k = (2 s_k - c_k) v_k + r_k (A^\top X)_k` with :math:`A_{bk} = e_b\sigma'(z_{bk})/B`,
# :math:`s_k = \sum_b e_b\sigma(z_{bk})/B`, :math:`c_k = \sum_b A_{bk} z_{bk}`: two matrix products.


def activation_series(activation: Activation, derivative: bool = True) -> Callable:
    r"""``z -> (σ(z), σ'(z))`` (or ``σ(z)`` alone) by the Hermite three-term recurrence.

    Unlike ``Activation.__call__`` (a stack of :math:`h_0..h_K` contracted with the
    coefficients), this is a chain of elementwise operations that XLA fuses into neighbouring
    kernels; zero coefficients cost nothing beyond the recurrence itself.
    :math:`h_{k+1} = (z h_k - \sqrt k\, h_{k-1})/\sqrt{k+1}` and :math:`h_{k+1}' = \sqrt{k+1}\,h_k`.
    """
    c = [float(v) for v in activation.coefficients]
    K = len(c) - 1

    def evaluate(z):
        h_prev, h = jnp.ones_like(z), z
        s = c[0] + c[1] * z if K >= 1 else jnp.full_like(z, c[0])
        ds = jnp.full_like(z, c[1]) if K >= 1 else jnp.zeros_like(z)
        for k in range(1, K):
            h_prev, h = h, (z * h - math.sqrt(k) * h_prev) * (1.0 / math.sqrt(k + 1))
            if c[k + 1] != 0.0:
                s = s + c[k + 1] * h
                if derivative:
                    ds = ds + (c[k + 1] * math.sqrt(k + 1)) * h_prev
        return (s, ds) if derivative else s

    return evaluate


def teacher_labels(teacher: Teacher, x, axes: bool):
    r""":math:`f_*(x)` for a batch (..., d); ``axes`` uses :math:`v_p^* = e_p` (no matmul)."""
    proj = x[..., : teacher.P] if axes else x @ teacher.directions.T
    return activation_series(teacher.activation, derivative=False)(proj) @ teacher.coefficients


def minibatch_loss(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], activation: Activation):
    r"""Mean per-sample loss :math:`\frac1B\sum_b \tfrac12(f(x_b) - y_b)^2` (for ``jax.grad``)."""
    r2 = jnp.sum(V * V, axis=-1)
    unit = V / jnp.sqrt(jnp.maximum(r2, jnp.finfo(V.dtype).tiny))[:, None]
    f = activation_series(activation, derivative=False)(x @ unit.T) @ r2
    return 0.5 * jnp.mean((f - y) ** 2)


def minibatch_gradient_terms(V, x, y, activation: Activation):
    r"""The pieces of the analytic minibatch gradient: ``(coef (m,), r (m,), G (m, d), r2 (m,))``.

    The gradient is ``coef[:, None] * V + r[:, None] * G`` with :math:`\text{coef}_k = 2 s_k - c_k`,
    :math:`r_k = \|v_k\|`, :math:`G = A^\top X` and :math:`r2_k = \|v_k\|^2` (see
    :func:`minibatch_gradient`); the SGD engine uses them in fused form.
    """
    B = x.shape[0]
    r2 = jnp.sum(V * V, axis=-1)
    r = jnp.sqrt(jnp.maximum(r2, jnp.finfo(V.dtype).tiny))
    z = (x @ V.T) / r  # (B, m): <v̄_k, x_b>
    s, ds = activation_series(activation)(z)
    e = s @ r2 - y  # residuals f(x_b) - y_b
    A = e[:, None] * ds * (1.0 / B)
    c = jnp.sum(A * z, axis=0)
    s_mean = (e @ s) * (1.0 / B)
    G = A.T @ x  # (m, d)
    return 2.0 * s_mean - c, r, G, r2


def minibatch_gradient(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], activation: Activation):
    r"""Analytic mean per-sample gradient :math:`\frac1B\sum_b\nabla_V\tfrac12(f(x_b)-y_b)^2`, shape (m, d).

    In matmul form: :math:`g_k = (2 s_k - c_k) v_k + r_k (A^\top X)_k` (module docstring). Equals
    ``jax.grad(minibatch_loss)`` (tested to round-off in float64); a zero row gets a zero gradient.
    """
    coef, r, G, _ = minibatch_gradient_terms(V, x, y, activation)
    return coef[:, None] * V + r[:, None] * G


def sgd_update(V, x, y, lr, activation: Activation):
    r"""One SGD step in fused form, ``V - lr * minibatch_gradient(...)``, and :math:`\max_k\|v_k\|^2` before it."""
    coef, r, G, r2 = minibatch_gradient_terms(V, x, y, activation)
    return (1.0 - lr * coef)[:, None] * V - (lr * r)[:, None] * G, jnp.max(r2)


def sgd_step(V: Float[Array, "m d"], x: Float[Array, "B d"], y: Float[Array, " B"], lr, activation: Activation):
    r"""One plain SGD step :math:`V \leftarrow V - \eta\,g` on the minibatch (x, y)."""
    return sgd_update(V, x, y, lr, activation)[0]
