r"""Population gradient flow of the 2-homogeneous student, and the ODEs that predict it.

Gradient flow is :math:`\dot V = -\nabla_V L(V)` for the closed-form population loss of
:mod:`companion.loss`. With :math:`w_k = \|v_k\|^2`, :math:`\bar v_k = v_k/\|v_k\|`, the overlap
matrix :math:`C = \bar V V^{*\top}` (m × P), the Gram matrix :math:`G = \bar V\bar V^\top` (m × m) and
the kernel :math:`\kappa(\rho) = \sum_j \hat\sigma_j^2\rho^j` (Mehler), it splits into a direction
equation and a norm equation (paper brief §4.2, any finite Hermite expansion):

.. math::
    \dot{\bar v}_k = (I - \bar v_k\bar v_k^\top)\, D_k, \qquad
    D_k = \sum_p a_p\,\kappa'(C_{kp})\, v_p^* - \sum_j w_j\,\kappa'(G_{kj})\,\bar v_j ,

.. math::
    \dot w_k = 4\, w_k\, g_k, \qquad
    g_k = \sum_p a_p\,\kappa(C_{kp}) - \sum_j w_j\,\kappa(G_{kj})
        = \mathbb E\big[(f_* - f)(x)\,\sigma(\langle\bar v_k, x\rangle)\big].

The direction equation does not involve the neuron's own norm, and the ``j = k`` term drops out
of it through the projection.

What this module provides:

* :func:`vector_field` — :math:`-\nabla_V L` in closed matmul form;
* :func:`euler_flow` — fixed-step explicit Euler (one Euler step is exactly one step of full-batch
  gradient descent with learning rate ``dt``), jitted, many steps per dispatch, recording only
  summaries at chosen times; :func:`reference_flow` — an adaptive diffrax solution to check it;
* :func:`crossing_time`, :func:`pair_escape_times`, :func:`direction_escapes` — escape times
  read off a recorded :class:`Trajectory`;
* the leading-order decoupled ODE of one aligned coordinate (:func:`decoupled_solution`,
  :func:`decoupled_blowup_time`, :func:`decoupled_crossing_time`);
* logistic norm growth after alignment (:func:`logistic_norm`, :func:`logistic_time`);
* a refined escape-time predictor that integrates each winning neuron's own direction flow in
  the span of the teacher directions, with deflation of the directions learned before it
  (:func:`reduced_direction_field`, :func:`refined_escape_times`).

**Escape time, one definition for theory and simulation.** The escape time of the pair
(student k, teacher p) is the first time :math:`\bar v_{k,p}(t)^2` reaches a threshold (default
1/2). From a record it is interpolated between the two record times that bracket the crossing,
linearly in :math:`\log t` (see :func:`crossing_time`); the theoretical predictors return the
time at which *their* :math:`\bar v_{k,p}^2` reaches the same threshold.
:func:`decoupled_blowup_time` (the paper's :math:`T = 1/(8 a \bar v^2(0))` for :math:`h_4`) is what
the leading-order crossing time of any fixed threshold tends to, relative to T, as
:math:`\bar v^2(0)\to 0`; it orders the greedy selection.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from companion._core import cast_teacher, check_state, check_times, interval_steps, is_axes, summary
from companion._validate import require_finite_array, require_int, require_real, warn
from companion.errors import BlowUpError
from companion.hermite import Activation
from companion.student import overlaps, unit_directions
from companion.teacher import Teacher

# ----------------------------------------------------------------------------------------------
# The vector field
# ----------------------------------------------------------------------------------------------


def vector_field(V: Float[Array, "m d"], teacher: Teacher, axes: bool = False) -> Float[Array, "m d"]:
    r"""Exact population gradient-flow field :math:`\dot V = -\nabla_V L(V)`, shape (m, d).

    With :math:`r_k = \|v_k\|` and the :math:`D_k, g_k` of the module docstring,

    .. math::
        \dot v_k = 2 g_k\, v_k + r_k (I - \bar v_k\bar v_k^\top) D_k
                 = \big(2 g_k - \langle\bar v_k, D_k\rangle\big)\, v_k + r_k D_k ,

    where, with :math:`\odot` the entrywise product,
    :math:`D = (\kappa'(C)\odot a^\top) V^* - (\kappa'(G)\odot w^\top)\bar V` and
    :math:`g = \kappa(C)\,a - \kappa(G)\,w`. The first term is the norm equation
    (:math:`\dot w_k = 2\langle v_k,\dot v_k\rangle = 4 w_k g_k`), the second the tangential one.

    Cost: the Gram matrix :math:`G = \bar V\bar V^\top` and its adjoint product
    :math:`\kappa'(G)\,\mathrm{diag}(w)\,\bar V` (:math:`4m^2d` FLOPs), plus the same two with the
    teacher (:math:`4mPd`), about 1.5x cheaper than ``jax.grad`` of the closed-form loss. Equals
    ``-population_gradient(V, teacher)`` to round-off (tested in float64). Jit-compatible.

    ``axes=True`` promises that the teacher directions are :math:`e_1..e_P` (``directions="axes"``,
    checked by the integrators before they use it): then :math:`C` is the first P columns of
    :math:`\bar V` and the teacher products cost nothing, which halves the cost when P = m.
    """
    w = jnp.sum(V * V, axis=-1)
    unit = unit_directions(V)
    r = jnp.sqrt(jnp.maximum(w, jnp.finfo(V.dtype).tiny))
    act = teacher.activation
    a = teacher.coefficients.astype(V.dtype)
    star = teacher.directions.astype(V.dtype)
    P, d = star.shape
    C = unit[:, :P] if axes else unit @ star.T
    # Round-off can push a self-overlap past 1; kappa is a polynomial, so only accuracy is at stake.
    G = jnp.clip(unit @ unit.T, -1.0, 1.0)
    drive = act.kernel_derivative(C) * a
    drive = jnp.pad(drive, ((0, 0), (0, d - P))) if axes else drive @ star
    D = drive - (act.kernel_derivative(G) * w) @ unit
    g = act.kernel(C) @ a - act.kernel(G) @ w
    radial = jnp.sum(unit * D, axis=-1)
    return (2.0 * g - radial)[:, None] * V + r[:, None] * D


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


class Trajectory(NamedTuple):
    r"""Summaries of a gradient-flow solution at the record times (NumPy arrays, float64 times).

    Attributes:
        times: record times :math:`t_j`, shape (R,), strictly increasing.
        overlaps: :math:`\bar v_{k,p}(t_j)`, shape (R, m, P) (signed; square them for escapes).
        norms_sq: :math:`\|v_k(t_j)\|^2`, shape (R, m).
        loss: closed-form :math:`L(V(t_j))`, shape (R,).
        initial_overlaps: :math:`\bar v_{k,p}(0)`, shape (m, P) (what greedy selection reads).
        initial_norms_sq: :math:`\|v_k(0)\|^2`, shape (m,).
        final_state: :math:`V(t_R)`, shape (m, d), to continue the run.
        steps: number of vector-field steps taken (Euler steps, or accepted adaptive steps).
        dt: the Euler step bound (``nan`` for the adaptive reference).
        method: ``"euler"`` or ``"tsit5"``.
    """

    times: np.ndarray
    overlaps: np.ndarray
    norms_sq: np.ndarray
    loss: np.ndarray
    initial_overlaps: np.ndarray
    initial_norms_sq: np.ndarray
    final_state: np.ndarray
    steps: int
    dt: float
    method: str


def log_times(t_max: float, n: int, t_min: float | None = None) -> np.ndarray:
    r"""n record times spaced evenly in :math:`\log t` from ``t_min`` to ``t_max`` (both included).

    Args:
        t_max: the horizon, > 0.
        n: number of times, >= 2.
        t_min: first time, in (0, t_max); default ``t_max / 1000``.
    Returns:
        float64 array of shape (n,), strictly increasing. Neighbouring times differ by the factor
        :math:`(t_{\max}/t_{\min})^{1/(n-1)}`; 400 times over 3 decades is a 1.7% spacing.
    """
    t_max = require_real("t_max", t_max, low=0.0, low_open=True)
    n = require_int("n", n, 2)
    t_min = (
        t_max / 1000.0
        if t_min is None
        else require_real("t_min", t_min, low=0.0, high=t_max, low_open=True, high_open=True)
    )
    return np.geomspace(t_min, t_max, n)


def default_norm_bound(V0, teacher: Teacher) -> float:
    r"""Divergence bound on :math:`\|v_k\|^2`: :math:`10^3\max(1, \sum_p a_p, \max_k\|v_k(0)\|^2)`.

    Gradient flow never increases L, and L bounds the norms (for an even σ,
    :math:`L \ge \tfrac12\kappa(1)\sum_k w_k^2 - w\cdot\kappa(C)a`): a squared norm a thousand times
    beyond every scale of the problem can only come from a numerical blow-up. Online SGD
    (:mod:`companion.sgd`) uses the same bound. ``V0`` may be (m, d) or stacked (S, m, d), and the
    teacher's coefficients (P,) or stacked (S, P): the bound is the largest over them.
    """
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    w0 = np.asarray(V0, dtype=np.float64)
    return 1e3 * max(1.0, float(np.max(np.sum(np.abs(a), axis=-1))), float(np.max(np.sum(w0 * w0, axis=-1))))


def stability_step(teacher: Teacher) -> float:
    r"""Largest stable Euler step at a learned direction: :math:`1/(2\,\kappa(1)\,a_{\max})`.

    A neuron sitting on :math:`v_p^*` has :math:`\dot w = 4\kappa(1)\,w(a_p - w)`; one Euler step
    of :math:`v` maps :math:`w \mapsto w\,(1 + 2\,dt\,\kappa(1)(a_p - w))^2`, whose fixed point
    :math:`w = a_p` has multiplier :math:`1 - 4\,dt\,\kappa(1)\,a_p`: it is stable only for
    :math:`dt < 1/(2\kappa(1)a_p)`. Accurate escape times need a few times less (see the chapter).
    """
    a_max = float(np.max(np.asarray(teacher.coefficients, dtype=np.float64)))
    return 1.0 / (2.0 * float(teacher.activation.kernel(1.0)) * a_max)


@partial(jax.jit, static_argnames="axes")
def _euler_scan(V0, teacher: Teacher, counts, steps, bound, axes: bool):
    """Euler over consecutive record intervals: interval j takes counts[j] steps of size steps[j]."""

    def advance(carry, interval):
        V, bad = carry
        n, h = interval

        def keep_going(state):
            i, _, bad = state
            return (i < n) & ~bad

        def one_step(state):
            i, V, _ = state
            V = V + h * vector_field(V, teacher, axes)
            w_max = jnp.max(jnp.sum(V * V, axis=-1))
            # NaN compares False, so a NaN norm is caught too.
            return i + 1, V, ~(w_max <= bound)

        done, V, bad = jax.lax.while_loop(keep_going, one_step, (jnp.zeros((), counts.dtype), V, bad))
        return (V, bad), (summary(V, teacher), done, bad)

    (V, _), (records, done, bad) = jax.lax.scan(advance, (V0, jnp.zeros((), bool)), (counts, steps))
    return V, records, done, bad


def euler_flow(
    V0: Float[Array, "m d"],
    teacher: Teacher,
    times,
    dt: float,
    max_norm_sq: float | None = None,
) -> Trajectory:
    r"""Gradient flow by explicit Euler, recording summaries at ``times``.

    The interval between consecutive record times :math:`[t_{j-1}, t_j]` (with :math:`t_{-1} = 0`)
    is split into :math:`n_j = \lceil (t_j - t_{j-1})/dt\rceil` equal steps of size
    :math:`h_j = (t_j - t_{j-1})/n_j \le dt`, so every record lands exactly on its time. When the
    record times are multiples of ``dt`` every step is exactly ``dt`` and the run *is* full-batch
    gradient descent :math:`V \leftarrow V - dt\,\nabla L(V)`. A record time 0 stores V(0).

    The whole run is one jitted dispatch (``lax.scan`` over records, a ``while_loop`` of steps in
    each); only the summaries of :class:`Trajectory` are stored, never the path.

    Args:
        V0: initial state, shape (m, d); its dtype is the computation's dtype.
        teacher: the teacher (its arrays are cast to V0's dtype).
        times: record times, shape (R,), >= 0, strictly increasing, last > 0 (see :func:`log_times`).
        dt: the largest step, > 0. Explicit Euler is unstable beyond :func:`stability_step`.
        max_norm_sq: a norm² beyond this counts as blow-up; default
            :math:`10^3\max(1, \sum_p a_p, \max_k\|v_k(0)\|^2)` (gradient flow cannot get there).
    Raises:
        BlowUpError: the state became non-finite or a norm² exceeded ``max_norm_sq``; the message
            gives the time and a smaller step to try.
    """
    times = check_times(times)
    dt = require_real("dt", dt, low=0.0, low_open=True)
    V0 = check_state(V0, teacher)
    bound = (
        default_norm_bound(V0, teacher)
        if max_norm_sq is None
        else require_real("max_norm_sq", max_norm_sq, low=0.0, low_open=True)
    )
    teacher_c = cast_teacher(teacher, V0.dtype)
    limit = stability_step(teacher)
    if dt >= limit:
        warn(
            f"euler_flow: dt = {dt:g} >= 1/(2 kappa(1) a_max) = {limit:.3g}: a learned neuron's norm is "
            "linearly unstable under this Euler step (it oscillates around a_p or blows up)"
        )
    counts, steps = interval_steps(times, dt)
    V, (C, w, loss), done, bad = _euler_scan(
        V0,
        teacher_c,
        jnp.asarray(counts),
        jnp.asarray(steps, V0.dtype),
        jnp.asarray(bound, V0.dtype),
        axes=is_axes(teacher),
    )
    bad = np.asarray(bad)
    if bad.any():
        j = int(np.argmax(bad))
        t_bad = float((times[j - 1] if j else 0.0) + int(done[j]) * steps[j])
        raise BlowUpError(
            f"euler_flow blew up at t = {t_bad:.6g} (Euler step {int(np.sum(np.asarray(done)[: j + 1]))}): the "
            f"state became non-finite or a norm^2 exceeded {bound:.3g}. dt = {dt:g} is too large; try "
            f"dt = {min(dt / 2, limit / 4):.3g} (a learned neuron's norm is linearly stable only for dt < "
            f"1/(2 kappa(1) a_max) = {limit:.3g}, and accurate escape times need several times less)",
            time=t_bad,
            step=int(np.sum(np.asarray(done)[: j + 1])),
            lr=dt,
        )
    return Trajectory(
        times=times,
        overlaps=np.asarray(C),
        norms_sq=np.asarray(w),
        loss=np.asarray(loss),
        initial_overlaps=np.asarray(overlaps(V0, teacher_c)),
        initial_norms_sq=np.asarray(jnp.sum(V0 * V0, axis=-1)),
        final_state=np.asarray(V),
        steps=int(np.sum(counts)),
        dt=dt,
        method="euler",
    )


def reference_flow(
    V0: Float[Array, "m d"],
    teacher: Teacher,
    times,
    rtol: float = 1e-7,
    atol: float = 1e-10,
    max_steps: int = 200_000,
) -> Trajectory:
    r"""Adaptive reference solution of the same flow: diffrax Tsit5 with a PID step controller.

    Saves the summaries (not the state) at ``times`` through ``SaveAt(ts=times, fn=...)``. Use it
    in float64 (``V0`` of dtype float64) to measure the bias of :func:`euler_flow`.

    Args:
        V0, teacher, times: as for :func:`euler_flow`.
        rtol, atol: the controller's tolerances (> 0).
        max_steps: the most adaptive steps allowed (>= 1).
    Raises:
        BlowUpError: the solver failed (step size collapsed, non-finite state, or too many steps).
    """
    import diffrax

    times = check_times(times)
    rtol = require_real("rtol", rtol, low=0.0, low_open=True)
    atol = require_real("atol", atol, low=0.0, low_open=True)
    max_steps = require_int("max_steps", max_steps, 1)
    V0 = check_state(V0, teacher)
    teacher_c = cast_teacher(teacher, V0.dtype)
    axes = is_axes(teacher)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vector_field(y, args, axes)),
        diffrax.Tsit5(),
        t0=0.0,
        t1=float(times[-1]),
        dt0=None,
        y0=V0,
        args=teacher_c,
        saveat=diffrax.SaveAt(
            subs=[
                diffrax.SubSaveAt(ts=jnp.asarray(times, V0.dtype), fn=lambda t, y, args: summary(y, args)),
                diffrax.SubSaveAt(t1=True),
            ]
        ),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    (C, w, loss), V1 = jax.tree_util.tree_map(np.asarray, solution.ys)
    finite = np.all(np.isfinite(w), axis=1) & np.isfinite(loss)
    if solution.result != diffrax.RESULTS.successful:
        reached = float(times[finite][-1]) if finite.any() else 0.0
        raise RuntimeError(
            f"reference_flow: diffrax stopped early ({solution.result}) after the record at t = "
            f"{reached:.6g}; raise max_steps (now {max_steps}) or loosen rtol/atol"
        )
    if not finite.all():
        t_bad = float(times[int(np.argmin(finite))])
        raise BlowUpError(f"reference_flow: the solution became non-finite by t = {t_bad:.6g}", time=t_bad)
    return Trajectory(
        times=times,
        overlaps=C,
        norms_sq=w,
        loss=loss,
        initial_overlaps=np.asarray(overlaps(V0, teacher_c)),
        initial_norms_sq=np.asarray(jnp.sum(V0 * V0, axis=-1)),
        final_state=V1[-1],
        steps=int(solution.stats["num_accepted_steps"]),
        dt=float("nan"),
        method="tsit5",
    )


# ----------------------------------------------------------------------------------------------
# Escape times read off a record
# ----------------------------------------------------------------------------------------------


def crossing_time(times, values, threshold: float = 0.5) -> np.ndarray:
    r"""First time each recorded curve reaches ``threshold``, interpolated between records.

    Let j be the first record with :math:`y_j \ge` threshold. If j = 0 the answer is
    :math:`t_0`. Otherwise the crossing lies in :math:`(t_{j-1}, t_j]` and is interpolated
    *linearly in* :math:`\log t`:

    .. math::
        \log t^* = \log t_{j-1} + \frac{\text{threshold} - y_{j-1}}{y_j - y_{j-1}}\,
                   (\log t_j - \log t_{j-1})

    (linearly in t when :math:`t_{j-1} = 0`). A curve linear in :math:`\log t` is recovered
    exactly; for the sharp escapes of this model the error is a small fraction of the record
    spacing (1.7% for 400 log-spaced records over 3 decades). Curves that never reach the
    threshold (NaN values count as below) give ``inf``: "not within the record".

    Args:
        times: shape (R,), strictly increasing, >= 0.
        values: shape (R, ...); each trailing index is one curve.
        threshold: the level (any real).
    Returns:
        float64 array of shape ``values.shape[1:]``.
    """
    times = check_times(times)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1 or values.shape[0] != times.size:
        raise ValueError(f"values must have shape (R, ...) with R = len(times) = {times.size}, got {values.shape}")
    threshold = require_real("threshold", threshold)
    above = values >= threshold
    first = np.argmax(above, axis=0)
    crossed = np.any(above, axis=0)
    prev = np.maximum(first - 1, 0)
    y0 = np.take_along_axis(values, prev[None], 0)[0]
    y1 = np.take_along_axis(values, first[None], 0)[0]
    t0, t1 = times[prev], times[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        # y0 < threshold <= y1 whenever first > 0, so the fraction lies in (0, 1]; NaN y0 (a
        # NaN record before the crossing) falls back to the later record time.
        fraction = np.clip(np.nan_to_num((threshold - y0) / (y1 - y0), nan=1.0), 0.0, 1.0)
        log_interp = np.exp(np.log(t0) + fraction * (np.log(t1) - np.log(t0)))
    result = np.where(t0 > 0, log_interp, t0 + fraction * (t1 - t0))
    result = np.where(first == 0, times[0], result)
    return np.where(crossed, result, np.inf)


def pair_escape_times(trajectory: Trajectory, threshold: float = 0.5) -> np.ndarray:
    r"""Escape time of every pair (student k, teacher p): first :math:`\bar v_{k,p}(t)^2 \ge` threshold.

    Returns shape (m, P), ``inf`` where the record never reaches it (see :func:`crossing_time`).
    """
    return crossing_time(trajectory.times, trajectory.overlaps**2, threshold)


def direction_escapes(trajectory: Trajectory, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    r"""For each teacher direction p, the first student to escape on it and when.

    Returns:
        ``(students, times)``, each of shape (P,): the student k minimizing the pair escape time
        :math:`T_{k,p}` (lowest index on a tie; -1 if none crossed) and that time (``inf`` if none).
    """
    pair = pair_escape_times(trajectory, threshold)
    students = np.argmin(pair, axis=0)
    times = pair[students, np.arange(pair.shape[1])]
    return np.where(np.isfinite(times), students, -1), times


# ----------------------------------------------------------------------------------------------
# The leading-order decoupled ODE of one aligned coordinate
# ----------------------------------------------------------------------------------------------


def _exponent_and_rate(activation: Activation) -> tuple[float, float]:
    r"""(I, 4 I σ̂²) for :math:`\dot s = 4I\hat\sigma_{k_*}^2\, a\, s^I`, :math:`I = k_*/2`."""
    k = activation.information_exponent
    return k / 2.0, 2.0 * k * activation.leading_coefficient**2


def _check_positive(name, x):
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"{name} must be finite and > 0")
    return x


def decoupled_solution(t, s0, a, activation: Activation) -> np.ndarray:
    r"""Solution of the leading-order ODE :math:`\dot s = 4I\hat\sigma_{2I}^2\, a\, s^{I}`.

    Here :math:`s = \bar v_{k,p}^2` is one aligned coordinate, :math:`2I = k_*` the information
    exponent and :math:`\hat\sigma_{2I}` the leading Hermite coefficient. Keeping only the teacher
    term of the direction equation at small overlaps, :math:`\dot{\bar v} \approx
    a\,\kappa'(\bar v) \approx 2I\hat\sigma_{2I}^2 a\,\bar v^{2I-1}`, hence

    .. math::
        s(t) = \big[s_0^{-(I-1)} - 4I(I-1)\hat\sigma_{2I}^2\, a\, t\big]^{-1/(I-1)}
        \quad (I > 1), \qquad s(t) = s_0\, e^{4\hat\sigma_2^2 a t} \quad (I = 1).

    For :math:`I > 1` it blows up at :func:`decoupled_blowup_time`; beyond it this returns ``inf``.
    (For an odd :math:`k_*` the same formula holds for a positive overlap.) Broadcasts over t, s0, a.
    """
    I, rate = _exponent_and_rate(activation)
    t = np.asarray(t, dtype=np.float64)
    s0, a = _check_positive("s0", s0), _check_positive("a", a)
    if I == 1:
        return s0 * np.exp(rate * a * t)
    base = s0 ** (-(I - 1)) - rate * (I - 1) * a * t
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, np.abs(base) ** (-1.0 / (I - 1)), np.inf)


def decoupled_blowup_time(s0, a, activation: Activation) -> np.ndarray:
    r"""Blow-up time :math:`T = 1/\big(4I(I-1)\hat\sigma_{2I}^2\, a\, s_0^{I-1}\big)` of the decoupled ODE.

    For :math:`\sigma = h_4` (:math:`I = 2`, :math:`\hat\sigma_4 = 1`) this is the paper's
    :math:`T = 1/(8 a \bar v^2(0))`. ``inf`` when :math:`I = 1` (exponential growth, no blow-up).
    """
    I, rate = _exponent_and_rate(activation)
    s0, a = _check_positive("s0", s0), _check_positive("a", a)
    if I == 1:
        return np.full(np.broadcast(s0, a).shape, np.inf)
    return 1.0 / (rate * (I - 1) * a * s0 ** (I - 1))


def decoupled_crossing_time(s0, a, activation: Activation, threshold: float = 0.5) -> np.ndarray:
    r"""Time at which the decoupled solution reaches ``threshold`` (0 if it starts above).

    :math:`T\,[1 - (s_0/\text{threshold})^{I-1}]` for :math:`I > 1`, and
    :math:`\log(\text{threshold}/s_0)/(4\hat\sigma_2^2 a)` for :math:`I = 1`. This is the
    leading-order prediction under the same escape definition as :func:`crossing_time`.
    """
    threshold = require_real("threshold", threshold, low=0.0, low_open=True)
    I, rate = _exponent_and_rate(activation)
    s0, a = _check_positive("s0", s0), _check_positive("a", a)
    if I == 1:
        return np.maximum(np.log(threshold / s0) / (rate * a), 0.0)
    T = decoupled_blowup_time(s0, a, activation)
    return np.maximum(T * (1.0 - (s0 / threshold) ** (I - 1)), 0.0)


# ----------------------------------------------------------------------------------------------
# Norm growth after alignment
# ----------------------------------------------------------------------------------------------


def logistic_norm(t, w0, a, second_moment: float = 1.0) -> np.ndarray:
    r"""Norm growth of a neuron sitting on :math:`v_p^*`: logistic with rate :math:`4\kappa(1)a_p`.

    With :math:`\bar v_k = v_p^*` and no other neuron on :math:`v_p^*` (and :math:`\hat\sigma_0 = 0`),
    the norm equation reduces to :math:`\dot w = 4\kappa(1)\, w\,(a_p - w)`, the same for every
    information exponent since :math:`\kappa(1) = \sum_j\hat\sigma_j^2 = \mathbb E[\sigma^2]`
    (= ``second_moment``, 1 for a normalized activation). Its solution is

    .. math::
        w(t) = \frac{a_p\, w_0\, e^{rt}}{a_p + w_0 (e^{rt} - 1)}, \qquad r = 4\kappa(1) a_p .

    Broadcasts over t, w0, a.
    """
    t = np.asarray(t, dtype=np.float64)
    w0, a = _check_positive("w0", w0), _check_positive("a", a)
    second_moment = require_real("second_moment", second_moment, low=0.0, low_open=True)
    # Written with e^{-rt} so that large t does not overflow.
    decay = np.exp(-4.0 * second_moment * a * t)
    return a * w0 / (w0 + (a - w0) * decay)


def logistic_time(w0, a, fraction: float = 0.9, second_moment: float = 1.0) -> np.ndarray:
    r"""Time for the logistic norm to go from :math:`w_0` to ``fraction`` · :math:`a_p`.

    :math:`t = \log\big[f(a_p - w_0)/(w_0(1 - f))\big] / (4\kappa(1)a_p)`, with f the fraction
    (in (0, 1)); negative if :math:`w_0` already exceeds :math:`f a_p` (needs :math:`w_0 < a_p`).
    """
    fraction = require_real("fraction", fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    second_moment = require_real("second_moment", second_moment, low=0.0, low_open=True)
    w0, a = _check_positive("w0", w0), _check_positive("a", a)
    return np.log(fraction * (a - w0) / (w0 * (1.0 - fraction))) / (4.0 * second_moment * a)


# ----------------------------------------------------------------------------------------------
# A refined escape-time predictor: one neuron's own direction flow, with deflation
# ----------------------------------------------------------------------------------------------


def reduced_direction_field(c, coefficients, activation: Activation):
    r"""Direction flow of a lone neuron in teacher coordinates, :math:`\dot c`, shape (P,).

    For a single neuron with :math:`c_p = \langle\bar v, v_p^*\rangle` and no other student, the
    direction equation :math:`\dot{\bar v} = (I - \bar v\bar v^\top)\sum_p a_p\kappa'(c_p)v_p^*`
    closes on the P overlaps (the part of :math:`\bar v` orthogonal to the teacher span only
    carries the remaining norm :math:`1 - \|c\|^2`):

    .. math::
        \dot c_p = a_p\,\kappa'(c_p) - c_p \sum_q a_q\, c_q\,\kappa'(c_q).

    For :math:`h_4` and :math:`s_p = c_p^2` this is
    :math:`\dot s_p = 8a_ps_p^2 - 8s_p\sum_q a_q s_q^2`: the leading-order term, its own
    saturation :math:`-8a_ps_p^3` and the pull of every other teacher direction
    :math:`-8s_p\sum_{q\ne p}a_qs_q^2`. Jit-compatible (JAX arrays in, JAX arrays out).
    """
    slope = activation.kernel_derivative(c)
    return coefficients * slope - c * jnp.sum(coefficients * c * slope)


def _logistic(tau, w0, a, kappa1):
    # logistic_norm for JAX arrays; tau >= 0.
    return a * w0 / (w0 + (a - w0) * jnp.exp(-4.0 * kappa1 * a * tau))


def _reduced_rhs(t, c, w, a, activation, escaped_at, escape_norm, kappa1):
    r"""(ċ, ẇ) of the winner with deflated coefficients :math:`a_r - \hat w_r(t)`."""
    tau = jnp.maximum(t - escaped_at, 0.0)
    held = jnp.where(t >= escaped_at, _logistic(tau, escape_norm, a, kappa1), 0.0)
    a_eff = a - held
    dc = reduced_direction_field(c, a_eff, activation)
    dw = 4.0 * w * (jnp.sum(a_eff * activation.kernel(c)) - kappa1 * w)
    return dc, dw


@partial(jax.jit, static_argnames=("activation", "resolution"))
def _refined_scan(C0, W0, a, students, teachers, horizons, activation, threshold, resolution, cap):
    """Greedy-order scan: integrate each winner's (c, w) by RK4 until c_q^2 >= threshold (threshold
    and cap traced: new values do not recompile)."""
    kappa1 = activation.kernel(1.0)

    def stage(carry, x):
        escaped_at, escape_norm = carry
        k, q, horizon = x
        h = horizon / resolution

        def rhs(t, c, w):
            return _reduced_rhs(t, c, w, a, activation, escaped_at, escape_norm, kappa1)

        def rk4(state):
            i, t, c, w, _, _ = state
            k1 = rhs(t, c, w)
            k2 = rhs(t + h / 2, c + h / 2 * k1[0], w + h / 2 * k1[1])
            k3 = rhs(t + h / 2, c + h / 2 * k2[0], w + h / 2 * k2[1])
            k4 = rhs(t + h, c + h * k3[0], w + h * k3[1])
            c_new = c + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            w_new = w + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
            return i + 1, t + h, c_new, w_new, t, c[q] ** 2

        def below(state):
            i, _, c, _, _, _ = state
            return (c[q] ** 2 < threshold) & (i < cap * resolution)

        c0 = C0[k]
        start = (jnp.zeros((), jnp.int32), jnp.zeros((), a.dtype), c0, W0[k], jnp.zeros((), a.dtype), c0[q] ** 2)
        i, t, c, w, t_prev, s_prev = jax.lax.while_loop(below, rk4, start)
        s = c[q] ** 2
        # Linear interpolation inside the last step (the step is ~1/resolution of the time scale).
        fraction = jnp.where(s > s_prev, (threshold - s_prev) / (s - s_prev), 1.0)
        crossing = jnp.where(i == 0, 0.0, t_prev + jnp.clip(fraction, 0.0, 1.0) * (t - t_prev))
        crossing = jnp.where(s >= threshold, crossing, jnp.inf)
        escaped_at = escaped_at.at[q].set(crossing)
        escape_norm = escape_norm.at[q].set(w)
        return (escaped_at, escape_norm), (crossing, w)

    P = a.shape[0]
    init = (jnp.full((P,), jnp.inf, a.dtype), jnp.zeros((P,), a.dtype))
    _, (crossings, norms) = jax.lax.scan(stage, init, (students, teachers, horizons))
    return crossings, norms


def refined_escape_times(
    initial_overlaps,
    initial_norms_sq,
    coefficients,
    activation: Activation,
    students,
    teachers,
    threshold: float = 0.5,
    resolution: int = 2000,
    cap: float = 10.0,
) -> np.ndarray:
    r"""Refined escape times: each winner's own P-dimensional direction flow, with deflation.

    The pairs :math:`(k_s, q_s)` are taken in the given (predicted) learning order, normally the
    greedy selection's. For stage s, the winner's overlaps :math:`c = \bar v_{k_s,\cdot}` with all
    P teacher directions and its norm :math:`w` solve

    .. math::
        \dot c_p = \tilde a_p\,\kappa'(c_p) - c_p\sum_r \tilde a_r c_r\kappa'(c_r), \qquad
        \dot w = 4w\Big(\sum_r \tilde a_r\,\kappa(c_r) - \kappa(1)\,w\Big),

    from :math:`c(0) = \bar v_{k_s}(0)`, :math:`w(0) = \|v_{k_s}(0)\|^2`, with *deflated*
    coefficients :math:`\tilde a_r(t) = a_r - \hat w_r(t)`. Here :math:`\hat w_r(t)` is the norm of
    the neuron holding r: 0 before that pair's predicted escape :math:`\hat T_r` (an earlier stage),
    then logistic (:func:`logistic_norm`) from its norm at :math:`\hat T_r` up to :math:`a_r`. A
    neuron sitting on :math:`v_r^*` with norm :math:`w_r` enters every other neuron's direction and
    norm equations exactly as :math:`-w_r` added to :math:`a_r`, so this is the exact lone-neuron
    flow under the teacher *minus the already learned directions*; it drops only the interaction
    with the small-norm, unaligned students. The predicted time is the first time
    :math:`c_{q_s}^2` reaches ``threshold`` — the definition of :func:`crossing_time`.

    Relative to the leading-order blow-up time it adds the neuron's saturation (:math:`1-s`) and
    the pull of every other teacher direction until that direction is learned.

    Integration: classical RK4 with step :math:`T_{kq}/\text{resolution}`, :math:`T_{kq}` the
    leading-order blow-up time of the pair, stopped at the crossing (linear interpolation in the
    last step) or after ``cap`` · :math:`T_{kq}` (then ``inf``). One jitted scan over the stages.

    Args:
        initial_overlaps: :math:`\bar v_{k,p}(0)`, shape (m, P).
        initial_norms_sq: :math:`\|v_k(0)\|^2`, shape (m,).
        coefficients: :math:`a`, shape (P,).
        activation: :math:`\sigma` (information exponent >= 3).
        students, teachers: the pairs in learning order, shape (n,) each
            (``Selection.students``, ``Selection.teachers``).
        threshold: the escape level of :math:`\bar v^2`, in (0, 1).
        resolution: RK4 steps per leading-order time scale (>= 10).
        cap: give up after this many leading-order times (> 1).
    Returns:
        float64 array of shape (n,): predicted escape times in the given order.
    """
    C0 = require_finite_array("initial_overlaps", np.asarray(initial_overlaps, dtype=np.float64))
    W0 = require_finite_array("initial_norms_sq", np.asarray(initial_norms_sq, dtype=np.float64))
    a = require_finite_array("coefficients", np.asarray(coefficients, dtype=np.float64))
    if C0.ndim != 2 or W0.shape != (C0.shape[0],) or a.shape != (C0.shape[1],):
        raise ValueError(
            "initial_overlaps (m, P), initial_norms_sq (m,) and coefficients (P,) must agree, got "
            f"{C0.shape}, {W0.shape}, {a.shape}"
        )
    students = np.asarray(students, dtype=np.int64).reshape(-1)
    teachers = np.asarray(teachers, dtype=np.int64).reshape(-1)
    if students.shape != teachers.shape:
        raise ValueError(f"students and teachers must have the same length, got {students.size} and {teachers.size}")
    if students.size and (students.min() < 0 or students.max() >= C0.shape[0]):
        raise ValueError(f"students: indices must lie in [0, m) = [0, {C0.shape[0]})")
    if teachers.size and (teachers.min() < 0 or teachers.max() >= C0.shape[1]):
        raise ValueError(f"teachers: indices must lie in [0, P) = [0, {C0.shape[1]})")
    if len(set(teachers.tolist())) != teachers.size:
        raise ValueError("teachers: each teacher direction can be learned once, got a repeat")
    threshold = require_real("threshold", threshold, low=0.0, high=1.0, low_open=True, high_open=True)
    resolution = require_int("resolution", resolution, 10)
    cap = require_real("cap", cap, low=1.0, low_open=True)
    if activation.information_exponent < 3:
        raise ValueError("activation: the refined predictor needs information exponent k* >= 3 (a blow-up race)")
    if students.size == 0:
        return np.zeros(0)
    s0 = C0[students, teachers] ** 2
    with np.errstate(divide="ignore"):
        horizons = decoupled_blowup_time(np.maximum(s0, 1e-300), np.maximum(a[teachers], 1e-300), activation)
    # A zero overlap or coefficient never escapes; give it a finite scale and let the cap say inf.
    horizons = np.where(np.isfinite(horizons), horizons, 1.0)
    crossings, _ = _refined_scan(
        jnp.asarray(C0),
        jnp.asarray(W0),
        jnp.asarray(a),
        jnp.asarray(students),
        jnp.asarray(teachers),
        jnp.asarray(horizons),
        activation,
        jnp.asarray(threshold, jnp.asarray(C0).dtype),
        resolution,
        jnp.asarray(cap, jnp.asarray(C0).dtype),
    )
    result = np.asarray(crossings, dtype=np.float64)
    return np.where((s0 > 0) & (a[teachers] > 0), result, np.inf)


def single_neuron_crossing_time(
    s0, a, activation: Activation, threshold: float = 0.5, resolution: int = 2000
) -> np.ndarray:
    r"""Time for a lone neuron with one teacher direction to reach :math:`\bar v^2 =` threshold.

    The P = 1 case of :func:`reduced_direction_field`: :math:`\dot c = a\,\kappa'(c)(1 - c^2)`,
    i.e. :math:`\dot s = 2a\sqrt s\,\kappa'(\sqrt s)(1-s)` (:math:`= 8as^2(1-s)` for :math:`h_4`).
    For :math:`h_4` its closed form is
    :math:`\frac1{8a}\big[\frac1{s_0} - \frac1{s_*} + \log\frac{s_*(1-s_0)}{s_0(1-s_*)}\big]`
    with :math:`s_* =` threshold; here it is integrated numerically (RK4) for any activation.
    Broadcasts s0 and a (both > 0) to a common shape.
    """
    threshold = require_real("threshold", threshold, low=0.0, high=1.0, low_open=True, high_open=True)
    resolution = require_int("resolution", resolution, 10)
    s0, a = np.broadcast_arrays(_check_positive("s0", s0), _check_positive("a", a))
    horizons = decoupled_blowup_time(s0, a, activation).reshape(-1)
    if not np.all(np.isfinite(horizons)):
        raise ValueError("activation: the single-neuron crossing needs information exponent k* >= 3")

    def one(c0, coefficient, horizon):
        crossings, _ = _refined_scan(
            c0.reshape(1, 1),
            jnp.ones((1,), c0.dtype),
            coefficient.reshape(1),
            jnp.zeros((1,), jnp.int64),
            jnp.zeros((1,), jnp.int64),
            horizon.reshape(1),
            activation,
            float(threshold),
            resolution,
            10.0,
        )
        return crossings[0]

    out = jax.vmap(one)(jnp.asarray(np.sqrt(s0).reshape(-1)), jnp.asarray(a.reshape(-1)), jnp.asarray(horizons))
    return np.asarray(out, dtype=np.float64).reshape(s0.shape)
