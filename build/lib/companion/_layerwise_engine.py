r"""Layer-wise training, the engines: phase one (directions on the correlation loss, by population
flow or online spherical SGD) and phase two (the readout by least squares), and both phases in
sequence (:func:`train_layerwise`). The method is described in :mod:`companion.layerwise`, which
re-exports every public name here.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._core import cast_teacher, check_state, check_times, draw, interval_steps, log_steps, require_float64
from companion._validate import require_int, require_real, warn
from companion.dynamics import (
    reduced_direction_field,
)
from companion.hermite import Activation
from companion.loss import activation_series
from companion.student import unit_directions
from companion.teacher import Teacher

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


def correlation_field(
    C: Float[Array, "m P"], coefficients: Float[Array, " P"], activation: Activation
) -> Float[Array, "m P"]:
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
    return PhaseOne(
        times, np.asarray(records), np.asarray(C0), np.asarray(directions), int(counts.sum()), 0, dt, "euler"
    )


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
    V0: Float[Array, "m d"],
    teacher: Teacher,
    key: jax.Array,
    lr: float,
    steps: int,
    batch: int = 1,
    records: int | tuple[int, ...] = 32,
    keep_directions: bool = False,
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
        unit0,
        teacher_c,
        key,
        jnp.asarray(counts),
        jnp.asarray(starts),
        jnp.asarray(lr, V0.dtype),
        batch,
        bool(keep_directions),
    )
    C, kept = (out[0], np.asarray(out[1])) if keep_directions else (out, None)
    C = np.asarray(C)
    if not np.all(np.isfinite(C)):
        raise FloatingPointError(f"phase_one_sgd: the state became non-finite; lr = {lr:g} is too large")
    return PhaseOne(
        lr * marks.astype(np.float64),
        C,
        np.asarray(unit0 @ teacher_c.directions.T),
        np.asarray(unit),
        steps,
        steps * batch,
        lr,
        "sgd",
        kept,
    )


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


def check_ridge(ridge) -> float:
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
    ridge = check_ridge(ridge)
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
    ridge = check_ridge(ridge)
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
    ridge = check_ridge(ridge)
    G, b = feature_moments(directions, teacher)
    c = solve_ridge(G, b, ridge)
    return Readout(c, 0.5 * (_label_moment(teacher) - 2.0 * c @ b + c @ G @ c), 0, ridge)


@partial(jax.jit, static_argnames=("n", "activation"))
def _sample_moments(key, unit, star, a, n: int, activation: Activation):
    x = jax.random.normal(key, (n, unit.shape[1]), unit.dtype)
    Phi = activation(x @ unit.T)
    y = activation(x @ star.T) @ a
    return Phi.T @ Phi, Phi.T @ y


def phase_two_samples(
    directions, teacher: Teacher, key: jax.Array, n: int, ridge: float = 0.0, batch: int = 65536
) -> Readout:
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
    ridge = check_ridge(ridge)
    batch = require_int("batch", batch, 1)
    require_float64("phase_two_samples")
    unit = unit_directions(jnp.asarray(directions, jnp.float64))
    teacher64 = cast_teacher(teacher, jnp.float64)
    G = np.zeros((unit.shape[0],) * 2)
    b = np.zeros(unit.shape[0])
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    for j, size in enumerate(sizes):
        g, m = _sample_moments(
            jax.random.fold_in(key, j), unit, teacher64.directions, teacher64.coefficients, size, teacher64.activation
        )
        G += np.asarray(g)
        b += np.asarray(m)
    c = solve_ridge(G / n, b / n, ridge)
    return Readout(c, readout_loss(unit, c, teacher), n, ridge)


def phase_two(
    directions,
    teacher: Teacher,
    method: str = "population",
    ridge: float = 0.0,
    key: jax.Array | None = None,
    n: int | None = None,
) -> Readout:
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
    ridge = check_ridge(ridge)
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


def train_layerwise(
    V0: Float[Array, "m d"],
    teacher: Teacher,
    key: jax.Array,
    lr: float,
    steps: int,
    readout_samples: int,
    batch: int = 1,
    ridge: float = 0.0,
    records: int = 32,
    readout_batch: int = 65536,
) -> LayerwiseRun:
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
    fit = phase_two_samples(
        one.directions, teacher, jax.random.fold_in(key, 1), readout_samples, ridge, batch=readout_batch
    )
    return LayerwiseRun(one, fit, one.samples + readout_samples)
