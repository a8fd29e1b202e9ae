r"""Layer-wise training (directions first, then output weights), to contrast with single-phase training.

**Not the paper's algorithm.** The paper trains both layers at once on the squared loss. The
earlier approach it contrasts with (Oko, Song, Suzuki, Wu 2024) trains in two phases; this module
implements a simple version of that scheme for the same teacher and student, so the two can be
compared from the same initialization. The details (population correlation flow, spherical
steps, least-squares readout) are this companion's choices.

**Phase one: directions on the correlation loss.** Every neuron :math:`\bar v_k \in \mathbb S^{d-1}`
ascends its own correlation with the labels,

.. math::
    \mathcal C(\bar v_k) = \mathbb E\big[f_*(x)\,\sigma(\langle\bar v_k, x\rangle)\big]
    = \sum_q a_q\,\kappa(\langle\bar v_k, v_q^*\rangle), \qquad
    \kappa(\rho) = \sum_j \hat\sigma_j^2\rho^j \ (\text{Mehler}),

(:math:`= \sum_q a_q\langle\bar v_k, v_q^*\rangle^4` for :math:`\sigma = h_4`) by Riemannian gradient
flow on the sphere, :math:`\dot{\bar v}_k = (I - \bar v_k\bar v_k^\top)\sum_q a_q\kappa'(c_{kq})\,v_q^*`
with :math:`c_{kq} = \langle\bar v_k, v_q^*\rangle`. Nothing couples the neurons: there is no
student term and hence no deflation. This is exactly the direction equation of the squared-loss
flow (:mod:`companion.dynamics`) with the student's own output removed, so both schemes run on the
same clock. In teacher coordinates it is :func:`companion.dynamics.reduced_direction_field` for
every neuron, :math:`\dot c_{kp} = a_p\kappa'(c_{kp}) - c_{kp}\sum_q a_q c_{kq}\kappa'(c_{kq})`;
the part of :math:`\bar v_k` orthogonal to the teacher span keeps its direction and only shrinks,
:math:`\dot\rho_k = -\rho_k\sum_q a_q c_{kq}\kappa'(c_{kq})`. A discrete step is a projected
(Riemannian) gradient step followed by renormalization,

.. math::
    \bar v_k \leftarrow \frac{\bar v_k + h\,(I - \bar v_k\bar v_k^\top)\,D_k}
    {\|\bar v_k + h\,(I - \bar v_k\bar v_k^\top)\,D_k\|},

with :math:`D_k = \sum_q a_q\kappa'(c_{kq})v_q^*` (population, :func:`phase_one_flow`, computed on
the :math:`(m, P)` overlaps and the :math:`(m,)` orthogonal mass, which is exact for any orthonormal
teacher and costs :math:`O(mP)` per step, independent of d), or its unbiased estimate
:math:`\frac1B\sum_b y_b\sigma'(\langle\bar v_k, x_b\rangle)x_b` on fresh samples
(:func:`phase_one_sgd`, cost :math:`O(Bmd)`).

Each neuron converges to a local maximum of its own :math:`\mathcal C`. To leading order (the
decoupled ODE of :mod:`companion.dynamics` for each coordinate) the coordinate that blows up first
wins, so neuron k ends on

.. math::
    q_k = \arg\max_q\, a_q\,|c_{kq}(0)|^{2I-2}, \qquad 2I = k_*,

the row maximum of the strength matrix (:func:`companion.selection.strength_matrix`,
:func:`predicted_winners`). A weak direction q is found only by a neuron whose overlap beats those
with every stronger direction by the factor :math:`(a_{q'}/a_q)^{1/(2I-2)}`.

**Phase two: output weights by least squares.** With the directions fixed, the readout
:math:`f(x) = \sum_k c_k\,\sigma(\langle\bar v_k, x\rangle)` (signed weights :math:`c_k`) is fitted by
ridge regression, :math:`\min_c \tfrac12\,\hat{\mathbb E}_n(y - f)^2 + \tfrac\lambda2\|c\|^2`, on n
fresh samples (:func:`phase_two_samples`) or on the population (:func:`phase_two_population`):

.. math::
    (\hat G_n + \lambda I)\,c = \hat b_n \quad\xrightarrow{n\to\infty}\quad (G + \lambda I)\,c = b,
    \qquad G = \kappa(\bar V\bar V^\top),\ \ b = \kappa(\bar V V^{*\top})\,a,

with :math:`\hat G_n = \Phi^\top\Phi/n`, :math:`\hat b_n = \Phi^\top y/n`,
:math:`\Phi_{ik} = \sigma(\langle\bar v_k, x_i\rangle)`. At :math:`\lambda = 0` the minimum-norm
solution is returned (duplicate neurons share a direction's weight). Its population loss is
:math:`\tfrac12\big(\mathbb E f_*^2 - 2c^\top b + c^\top G c\big)` (:func:`readout_loss`).

**Experiments.** :class:`LayerwiseSweep` measures, for both schemes and from the same initial
neurons, the smallest width whose students recover the top :math:`P_*` directions, over several
teachers (condition numbers :math:`\kappa_* = a_1/a_{P_*}`) and seeds; presets ``test``, ``book``,
``paper``; every elementary run is cached (:mod:`companion.cache`). :class:`SampleComparison`
(:func:`compare_on_samples`) compares the loss of both schemes against the number of samples,
with online SGD for single-phase training and :func:`train_layerwise` at every budget.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._core import cast_teacher, check_state, check_times, draw, interval_steps, log_steps, require_float64
from companion._validate import require_int, require_real, warn
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import (
    decoupled_blowup_time,
    euler_flow,
    reduced_direction_field,
)
from companion.hermite import Activation, get_activation
from companion.scaling import PowerLawFit, fit_power_law
from companion.selection import strength_matrix
from companion.loss import activation_series
from companion.student import init_student, unit_directions
from companion.teacher import Teacher, make_teacher, power_law_coefficients

#: Bump when a run's meaning changes, so that old cache entries are not reused.
VERSION = "1"

#: The phase-two methods :func:`phase_two` accepts.
PHASE_TWO_METHODS = ("population", "samples")


# ----------------------------------------------------------------------------------------------
# Phase one: the correlation loss
# ----------------------------------------------------------------------------------------------


def correlation_objective(V: Float[Array, "m d"], teacher: Teacher) -> Float[Array, " m"]:
    r"""Population correlation of every neuron with the labels, shape (m,).

    :math:`\mathcal C_k = \mathbb E[f_*(x)\sigma(\langle\bar v_k, x\rangle)] = \sum_q a_q\,
    \kappa(\langle\bar v_k, v_q^*\rangle)` (Mehler); only the direction of :math:`v_k` enters.
    Phase one ascends it; it is minus the correlation loss.
    """
    C = unit_directions(V) @ teacher.directions.T
    return teacher.activation.kernel(C) @ teacher.coefficients


def correlation_field(C: Float[Array, "m P"], coefficients: Float[Array, " P"], activation: Activation) -> Float[Array, "m P"]:
    r"""Phase-one flow of the overlaps :math:`\dot c_{kp}`, shape (m, P).

    :math:`\dot c_{kp} = a_p\kappa'(c_{kp}) - c_{kp}\sum_q a_q c_{kq}\kappa'(c_{kq})`: the lone-neuron
    direction field :func:`companion.dynamics.reduced_direction_field` applied to every neuron
    (the neurons do not interact). Jit-compatible.
    """
    return jax.vmap(reduced_direction_field, in_axes=(0, None, None))(C, coefficients, activation)


def phase_one_stability_step(teacher: Teacher) -> float:
    r"""Largest stable step of the discrete phase one at a learned direction, :math:`2/(\kappa'(1)a_{\max})`.

    Near :math:`\bar v_k = v_q^*` an off-direction overlap obeys
    :math:`\dot c_r \approx -a_q\kappa'(1)\,c_r`, so a step of size h multiplies it by
    :math:`1 - h\,a_q\kappa'(1)`; it stays bounded only for :math:`h < 2/(\kappa'(1)a_q)` and does not
    oscillate for half that (:math:`\kappa'(1) = 4` for :math:`h_4`).
    """
    a_max = float(np.max(np.asarray(teacher.coefficients, dtype=np.float64)))
    return 2.0 / (float(teacher.activation.kernel_derivative(1.0)) * a_max)


class PhaseOne(NamedTuple):
    r"""Phase-one record (NumPy arrays).

    Attributes:
        times: record times :math:`t_j` (gradient-flow units; :math:`\eta\cdot` steps for SGD), shape (R,).
        overlaps: :math:`c_{kp}(t_j) = \langle\bar v_k(t_j), v_p^*\rangle`, shape (R, m, P).
        initial_overlaps: :math:`c_{kp}(0)`, shape (m, P).
        directions: the final unit directions :math:`\bar v_k`, shape (m, d) (phase two's input).
        steps: number of steps taken.
        samples: fresh samples used (0 for the population flow).
        dt: the step bound (population) or the learning rate (SGD).
        method: ``"euler"`` or ``"sgd"``.
        record_directions: the unit directions at every record, shape (R, m, d), when asked for
            (:func:`phase_one_sgd` with ``keep_directions=True``); otherwise None.
    """

    times: np.ndarray
    overlaps: np.ndarray
    initial_overlaps: np.ndarray
    directions: np.ndarray
    steps: int
    samples: int
    dt: float
    method: str
    record_directions: np.ndarray | None = None


@partial(jax.jit, static_argnames="activation")
def _phase_one_scan(C0, rho0, a, counts, steps, activation: Activation):
    """Projected Euler steps on (C, rho), the teacher-span overlaps and the orthogonal mass."""

    def step(_, state, h):
        C, rho = state
        dC = correlation_field(C, a, activation)
        radial = jnp.sum(a * C * activation.kernel_derivative(C), axis=1)  # <v̄_k, D_k>
        C, rho = C + h * dC, rho * (1.0 - h * radial)
        norm = jnp.sqrt(jnp.sum(C * C, axis=1) + rho * rho)
        return C / norm[:, None], rho / norm

    def advance(state, interval):
        n, h = interval
        state = jax.lax.fori_loop(0, n, partial(step, h=h), state)
        return state, state[0]

    (C, rho), records = jax.lax.scan(advance, (C0, rho0), (counts, steps))
    return C, rho, records


def _split_directions(V0, teacher: Teacher):
    """(C0, rho0, U): overlaps (m, P), orthogonal mass (m,), orthogonal unit parts (m, d)."""
    unit = unit_directions(V0)
    star = teacher.directions.astype(unit.dtype)
    C0 = unit @ star.T
    perp = unit - C0 @ star
    rho0 = jnp.sqrt(jnp.sum(perp * perp, axis=1))
    U = perp / jnp.maximum(rho0, jnp.finfo(unit.dtype).tiny)[:, None]
    return C0, rho0, U


def phase_one_flow(V0: Float[Array, "m d"], teacher: Teacher, times, dt: float) -> PhaseOne:
    r"""Phase one on the population correlation loss: projected Euler steps of size ``<= dt``.

    Each step is the spherical step of the module docstring with the exact population drive
    :math:`D_k`, computed on the overlaps: it equals the same step taken in :math:`\mathbb R^d`
    followed by renormalization (the orthogonal part of :math:`\bar v_k` keeps its direction), so
    the final directions are rebuilt exactly. Record times are hit exactly, as in
    :func:`companion.dynamics.euler_flow` (one jitted dispatch; one compilation per shape).

    Args:
        V0: initial student, shape (m, d) (its norms are ignored: phase one moves directions).
        teacher: the teacher (orthonormal directions).
        times: record times, shape (R,), strictly increasing, last > 0.
        dt: largest step, > 0 (a warning beyond :func:`phase_one_stability_step`).
    Returns:
        a :class:`PhaseOne` with ``method="euler"``, ``samples=0``.
    """
    times = check_times(times)
    dt = require_real("dt", dt, low=0.0, low_open=True)
    V0 = check_state(V0, teacher)
    teacher_c = cast_teacher(teacher, V0.dtype)
    limit = phase_one_stability_step(teacher)
    if dt >= limit:
        warn(f"phase_one_flow: dt = {dt:g} >= 2/(kappa'(1) a_max) = {limit:.3g}: a converged neuron is unstable")
    C0, rho0, U = _split_directions(V0, teacher_c)
    counts, steps = interval_steps(times, dt)
    C, rho, records = _phase_one_scan(
        C0, rho0, teacher_c.coefficients, jnp.asarray(counts), jnp.asarray(steps, V0.dtype), teacher_c.activation
    )
    directions = C @ teacher_c.directions + rho[:, None] * U
    return PhaseOne(times, np.asarray(records), np.asarray(C0), np.asarray(directions), int(counts.sum()), 0, dt, "euler")


@partial(jax.jit, static_argnames=("batch", "keep"))
def _phase_one_sgd_scan(unit0, teacher: Teacher, key, counts, starts, lr, batch: int, keep: bool = False):
    dsigma = activation_series(teacher.activation)
    star = teacher.directions
    d = unit0.shape[1]

    def step(i, unit, t0):
        x, y = draw(key, t0 + i, batch, d, unit.dtype, 0.0, teacher, False, noisy=False)
        _, ds = dsigma(x @ unit.T)  # (B, m)
        g = (y[:, None] * ds).T @ x / batch  # (m, d): mean of y sigma'(z) x
        g = g - jnp.sum(g * unit, axis=1, keepdims=True) * unit
        unit = unit + lr * g
        return unit / jnp.linalg.norm(unit, axis=1, keepdims=True)

    def advance(unit, interval):
        n, t0 = interval
        unit = jax.lax.fori_loop(0, n, partial(step, t0=t0), unit)
        return unit, (unit @ star.T, unit) if keep else unit @ star.T

    unit, records = jax.lax.scan(advance, unit0, (counts, starts))
    return unit, records


def phase_one_sgd(
    V0: Float[Array, "m d"], teacher: Teacher, key: jax.Array, lr: float, steps: int, batch: int = 1,
    records: int | tuple[int, ...] = 32, keep_directions: bool = False,
) -> PhaseOne:
    r"""Phase one by online spherical SGD on fresh samples.

    Step t draws B fresh samples :math:`x_b\sim N(0, I_d)`, :math:`y_b = f_*(x_b)` (from
    ``step_key(key, t)``, :func:`companion._core.draw`) and moves every neuron along the tangential part of
    :math:`\frac1B\sum_b y_b\,\sigma'(\langle\bar v_k, x_b\rangle)\,x_b`, an unbiased estimate of the
    population drive :math:`(I - \bar v_k\bar v_k^\top)D_k`, then renormalizes. Time in
    gradient-flow units is :math:`t = \eta\cdot\text{steps}`; the sample count is ``batch * steps``.

    Args:
        V0: initial student, shape (m, d).
        teacher: the teacher.
        key: PRNG key of the data stream.
        lr: learning rate :math:`\eta > 0`.
        steps: number of steps (>= 1).
        batch: samples per step (>= 1).
        records: number of log-spaced record steps (>= 1), or an explicit strictly increasing
            tuple of steps in [1, steps]; the last step is always recorded.
        keep_directions: also return the unit directions at every record (``record_directions``).

    The sample of step t depends only on ``key`` and t, so a record at step s is exactly the end of
    a run of s steps: one run gives phase one at every budget it records.
    """
    lr = require_real("lr", lr, low=0.0, low_open=True)
    steps = require_int("steps", steps, 1)
    batch = require_int("batch", batch, 1)
    V0 = check_state(V0, teacher)
    teacher_c = cast_teacher(teacher, V0.dtype)
    if isinstance(records, (tuple, list, np.ndarray)):
        marks = np.asarray([require_int("records entries", r, 1, steps) for r in records], dtype=np.int64)
        if marks.size == 0 or np.any(np.diff(marks) <= 0):
            raise ValueError(f"records must be strictly increasing steps in [1, steps = {steps}], got {tuple(records)}")
        if marks[-1] != steps:
            marks = np.append(marks, steps)
    else:
        marks = np.asarray(log_steps(steps, require_int("records", records, 1))[1:], dtype=np.int64)
    counts = np.diff(np.concatenate([[0], marks]))
    starts = np.concatenate([[0], marks[:-1]])
    unit0 = unit_directions(V0)
    unit, out = _phase_one_sgd_scan(
        unit0, teacher_c, key, jnp.asarray(counts), jnp.asarray(starts), jnp.asarray(lr, V0.dtype), batch,
        bool(keep_directions),
    )
    C, kept = (out[0], np.asarray(out[1])) if keep_directions else (out, None)
    C = np.asarray(C)
    if not np.all(np.isfinite(C)):
        raise FloatingPointError(f"phase_one_sgd: the state became non-finite; lr = {lr:g} is too large")
    return PhaseOne(lr * marks.astype(np.float64), C, np.asarray(unit0 @ teacher_c.directions.T), np.asarray(unit),
                    steps, steps * batch, lr, "sgd", kept)


# ----------------------------------------------------------------------------------------------
# Phase two: the readout by least squares
# ----------------------------------------------------------------------------------------------


class Readout(NamedTuple):
    r"""A fitted readout :math:`f(x) = \sum_k c_k\sigma(\langle\bar v_k, x\rangle)`.

    Attributes:
        weights: :math:`c`, shape (m,), float64 (signed).
        loss: its exact population loss :math:`\tfrac12\mathbb E(f_* - f)^2` (:func:`readout_loss`).
        samples: the n fresh samples it was fitted on (0: the population solution).
        ridge: :math:`\lambda`.
    """

    weights: np.ndarray
    loss: float
    samples: int
    ridge: float


def _ridge(ridge) -> float:
    return require_real("ridge", ridge, low=0.0, why=" (the ridge penalty lambda must be >= 0)")


def solve_ridge(gram, moment, ridge: float = 0.0) -> np.ndarray:
    r"""Solve :math:`(G + \lambda I)c = b` in float64; at :math:`\lambda = 0` the minimum-norm solution.

    The minimum-norm solution :math:`c = G^+ b` uses the eigendecomposition of the symmetric
    positive semi-definite G, discarding eigenvalues below :math:`10^{-12}\lambda_{\max}` (exact
    duplicates and round-off). For :math:`G = \Phi^\top\Phi/n`, :math:`b = \Phi^\top y/n` this is the
    minimum-norm least-squares solution :math:`\Phi^+ y`.

    Args:
        gram: G, shape (m, m), symmetric positive semi-definite.
        moment: b, shape (m,).
        ridge: :math:`\lambda \ge 0`.
    """
    G = np.asarray(gram, dtype=np.float64)
    b = np.asarray(moment, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or b.shape != (G.shape[0],):
        raise ValueError(f"gram must have shape (m, m) and moment (m,), got {G.shape} and {b.shape}")
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(b))):
        raise ValueError("gram and moment must be finite")
    ridge = _ridge(ridge)
    G = 0.5 * (G + G.T)
    if ridge > 0:
        return np.linalg.solve(G + ridge * np.eye(G.shape[0]), b)
    values, vectors = np.linalg.eigh(G)
    keep = values > 1e-12 * max(float(values[-1]), 0.0)
    return vectors[:, keep] @ ((vectors[:, keep].T @ b) / values[keep])


def least_squares(features, targets, ridge: float = 0.0) -> np.ndarray:
    r"""Ridge regression :math:`\arg\min_c \frac1{2n}\|y - \Phi c\|^2 + \frac\lambda2\|c\|^2`, float64.

    Args:
        features: :math:`\Phi`, shape (n, m).
        targets: y, shape (n,).
        ridge: :math:`\lambda \ge 0`; at 0 the minimum-norm least-squares solution (``np.linalg.lstsq``).
    Returns:
        c, shape (m,).
    """
    Phi = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if Phi.ndim != 2 or y.shape != (Phi.shape[0],):
        raise ValueError(f"features must have shape (n, m) and targets (n,), got {Phi.shape} and {y.shape}")
    ridge = _ridge(ridge)
    if ridge == 0:
        return np.linalg.lstsq(Phi, y, rcond=None)[0]
    n = Phi.shape[0]
    return solve_ridge(Phi.T @ Phi / n, Phi.T @ y / n, ridge)


def feature_moments(directions, teacher: Teacher) -> tuple[np.ndarray, np.ndarray]:
    r"""Population Gram matrix and label moments of the features :math:`\sigma(\langle\bar v_k, x\rangle)`.

    :math:`G_{kj} = \mathbb E[\sigma(\langle\bar v_k,x\rangle)\sigma(\langle\bar v_j,x\rangle)] = \kappa(\langle\bar v_k,\bar v_j\rangle)`
    and :math:`b_k = \mathbb E[f_*(x)\sigma(\langle\bar v_k,x\rangle)] = \sum_q a_q\kappa(\langle\bar v_k, v_q^*\rangle)`,
    in float64. Returns ``(G (m, m), b (m,))``.
    """
    D = np.asarray(directions, dtype=np.float64)
    U = D / np.sqrt(np.maximum(np.sum(D * D, axis=-1), np.finfo(np.float64).tiny))[:, None]
    star = np.asarray(teacher.directions, dtype=np.float64)
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    kernel = teacher.activation.kernel
    G = np.asarray(kernel(np.clip(U @ U.T, -1.0, 1.0)))
    b = np.asarray(kernel(U @ star.T)) @ a
    return G, b


def _label_moment(teacher: Teacher) -> float:
    r""":math:`\mathbb E f_*^2 = a^\top\kappa(V^*V^{*\top})a` in float64 (the teacher stores it in its dtype)."""
    star = np.asarray(teacher.directions, dtype=np.float64)
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    return float(a @ np.asarray(teacher.activation.kernel(star @ star.T)) @ a)


def readout_loss(directions, weights, teacher: Teacher) -> float:
    r"""Exact population loss :math:`\tfrac12(\mathbb E f_*^2 - 2c^\top b + c^\top G c)` of a readout."""
    G, b = feature_moments(directions, teacher)
    c = np.asarray(weights, dtype=np.float64)
    if c.shape != b.shape:
        raise ValueError(f"weights must have shape (m,) = {b.shape}, got {c.shape}")
    return 0.5 * (_label_moment(teacher) - 2.0 * c @ b + c @ G @ c)


def phase_two_population(directions, teacher: Teacher, ridge: float = 0.0) -> Readout:
    r"""The population readout: :math:`(G + \lambda I)c = b` with :func:`feature_moments` (the :math:`n\to\infty` limit)."""
    ridge = _ridge(ridge)
    G, b = feature_moments(directions, teacher)
    c = solve_ridge(G, b, ridge)
    return Readout(c, 0.5 * (_label_moment(teacher) - 2.0 * c @ b + c @ G @ c), 0, ridge)


@partial(jax.jit, static_argnames=("n", "activation"))
def _sample_moments(key, unit, star, a, n: int, activation: Activation):
    x = jax.random.normal(key, (n, unit.shape[1]), unit.dtype)
    Phi = activation(x @ unit.T)
    y = activation(x @ star.T) @ a
    return Phi.T @ Phi, Phi.T @ y


def phase_two_samples(directions, teacher: Teacher, key: jax.Array, n: int, ridge: float = 0.0, batch: int = 65536) -> Readout:
    r"""The readout fitted on n fresh samples: :math:`(\hat G_n + \lambda I)c = \hat b_n`, in float64.

    The normal equations :math:`\hat G_n = \Phi^\top\Phi/n`, :math:`\hat b_n = \Phi^\top y/n` are
    accumulated over batches of at most ``batch`` samples (sample i of batch j is drawn from
    ``fold_in(key, j)``), then solved by :func:`solve_ridge`; at :math:`\lambda = 0` this is the
    minimum-norm least-squares fit. Its loss is the exact population loss (:func:`readout_loss`).

    Args:
        directions: :math:`\bar V`, shape (m, d) (normalized here).
        teacher: the teacher (noiseless labels).
        key: PRNG key of the samples.
        n: number of fresh samples (>= 1).
        ridge: :math:`\lambda \ge 0`.
        batch: samples per batch (>= 1), a memory bound only.
    """
    n = require_int("n", n, 1)
    ridge = _ridge(ridge)
    batch = require_int("batch", batch, 1)
    require_float64("phase_two_samples")
    unit = unit_directions(jnp.asarray(directions, jnp.float64))
    teacher64 = cast_teacher(teacher, jnp.float64)
    G = np.zeros((unit.shape[0],) * 2)
    b = np.zeros(unit.shape[0])
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    for j, size in enumerate(sizes):
        g, m = _sample_moments(jax.random.fold_in(key, j), unit, teacher64.directions, teacher64.coefficients, size,
                               teacher64.activation)
        G += np.asarray(g)
        b += np.asarray(m)
    c = solve_ridge(G / n, b / n, ridge)
    return Readout(c, readout_loss(unit, c, teacher), n, ridge)


def phase_two(directions, teacher: Teacher, method: str = "population", ridge: float = 0.0,
              key: jax.Array | None = None, n: int | None = None) -> Readout:
    """Phase two by ``method``: ``"population"`` (:func:`phase_two_population`) or ``"samples"``
    (:func:`phase_two_samples`, needs ``key`` and ``n``)."""
    if method == "population":
        return phase_two_population(directions, teacher, ridge)
    if method == "samples":
        if key is None or n is None:
            raise ValueError("phase_two: method='samples' needs key= (PRNG key) and n= (number of samples)")
        return phase_two_samples(directions, teacher, key, n, ridge)
    raise ValueError(f"method must be one of {PHASE_TWO_METHODS}, got {method!r}")


def phase_two_curve(V0: Float[Array, "m d"], teacher: Teacher, phase_one: PhaseOne, ridge: float = 0.0) -> np.ndarray:
    r"""Loss of the population phase two applied at every record of a population phase one, shape (R,).

    The directions at record j are rebuilt from the recorded overlaps: the part of
    :math:`\bar v_k` orthogonal to the teacher span keeps the direction it had at t = 0 (exactly,
    for the population flow), with norm :math:`\sqrt{1 - \|c_k\|^2}`. Entry j is the loss the
    layer-wise student would have if phase one stopped at :math:`t_j`.
    """
    if phase_one.method != "euler":
        raise ValueError(f"phase_one: needs the population flow (method 'euler'), got method {phase_one.method!r}")
    ridge = _ridge(ridge)
    require_float64("phase_two_curve")
    V0 = check_state(jnp.asarray(V0, jnp.float64), teacher)
    _, _, U = _split_directions(V0, cast_teacher(teacher, jnp.float64))
    star, U = np.asarray(teacher.directions, np.float64), np.asarray(U)
    out = []
    for C in np.asarray(phase_one.overlaps, np.float64):
        rho = np.sqrt(np.clip(1.0 - np.sum(C * C, axis=1), 0.0, None))
        out.append(phase_two_population(C @ star + rho[:, None] * U, teacher, ridge).loss)
    return np.array(out)


class LayerwiseRun(NamedTuple):
    """Both phases of one layer-wise run on samples: the phase-one record, the readout, the budget.

    Attributes:
        phase_one: the :class:`PhaseOne` record (online SGD).
        readout: the phase-two :class:`Readout` (least squares on fresh samples).
        samples: the total sample budget, phase one's ``batch * steps`` plus phase two's n.
    """

    phase_one: PhaseOne
    readout: Readout
    samples: int


def train_layerwise(V0: Float[Array, "m d"], teacher: Teacher, key: jax.Array, lr: float, steps: int,
                    readout_samples: int, batch: int = 1, ridge: float = 0.0, records: int = 32,
                    readout_batch: int = 65536) -> LayerwiseRun:
    r"""Layer-wise training on samples only: online SGD on the correlation loss, then least squares.

    Phase one (:func:`phase_one_sgd`) uses ``batch * steps`` fresh samples drawn from
    ``fold_in(key, 0)``; phase two (:func:`phase_two_samples`) uses ``readout_samples`` further
    fresh samples from ``fold_in(key, 1)``. The total, ``samples``, is the budget to set equal to
    that of single-phase online SGD (:func:`companion.sgd.run_sgd`, ``batch * steps`` samples) when
    the two are compared at equal samples. Both start from the same ``V0``. ``readout_batch`` is
    phase two's chunk of samples (:func:`phase_two_samples`' ``batch``; it selects the stream).
    :func:`compare_on_samples` runs this at many budgets at once.
    """
    readout_samples = require_int("readout_samples", readout_samples, 1)
    one = phase_one_sgd(V0, teacher, jax.random.fold_in(key, 0), lr, steps, batch, records)
    fit = phase_two_samples(one.directions, teacher, jax.random.fold_in(key, 1), readout_samples, ridge,
                            batch=readout_batch)
    return LayerwiseRun(one, fit, one.samples + readout_samples)


@dataclass(frozen=True)
class SampleComparison:
    r"""Single-phase online SGD against layer-wise training on the same sample budgets.

    Both schemes start from the initial student of ``model`` (its width m, seed and initial norm)
    and its teacher. Budgets :math:`n_j = B\,s_j`, with :math:`s_j` about ``records`` log-spaced
    steps from ``first_step`` to ``steps`` (:func:`companion.sgd.log_steps`):

    * single-phase: :func:`companion.sgd.run_sgd` (learning rate ``lr``, batch B), recorded at the
      steps :math:`s_j`;
    * layer-wise: least squares on :math:`n^{(2)}_j` fresh samples, :math:`f n_j` rounded to a
      multiple of ``readout_chunk`` (at least one chunk; :math:`f` = ``readout_fraction``), after
      phase one (:func:`phase_one_sgd`, batch B, learning rate ``phase_one_lr``) on the other
      :math:`n^{(1)}_j = n_j - n^{(2)}_j` samples: the same as :func:`train_layerwise` at that
      budget, with the key of the seed's data stream (phase two drawn in chunks of
      ``readout_chunk`` samples, so that every budget reuses one compiled kernel).

    Attributes:
        model: teacher and initial student (``seed`` is the first of ``seeds`` consecutive seeds).
        lr: learning rate of single-phase SGD, and of phase one unless ``phase_one_lr`` is set.
        steps: single-phase steps at the largest budget.
        batch: samples per SGD step.
        seeds: number of seeds (``model.seed``, ``model.seed + 1``, ...).
        records: number of budgets (about; duplicates are dropped).
        first_step: the smallest budget, in steps.
        readout_fraction: f, the share of each budget spent on phase two, in (0, 1).
        readout_chunk: phase-two sample counts are multiples of it; a multiple of ``batch``.
        ridge: the phase-two ridge penalty.
        threshold: a direction counts as recovered when some neuron has overlap² >= threshold.
        phase_one_lr: learning rate of the layer-wise phase one (``None``: ``lr``).
    """

    model: ModelConfig
    lr: float
    steps: int
    batch: int = 1
    seeds: int = 1
    records: int = 16
    first_step: int = 4096
    readout_fraction: float = 0.25
    readout_chunk: int = 1024
    ridge: float = 0.0
    threshold: float = 0.5
    phase_one_lr: float | None = None

    def __post_init__(self):
        require_real("lr", self.lr, low=0.0, low_open=True)
        if self.phase_one_lr is not None:
            require_real("phase_one_lr", self.phase_one_lr, low=0.0, low_open=True)
        require_int("steps", self.steps, 2)
        require_int("batch", self.batch, 1)
        require_int("seeds", self.seeds, 1)
        require_int("records", self.records, 1)
        require_int("first_step", self.first_step, 2, self.steps)
        require_real("readout_fraction", self.readout_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        require_int("readout_chunk", self.readout_chunk, 1)
        if self.readout_chunk % self.batch:
            raise ValueError(f"readout_chunk must be a multiple of batch = {self.batch}, got {self.readout_chunk}")
        if self.batch * self.first_step <= self.readout_chunk:
            raise ValueError(f"first_step: the smallest budget batch * first_step must exceed readout_chunk = "
                             f"{self.readout_chunk}, got {self.batch * self.first_step}")
        _ridge(self.ridge)
        require_real("threshold", self.threshold, low=0.5, high=1.0, high_open=True)

    def replace(self, **changes) -> "SampleComparison":
        return dataclasses.replace(self, **changes)

    @property
    def record_steps(self) -> np.ndarray:
        """The single-phase steps :math:`s_j` of the budgets, shape (R,)."""
        return np.asarray(log_steps(self.steps, self.records, self.first_step)[1:], dtype=np.int64)

    @property
    def readout_samples(self) -> np.ndarray:
        """Layer-wise phase-two samples :math:`n^{(2)}_j` at every budget, shape (R,)."""
        n = self.batch * self.record_steps
        chunks = np.maximum(np.round(self.readout_fraction * n / self.readout_chunk).astype(np.int64), 1)
        return np.minimum(chunks, (n - 1) // self.readout_chunk) * self.readout_chunk

    @property
    def phase_one_steps(self) -> np.ndarray:
        """Layer-wise phase-one steps :math:`s^{(1)}_j = (n_j - n^{(2)}_j)/B`, shape (R,), each >= 1."""
        return self.record_steps - self.readout_samples // self.batch


class SampleCurves(NamedTuple):
    r"""Losses of both schemes against the sample budget (:class:`SampleComparison`).

    Attributes:
        samples: the budgets :math:`n_j`, shape (R,).
        phase_one_samples: layer-wise phase-one samples at every budget (the rest is phase two), (R,).
        single_loss: single-phase population loss, shape (S, R).
        layer_loss: layer-wise population loss (after phase two), shape (S, R).
        single_recovered: directions recovered by the single-phase student, shape (S, R).
        layer_recovered: directions recovered by the layer-wise phase one, shape (S, R).
        single_missed, layer_missed: :math:`\tfrac12\sum_{q\notin S}a_q^2` over the directions not
            recovered, the loss a student exactly on the recovered ones would have, shape (S, R).
        single_best, layer_best: :math:`\max_k c_{kq}^2` per direction, shape (S, R, P).
    """

    samples: np.ndarray
    phase_one_samples: np.ndarray
    single_loss: np.ndarray
    layer_loss: np.ndarray
    single_recovered: np.ndarray
    layer_recovered: np.ndarray
    single_missed: np.ndarray
    layer_missed: np.ndarray
    single_best: np.ndarray
    layer_best: np.ndarray


def _recovered(overlaps, threshold: float) -> int:
    landed = landed_directions(overlaps, threshold)
    return len(set(landed[landed >= 0].tolist()))


def _missed_share(overlaps, coefficients, threshold: float) -> float:
    landed = landed_directions(overlaps, threshold)
    a = np.asarray(coefficients, np.float64)
    return 0.5 * float(np.sum(np.delete(a, landed[landed >= 0]) ** 2))


def _layerwise_on_budgets(comparison: SampleComparison, seed: int) -> dict[str, np.ndarray]:
    model = comparison.model.replace(seed=seed)
    teacher, V0 = model.build()
    key = model.keys()["data"]
    s1 = comparison.phase_one_steps
    marks = np.unique(s1)
    lr = comparison.lr if comparison.phase_one_lr is None else comparison.phase_one_lr
    one = phase_one_sgd(V0, teacher, jax.random.fold_in(key, 0), lr, int(marks[-1]), comparison.batch,
                        tuple(int(m) for m in marks), keep_directions=True)
    where = np.searchsorted(marks, s1)
    loss, recovered, missed = [], [], []
    for n2, idx in zip(comparison.readout_samples, where):
        fit = phase_two_samples(one.record_directions[idx], teacher, jax.random.fold_in(key, 1), int(n2),
                                comparison.ridge, batch=comparison.readout_chunk)
        loss.append(fit.loss)
        recovered.append(_recovered(one.overlaps[idx], comparison.threshold))
        missed.append(_missed_share(one.overlaps[idx], teacher.coefficients, comparison.threshold))
    best = np.max(np.asarray(one.overlaps, np.float64)[where] ** 2, axis=1)  # (R, P)
    return {"loss": np.asarray(loss), "recovered": np.asarray(recovered, np.int32), "missed": np.asarray(missed),
            "best": best}


def compare_on_samples(comparison: SampleComparison, cache: Cache | bool | None = True) -> SampleCurves:
    """Run (or load from the cache) both schemes of a :class:`SampleComparison` on every seed.

    The single-phase runs go through :func:`companion.sgd.run_sgd` (its own cache entry), the
    layer-wise runs are cached here per seed.
    """
    from companion.sgd import SGDConfig, run_sgd

    cache = Cache.resolve(cache, namespace="layerwise", version=VERSION)
    c = comparison
    steps = c.record_steps
    config = SGDConfig(c.model, lr=c.lr, steps=c.steps, batch=c.batch, record=tuple(int(s) for s in steps),
                       seeds=c.seeds)
    single = run_sgd(config, cache=False if cache is None else cache.directory)  # run_sgd's own namespace
    single_rec = np.array([[_recovered(single.overlaps[s, r], c.threshold) for r in range(steps.size)]
                           for s in range(c.seeds)], np.int32)
    a = c.model.teacher().coefficients
    single_missed = np.array([[_missed_share(single.overlaps[s, r], a, c.threshold) for r in range(steps.size)]
                              for s in range(c.seeds)])
    layer_loss, layer_rec, layer_missed, layer_best = [], [], [], []
    for j in range(c.seeds):
        run = _SampleRun(c, c.model.seed + j)
        hit = cache.load(run) if cache is not None else None
        arrays = hit[0] if hit is not None else _layerwise_on_budgets(c, run.seed)
        if hit is None and cache is not None:
            cache.save(run, arrays)
        layer_loss.append(arrays["loss"])
        layer_rec.append(arrays["recovered"])
        layer_missed.append(arrays["missed"])
        layer_best.append(arrays["best"])
    return SampleCurves(c.batch * steps, c.batch * c.phase_one_steps, np.asarray(single.loss, np.float64),
                        np.stack(layer_loss), single_rec, np.stack(layer_rec), single_missed, np.stack(layer_missed),
                        np.max(np.asarray(single.overlaps, np.float64) ** 2, axis=2), np.stack(layer_best))


@dataclass(frozen=True)
class _SampleRun:
    comparison: SampleComparison
    seed: int


# ----------------------------------------------------------------------------------------------
# Who lands where, and how wide the student must be
# ----------------------------------------------------------------------------------------------


def predicted_winners(initial_overlaps, coefficients, activation: Activation) -> np.ndarray:
    r"""Leading-order phase-one prediction: neuron k ends on :math:`\arg\max_q a_q|c_{kq}(0)|^{k_*-2}`, shape (m,)."""
    return np.argmax(strength_matrix(initial_overlaps, coefficients, activation.information_exponent), axis=1)


def landed_directions(overlaps, threshold: float = 0.5) -> np.ndarray:
    r"""The direction each neuron sits on (:math:`c_{kq}^2 \ge` threshold), -1 if none, shape (m,).

    With threshold > 1/2 at most one direction qualifies, since :math:`\sum_q c_{kq}^2 \le 1`.
    """
    threshold = require_real("threshold", threshold, low=0.5, high=1.0, high_open=True,
                             why=" (a threshold >= 1/2 makes the direction unique)")
    C2 = np.asarray(overlaps, dtype=np.float64) ** 2
    if C2.ndim != 2:
        raise ValueError(f"overlaps must have shape (m, P), got {C2.shape}")
    best = np.argmax(C2, axis=1)
    return np.where(C2[np.arange(C2.shape[0]), best] >= threshold, best, -1)


def first_cover(overlaps, threshold: float = 0.5) -> np.ndarray:
    r"""For each direction q, the smallest prefix width :math:`m'` whose neurons :math:`0..m'-1` include one
    with :math:`c_{kq}^2 \ge` threshold; ``inf`` if none does. Shape (P,), float64.

    In phase one the neurons do not interact, so the first :math:`m'` neurons of a run of width m end
    exactly where a run of width :math:`m'` from the same initial neurons would: the smallest width
    that recovers the top :math:`P_*` directions is ``first_cover(...)[:P_*].max()``.
    """
    C2 = np.asarray(overlaps, dtype=np.float64) ** 2
    if C2.ndim != 2:
        raise ValueError(f"overlaps must have shape (m, P), got {C2.shape}")
    threshold = require_real("threshold", threshold, low=0.0, high=1.0, low_open=True)
    hit = C2 >= threshold
    return np.where(hit.any(axis=0), np.argmax(hit, axis=0) + 1.0, np.inf)


def winner_probabilities(coefficients, activation: Activation, nodes: int = 400) -> np.ndarray:
    r"""Probability that a uniformly random neuron lands on each direction under the leading-order rule.

    :math:`p_q = \Pr[\arg\max_{q'} a_{q'}|c_{q'}|^{k_*-2} = q]` for :math:`\bar v\sim\mathrm{Unif}(\mathbb S^{d-1})`.
    The argmax depends on the overlaps only through their ratios, and :math:`c = g/\|g\|` for a
    standard Gaussian g, so the :math:`c_q` may be replaced by i.i.d. :math:`N(0,1)` variables and
    :math:`p` does not depend on d. Conditioning on :math:`|g_q| = t`,

    .. math::
        p_q = 2\int_0^\infty \varphi(t)\prod_{q'\ne q}
        \operatorname{erf}\!\Big(\frac{t\,(a_q/a_{q'})^{1/(k_*-2)}}{\sqrt2}\Big)\,dt ,

    a one-dimensional integral, computed by Gauss-Legendre quadrature with ``nodes`` nodes on
    :math:`[0, 16]` (the Gaussian mass beyond is below :math:`10^{-56}`), in log space so that tiny
    probabilities keep their relative accuracy. Needs an even information exponent
    :math:`k_* \ge 4` (the paper's setting). Returns shape (P,); the entries sum to 1.
    """
    from numpy.polynomial.legendre import leggauss
    from scipy.special import log_ndtr

    a = np.asarray(coefficients, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or np.any(a <= 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"coefficients must be a 1-D array of positive weights, got {a!r}")
    k = activation.information_exponent
    if k % 2 or k < 4:
        raise ValueError(f"activation: needs an even information exponent k* >= 4, got k* = {k}")
    nodes = require_int("nodes", nodes, 16)
    x, w = leggauss(nodes)
    t, w = 8.0 * (x + 1.0), 8.0 * w  # [0, 16]
    log_phi = -0.5 * t**2 - 0.5 * math.log(2.0 * math.pi)
    out = np.empty(a.size)
    rows = max(1, 2**22 // (a.size * nodes))  # directions q per block: bounded memory
    for start in range(0, a.size, rows):
        q = np.arange(start, min(start + rows, a.size))
        ratio = (a[q, None] / a[None, :]) ** (1.0 / (k - 2))  # (q, q')
        arg = t[None, None, :] * ratio[:, :, None]  # erf(u / sqrt 2) = 1 - 2 Phi(-u)
        log_erf = np.log1p(-2.0 * np.exp(log_ndtr(-arg)))
        log_erf[np.arange(q.size), q] = 0.0  # q' = q is not a competitor
        out[q] = 2.0 * np.exp(log_phi[None, :] + log_erf.sum(axis=1)) @ w
    return out


def _coverage_function(probabilities, p_star: int | None):
    """m -> Pr[m_min <= m] (see coverage_probability), with the subset sums computed once."""
    p = np.asarray(probabilities, dtype=np.float64)
    p_star = p.size if p_star is None else require_int("p_star", p_star, 1, p.size)
    top = np.minimum(p[:p_star], 1.0)
    if p_star <= 16:
        subsets = (np.arange(2**p_star)[:, None] >> np.arange(p_star)) & 1  # (2^P*, P*)
        with np.errstate(divide="ignore"):
            log_kept = np.log(np.clip(1.0 - subsets @ top, 0.0, 1.0))  # -inf: a sure miss (m >= 1)
        sign = (-1.0) ** subsets.sum(axis=1)

        def coverage(m):
            m = np.asarray(m, dtype=np.float64)
            return np.clip(np.exp(np.multiply.outer(m, log_kept)) @ sign, 0.0, 1.0)
    else:
        with np.errstate(divide="ignore"):
            log_miss = np.log1p(-top)

        def coverage(m):
            m = np.asarray(m, dtype=np.float64)
            return np.prod(1.0 - np.exp(np.multiply.outer(m, log_miss)), axis=-1)

    return coverage


def coverage_probability(probabilities, widths, p_star: int | None = None) -> np.ndarray:
    r"""Probability that m independent neurons cover each of the top :math:`P_*` directions.

    Each neuron lands on q with probability :math:`p_q` (:func:`winner_probabilities`),
    independently. By inclusion-exclusion over the sets T of missed directions,

    .. math::
        \Pr[m_{\min} \le m] = \sum_{T\subseteq[P_*]} (-1)^{|T|}\Big(1 - \sum_{q\in T}p_q\Big)^m ,

    exact, used for :math:`P_* \le 16` (:math:`2^{P_*}` terms); beyond, the approximation
    :math:`\prod_{q\le P_*}(1 - (1-p_q)^m)`, which treats the misses as independent and slightly
    overestimates the coverage (a neuron on q is not on q'), negligibly when every :math:`p_q` is
    small. Returns shape ``widths.shape``.
    """
    return _coverage_function(probabilities, p_star)(widths)


def _bisect(predicate, high: int = 2**40) -> float:
    """Smallest integer m in [1, high] with predicate(m) (predicate monotone); inf if none."""
    if not predicate(high):
        return math.inf
    lo, hi = 0, high
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if predicate(mid) else (mid, hi)
    return float(hi)


def width_quantile(probabilities, p_star: int | None = None, level: float = 0.5, max_width: int = 2**40) -> float:
    r"""Smallest m with :func:`coverage_probability` :math:`\ge` level (bisection); ``inf`` beyond ``max_width``."""
    level = require_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    coverage = _coverage_function(probabilities, p_star)
    return _bisect(lambda m: coverage(m) >= level, require_int("max_width", max_width, 1))


def median_band(probabilities, p_star: int | None, seeds: int, levels=(0.05, 0.95)) -> tuple[float, float]:
    r"""Band for the *sample median* (``np.median``) of ``seeds`` independent minimal widths.

    With :math:`F(m) = \Pr[m_{\min}\le m]` (:func:`coverage_probability`), the j-th smallest of S
    draws is :math:`\le m` with probability :math:`\Pr[\mathrm{Bin}(S, F(m)) \ge j]`. For odd S the
    median is the order statistic :math:`j = (S+1)/2`; for even S it is the mean of
    :math:`j = S/2` and :math:`S/2 + 1`, so it lies between them, and the band runs from the
    ``levels[0]`` quantile of the lower one to the ``levels[1]`` quantile of the upper one. The
    sample median falls outside the band with probability at most ``levels[0] + 1 - levels[1]``:
    an honest tolerance for comparing an observed median over S seeds with the prediction, since
    it accounts for exactly the seed noise of the experiment.
    """
    from scipy.stats import binom

    seeds = require_int("seeds", seeds, 1)
    low_j, high_j = (seeds // 2, seeds // 2 + 1) if seeds % 2 == 0 else ((seeds + 1) // 2,) * 2
    coverage = _coverage_function(probabilities, p_star)
    low = _bisect(lambda m: binom.sf(low_j - 1, seeds, coverage(m)) >= levels[0])
    high = _bisect(lambda m: binom.sf(high_j - 1, seeds, coverage(m)) >= levels[1])
    return low, high


class GrowthFits(NamedTuple):
    r"""Two fits of a width against the condition number.

    Attributes:
        power: :math:`\log m = \text{intercept} + \text{slope}\cdot\log\kappa` (:func:`companion.scaling.fit_power_law`).
        exponential_rate: r of :math:`\log m = c + r\,\kappa` (least squares).
        exponential_intercept: c.
        power_rms, exponential_rms: root-mean-square residual of :math:`\log m` for each fit.
    """

    power: PowerLawFit
    exponential_rate: float
    exponential_intercept: float
    power_rms: float
    exponential_rms: float


def growth_fits(kappa, widths, min_points: int = 3) -> GrowthFits:
    r"""Fit :math:`m(\kappa)` both as a power law and as an exponential, on the finite points."""
    k = np.asarray(kappa, dtype=np.float64)
    m = np.asarray(widths, dtype=np.float64)
    ok = np.isfinite(m) & (m > 0) & np.isfinite(k) & (k > 0)
    power = fit_power_law(k[ok], m[ok], min_points=min_points)
    rate, intercept = np.polyfit(k[ok], np.log(m[ok]), 1)
    power_rms = float(np.sqrt(np.mean((np.log(m[ok]) - power.intercept - power.slope * np.log(k[ok])) ** 2)))
    exp_rms = float(np.sqrt(np.mean((np.log(m[ok]) - intercept - rate * k[ok]) ** 2)))
    return GrowthFits(power, float(rate), float(intercept), power_rms, exp_rms)


# ----------------------------------------------------------------------------------------------
# The width experiment: both schemes from the same initial neurons
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WidthCase:
    r"""One teacher of a width sweep: :math:`a_p = p^{-\beta}/Z_P`, recover the top ``p_star`` (default P).

    Its condition number is :math:`\kappa_* = a_1/a_{P_*} = P_*^\beta`.
    """

    P: int
    beta: float
    p_star: int | None = None

    def __post_init__(self):
        require_int("P", self.P, 1)
        require_real("beta", self.beta, low=0.0)
        if self.p_star is not None:
            require_int("p_star", self.p_star, 1, self.P, why=f" (the top p_star of P = {self.P} directions)")

    @property
    def n_recover(self) -> int:
        return self.P if self.p_star is None else self.p_star

    def coefficients(self) -> np.ndarray:
        """:math:`a`, shape (P,) (beta <= 1/2 is fine here: P is finite and only kappa matters)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return power_law_coefficients(self.P, self.beta)

    @property
    def kappa(self) -> float:
        a = self.coefficients()
        return float(a[0] / a[self.n_recover - 1])


@dataclass(frozen=True)
class LayerwiseSweep:
    r"""Smallest width that recovers the top :math:`P_*` directions, single-phase against layer-wise.

    For every seed the initial neurons form one sequence (:meth:`neurons`); a student of width m
    starts from its first m neurons, in both schemes and for every case. Both train for the same gradient-flow time
    :math:`H = \text{horizon\_scale}\cdot T_1(a_{P_*})`, where :math:`T_1(a) = 1/(4I(I-1)\hat\sigma_{2I}^2\,a\,d^{-(I-1)})`
    is the leading-order escape time of a pair with the typical overlap :math:`\bar v^2(0) = 1/d`
    (:math:`= d/(8a)` for :math:`h_4`). A direction counts as recovered when some neuron has
    :math:`\bar v_{k,q}^2 \ge` ``threshold`` at time H.

    * single-phase: gradient descent on the squared loss (:func:`companion.dynamics.euler_flow`),
      at widths :math:`\lceil f P_*\rceil` for f in ``width_factors``, in increasing order, up to the
      first that recovers the top :math:`P_*` (the grid sets the resolution);
    * layer-wise: phase one (:func:`phase_one_flow`) on growing chunks of the sequence until every
      seed covers the top :math:`P_*`; the neurons do not interact, so the smallest recovering width
      is read off exactly (:func:`first_cover`), or is reported as ``inf`` (more than ``pool``).

    Attributes:
        model: d, activation, initial norm and dtype (its P, beta, m and seed are replaced).
        cases: the teachers.
        seeds: initialization seeds.
        pool: the largest layer-wise width tried.
        width_factors: single-phase widths, as multiples of :math:`P_*`, increasing.
        horizon_scale: H in units of :math:`T_1(a_{P_*})`.
        dt: Euler step of both schemes.
        threshold: recovery level of :math:`\bar v^2` (in [1/2, 1)).
    """

    model: ModelConfig
    cases: tuple[WidthCase, ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    pool: int = 4096
    width_factors: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
    horizon_scale: float = 2.0
    dt: float = 0.25
    threshold: float = 0.5

    def __post_init__(self):
        if not self.cases:
            raise ValueError("cases must be a non-empty tuple of WidthCase")
        for case in self.cases:
            if not isinstance(case, WidthCase):
                raise ValueError(f"cases must hold WidthCase objects, got {case!r}")
            if case.P > self.model.d:
                raise ValueError(f"cases: P = {case.P} exceeds d = {self.model.d}")
        if not self.seeds:
            raise ValueError("seeds must be a non-empty tuple")
        for s in self.seeds:
            require_int("seeds", s, 0)
        require_int("pool", self.pool, 1, why=" (the width must be >= 1)")
        if not self.width_factors or any(not f >= 1.0 for f in self.width_factors) or list(self.width_factors) != sorted(set(self.width_factors)):
            raise ValueError(f"width_factors must be strictly increasing and >= 1, got {self.width_factors}")
        require_real("horizon_scale", self.horizon_scale, low=0.0, low_open=True)
        require_real("dt", self.dt, low=0.0, low_open=True)
        require_real("threshold", self.threshold, low=0.5, high=1.0, high_open=True)
        if self.model.init_norm_sq is None:
            raise ValueError("model.init_norm_sq must be set: a width sweep needs the same initial norm at every width")

    def replace(self, **changes) -> "LayerwiseSweep":
        return dataclasses.replace(self, **changes)

    @property
    def padded_P(self) -> int:
        """Every teacher is padded with zero-weight directions to this P (one compilation for all)."""
        return max(case.P for case in self.cases)

    def horizon(self, case: WidthCase) -> float:
        a = case.coefficients()[case.n_recover - 1]
        act = get_activation(self.model.activation)
        return float(self.horizon_scale * decoupled_blowup_time(1.0 / self.model.d, a, act))

    def widths(self, case: WidthCase) -> tuple[int, ...]:
        return tuple(sorted({min(math.ceil(f * case.n_recover - 1e-9), self.pool) for f in self.width_factors}))

    def teacher(self, case: WidthCase) -> Teacher:
        """The case's teacher, padded to ``padded_P`` directions with zero weights (exactly inert)."""
        a = np.zeros(self.padded_P)
        a[: case.P] = case.coefficients()
        return make_teacher(self.model.d, self.padded_P, coefficients=a, activation=self.model.activation,
                            dtype=self.model.dtype)

    def neurons(self, seed: int, count: int):
        """The first ``count`` initial neurons of a seed, shape (count, d).

        They are drawn in blocks of :data:`BLOCK` rows, block j by
        :func:`companion.student.init_student` from ``fold_in(model.keys()["student"], j)``, so a
        smaller student is always a prefix of a larger one (``init_student`` itself is not
        prefix-consistent across widths).
        """
        count = require_int("count", count, 1)
        model = self.model.replace(seed=seed)
        key = model.keys()["student"]
        blocks = [init_student(jax.random.fold_in(key, j), BLOCK, model.d, model.init_norm_sq, model.dtype)
                  for j in range(-(-count // BLOCK))]
        return jnp.concatenate(blocks)[:count]


#: Rows per block of initial neurons (see :meth:`LayerwiseSweep.neurons`).
BLOCK = 256


@dataclass(frozen=True)
class _LayerwiseRun:
    sweep_model: ModelConfig
    case: WidthCase
    seeds: tuple[int, ...]
    pool: int
    horizon: float
    dt: float
    padded_P: int


@dataclass(frozen=True)
class _SingleRun:
    sweep_model: ModelConfig
    case: WidthCase
    seed: int
    width: int
    horizon: float
    dt: float
    padded_P: int


def _pad_width(m: int) -> int:
    return 1 << max(3, (m - 1).bit_length())  # 8, 16, 32, ...: few compilations


def _run_layerwise_case(sweep: LayerwiseSweep, case: WidthCase, cache: Cache | None) -> dict[str, np.ndarray]:
    """Phase one on growing chunks of every seed's neurons until each seed covers the top P_* (or the pool ends).

    Chunks double (BLOCK, BLOCK, 2 BLOCK, 4 BLOCK, ...); the neurons do not interact, so running a
    chunk on its own gives exactly what the same neurons do inside a wider student.
    """
    run = _LayerwiseRun(sweep.model, case, sweep.seeds, sweep.pool, sweep.horizon(case), sweep.dt, case.P)
    if cache is not None:
        hit = cache.load(run)
        if hit is not None:
            return hit[0]
    teacher = make_teacher(sweep.model.d, case.P, coefficients=case.coefficients(), activation=sweep.model.activation,
                           dtype=sweep.model.dtype)
    a, act, p = case.coefficients(), teacher.activation, case.n_recover
    S = len(sweep.seeds)
    first = np.full((S, case.P), np.inf)
    landed, predicted = [], []
    done = 0
    while done < sweep.pool and not np.all(np.isfinite(first[:, :p])):
        size = min(max(BLOCK, done), sweep.pool - done)
        V0 = jnp.concatenate([sweep.neurons(seed, done + size)[done:] for seed in sweep.seeds])
        one = phase_one_flow(V0, teacher, np.array([run.horizon]), sweep.dt)
        final = one.overlaps[-1].reshape(S, size, case.P)
        initial = one.initial_overlaps.reshape(S, size, case.P)
        for s in range(S):
            first[s] = np.minimum(first[s], first_cover(final[s], sweep.threshold) + done)
        landed.append(np.stack([landed_directions(final[s], sweep.threshold) for s in range(S)]))
        predicted.append(np.stack([predicted_winners(initial[s], a, act) for s in range(S)]))
        done += size
    arrays = {"first_cover": first, "landed": np.concatenate(landed, axis=1).astype(np.int32),
              "predicted": np.concatenate(predicted, axis=1).astype(np.int32)}
    if cache is not None:
        cache.save(run, arrays)
    return arrays


def _run_single(sweep: LayerwiseSweep, case: WidthCase, seed: int, width: int, cache: Cache | None) -> dict[str, np.ndarray]:
    run = _SingleRun(sweep.model, case, seed, width, sweep.horizon(case), sweep.dt, sweep.padded_P)
    if cache is not None:
        hit = cache.load(run)
        if hit is not None:
            return hit[0]
    teacher = sweep.teacher(case)
    V0 = sweep.neurons(seed, width)
    padded = jnp.zeros((_pad_width(width), V0.shape[1]), V0.dtype).at[:width].set(V0)  # zero rows are inert
    trajectory = euler_flow(padded, teacher, np.array([run.horizon]), dt=sweep.dt)
    overlaps = trajectory.overlaps[-1][:width, : case.P]
    arrays = {
        "first_cover": first_cover(overlaps, sweep.threshold),
        "landed": landed_directions(overlaps, sweep.threshold).astype(np.int32),
        "loss": np.asarray(trajectory.loss[-1], dtype=np.float64),
    }
    if cache is not None:
        cache.save(run, arrays)
    return arrays


def single_phase_min_width(sweep: LayerwiseSweep, case: WidthCase, seed: int,
                           cache: Cache | bool | None = True) -> tuple[float, np.ndarray]:
    r"""Smallest single-phase width of the sweep's grid that recovers the top :math:`P_*` of ``case``.

    Runs gradient descent on the squared loss (:func:`companion.dynamics.euler_flow`, step
    ``sweep.dt``, time ``sweep.horizon(case)``) from the seed's first m neurons for
    m in ``sweep.widths(case)``, in increasing order, and stops at the first that recovers.

    Returns:
        ``(m, landed)``: the width (``inf`` if none in the grid) and the direction each of its
        neurons ended on (:func:`landed_directions`; empty if none).
    """
    cache = Cache.resolve(cache, namespace="layerwise", version=VERSION)
    for width in sweep.widths(case):
        run = _run_single(sweep, case, seed, width, cache)
        if np.all(np.isfinite(run["first_cover"][: case.n_recover])):
            return float(width), run["landed"]
    return math.inf, np.zeros(0, np.int32)


class LayerwiseResult(NamedTuple):
    r"""Arrays of a :class:`LayerwiseSweep`, indexed ``[case, seed]``.

    Attributes:
        kappa: :math:`\kappa_* = a_1/a_{P_*}` per case, shape (N,).
        horizon: the training time H per case, shape (N,).
        single_width: smallest single-phase width in the grid that recovered the top
            :math:`P_*` (``inf`` if none), shape (N, S).
        layerwise_width: smallest layer-wise width that recovered them (``inf`` if > pool), (N, S).
        layerwise_landed: per case, the direction each simulated neuron ended on (-1: none),
            shape (S, M_i) (M_i: the neurons simulated for case i, at least its largest width).
        layerwise_predicted: per case, the leading-order prediction :func:`predicted_winners`, (S, M_i).
        single_landed: the direction each neuron of the smallest recovering single-phase
            student ended on (-1: none; padded with -2 beyond its width), shape (N, S, max width).
    """

    kappa: np.ndarray
    horizon: np.ndarray
    single_width: np.ndarray
    layerwise_width: np.ndarray
    layerwise_landed: list
    layerwise_predicted: list
    single_landed: np.ndarray


def run_layerwise_sweep(sweep: LayerwiseSweep, cache: Cache | bool | None = True, progress: bool = False) -> LayerwiseResult:
    """Run (or load from the cache) both schemes on every case and seed of a sweep.

    Args:
        sweep: the experiment.
        cache: a :class:`Cache`, ``True`` for the default cache, or ``False``/``None`` for none.
        progress: show a progress bar over cases.
    """
    cache = Cache.resolve(cache, namespace="layerwise", version=VERSION)
    cases = sweep.cases
    if progress:
        from tqdm.auto import tqdm

        cases = tqdm(cases, desc="layer-wise sweep", unit="case")
    N, S = len(sweep.cases), len(sweep.seeds)
    max_width = max(max(sweep.widths(c)) for c in sweep.cases)
    single = np.full((N, S), np.inf)
    layer = np.full((N, S), np.inf)
    landed, predicted = [], []
    single_landed = np.full((N, S, max_width), -2, np.int32)
    for i, case in enumerate(cases):
        p = case.n_recover
        lw = _run_layerwise_case(sweep, case, cache)
        layer[i] = lw["first_cover"][:, :p].max(axis=1)
        landed.append(lw["landed"])
        predicted.append(lw["predicted"])
        for j, seed in enumerate(sweep.seeds):
            single[i, j], found = single_phase_min_width(sweep, case, seed, cache)
            single_landed[i, j, : found.size] = found
    kappa = np.array([c.kappa for c in sweep.cases])
    horizon = np.array([sweep.horizon(c) for c in sweep.cases])
    return LayerwiseResult(kappa, horizon, single, layer, landed, predicted, single_landed)


def _sweep_model(d: int) -> ModelConfig:
    return ModelConfig(d=d, P=1, m=1, beta=1.0, activation="h4", init_norm_sq=1e-4)


#: Presets. ``book``: d = 256, two families of teachers: beta = 1 with P = P_* from 4 to 16
#: (kappa = P), and P = 8 with beta from 0.5 to 2 (kappa from 2.8 to 64). ``paper``: the paper's
#: teacher (d = 2048, P = 1024, h4, beta = 0.8), recovering its top P_* = 2..64 directions.
LAYERWISE_SWEEPS: dict[str, LayerwiseSweep] = {
    "test": LayerwiseSweep(_sweep_model(32), cases=(WidthCase(2, 1.0), WidthCase(3, 1.0), WidthCase(3, 2.0)),
                           seeds=(0, 1), pool=1024, width_factors=(1.0, 1.5, 2.0, 3.0, 4.0), horizon_scale=3.0),
    "book": LayerwiseSweep(
        _sweep_model(256),
        cases=(*(WidthCase(P, 1.0) for P in (4, 6, 8, 11, 16)), *(WidthCase(8, b) for b in (0.5, 1.5, 2.0))),
        seeds=(0, 1, 2, 3, 4, 5), pool=8192, width_factors=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0), horizon_scale=3.0,
    ),
    "paper": LayerwiseSweep(
        ModelConfig(d=2048, P=1, m=1, beta=0.8, activation="h4", init_norm_sq=1e-6),
        cases=tuple(WidthCase(1024, 0.8, p) for p in (2, 4, 8, 16, 32, 64)),
        seeds=(0, 1, 2), pool=1 << 16, width_factors=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0), horizon_scale=3.0,
    ),
}


def layerwise_sweep(preset: str = "book", **overrides) -> LayerwiseSweep:
    """A preset of :class:`LayerwiseSweep`, with fields overridden by keyword."""
    if preset not in LAYERWISE_SWEEPS:
        raise ValueError(f"preset must be one of {sorted(LAYERWISE_SWEEPS)}, got {preset!r}")
    return LAYERWISE_SWEEPS[preset].replace(**overrides)


def _jsonable(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def reproduce_layerwise(preset: str, progress: bool = False) -> dict:
    """``python -m companion reproduce layerwise --preset ...``: run (or load) the width sweep.

    Returns a JSON-able summary: per case P, beta, P_*, kappa, the horizon, the median smallest
    width of each scheme over seeds (``None`` = not reached: beyond the grid or the pool) and the
    per-seed widths.
    """
    sweep = layerwise_sweep(preset)
    result = run_layerwise_sweep(sweep, progress=progress)
    cases = [{"P": c.P, "beta": c.beta, "p_star": c.n_recover, "kappa": float(k), "horizon": float(h),
              "single_phase_median_width": _jsonable([np.median(s)])[0],
              "layerwise_median_width": _jsonable([np.median(w)])[0],
              "single_phase_widths": _jsonable(s), "layerwise_widths": _jsonable(w)}
             for c, k, h, s, w in zip(sweep.cases, result.kappa, result.horizon, result.single_width,
                                      result.layerwise_width)]
    return {"d": sweep.model.d, "seeds": list(sweep.seeds), "pool": sweep.pool, "cases": cases}
