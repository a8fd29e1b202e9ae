r"""Experiments of the chapter "Where the assumptions break" (beyond the paper's theorem).

Each experiment drops one of the theorem's assumptions (an even activation with information
exponent :math:`k_* > 2`, orthonormal teacher directions, noiseless labels, plain online SGD) and
records what the model then does, through the same loss, flow and SGD code as the rest of the book:
activations with information exponent 1, 2, 3 against :math:`h_4` (:func:`activation_experiment`),
equicorrelated teacher directions (:func:`correlated_experiment`), minibatches and Adam at equal
samples (:func:`optimizer_experiment`, with the optax trainer of :mod:`companion.optim`), label
noise (:func:`label_noise_experiment`). Every run is cached (namespace ``assumptions_flow``,
version :data:`VERSION`); presets ``test`` / ``book`` / ``paper`` (:func:`get_preset`);
:func:`reproduce_assumptions` runs them all.

Results are typed: a flow run is a :class:`FlowRecord`, each experiment returns a NamedTuple of
them, and the chapter's tables come from the summary functions :func:`window_summary`,
:func:`escape_ratio_summary`, :func:`law_summary`, :func:`correlated_summary`,
:func:`optimizer_summary` and :func:`label_noise_summary`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from companion import optim
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import Trajectory, crossing_time, decoupled_crossing_time, direction_escapes, euler_flow
from companion.experiments import FlowRun
from companion.hermite import Activation, get_activation
from companion.optim import OptimConfig, OptimResult, train
from companion.scaling import PowerLawFit, fit_power_law, tail_beyond
from companion.selection import compare_with_trajectory, greedy_selection
from companion.sgd import SGDConfig, SGDResult, run_sgd, stable_lr
from companion.teacher import Teacher, power_law_coefficients

#: Version of this module's cached flow runs (namespace ``assumptions_flow``): bump it when
#: :func:`run_flow_spec` changes what it computes.
VERSION = "assumptions-1"

_teacher_for = optim.teacher_for


# ----------------------------------------------------------------------------------------------
# Population gradient descent, recorded in full, for any activation and correlated teachers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    r"""One gradient-descent run on the population loss (Euler steps ``dt`` of the gradient flow),
    recorded at ``records`` log-spaced times up to ``horizon`` (from ``horizon / 5000``).

    Attributes:
        model: teacher and initial student; ``model.activation`` may be a coefficient tuple.
        horizon, dt, records: as for :class:`companion.experiments.FlowRun`.
        correlation: equicorrelated teacher directions with this pairwise inner product, or None
            (then ``model.teacher_directions`` applies).
        full: keep the whole overlap record (R, m, P); otherwise only the winners' curves.
    """

    model: ModelConfig
    horizon: float
    dt: float = 0.1
    records: int = 300
    correlation: float | None = None
    full: bool = True

    def __post_init__(self):
        self.flow_run()  # validates horizon, dt and records

    def flow_run(self) -> FlowRun:
        """The same run as a :class:`companion.experiments.FlowRun` (its record times and checks)."""
        return FlowRun(self.model, self.horizon, self.dt, self.records)

    def times(self) -> np.ndarray:
        return self.flow_run().times()

    def teacher(self) -> Teacher:
        """The run's teacher (equicorrelated directions if ``correlation`` is set)."""
        return _teacher_for(self.model, self.correlation)


class FlowRecord(NamedTuple):
    r"""The record of one :class:`FlowSpec` run (NumPy arrays; R records, m neurons, P directions).

    Attributes:
        times: record times, shape (R,).
        loss: closed-form population loss, shape (R,), float64.
        norms_sq: :math:`\|v_k\|^2`, shape (R, m), float32.
        initial_overlaps: :math:`\bar v_{k,p}(0)`, shape (m, P), float64.
        winners: first neuron whose :math:`\bar v_{k,p}^2` reaches 1/2 (-1 if none), shape (P,).
        escapes: when it does (inf if never), shape (P,).
        winner_curves: the winner's :math:`\bar v_{k,p}(t)` (nan if none), shape (R, P), float32.
        second_moment: :math:`\mathbb E f_*^2`.
        overlaps: :math:`\bar v_{k,p}(t)`, shape (R, m, P), float32, if the spec was ``full``; else None.
    """

    times: np.ndarray
    loss: np.ndarray
    norms_sq: np.ndarray
    initial_overlaps: np.ndarray
    winners: np.ndarray
    escapes: np.ndarray
    winner_curves: np.ndarray
    second_moment: float
    overlaps: np.ndarray | None = None

    def as_trajectory(self) -> Trajectory:
        """This record as a :class:`companion.dynamics.Trajectory` (for the selection and escape
        tools); needs a ``full`` record."""
        if self.overlaps is None:
            raise ValueError("as_trajectory: the record was made with full=False and has no overlaps")
        return Trajectory(
            self.times,
            self.overlaps,
            self.norms_sq,
            self.loss,
            self.initial_overlaps,
            self.norms_sq[0],
            np.zeros(0),
            0,
            float("nan"),
            "euler",
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The record as named arrays (what the cache stores)."""
        return {name: np.asarray(value) for name, value in self._asdict().items() if value is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FlowRecord:
        """Inverse of :meth:`arrays`."""
        fields: dict[str, Any] = {name: arrays[name] for name in cls._fields if name in arrays}
        fields["second_moment"] = float(fields["second_moment"])
        return cls(**fields)


def run_flow_spec(spec: FlowSpec, cache: Any = True) -> FlowRecord:
    r"""Run (or load) a :class:`FlowSpec`: Euler steps of the population gradient flow, every
    direction's first neuron to :math:`\bar v_{k,p}^2 = 1/2` and when. ``cache``: as for
    :meth:`companion.cache.Cache.resolve` (namespace ``assumptions_flow``, version :data:`VERSION`)."""
    store = Cache.resolve(cache, namespace="assumptions_flow", version=VERSION)
    if store is not None:
        hit = store.load(spec)
        if hit is not None:
            return FlowRecord.from_arrays(hit[0])
    teacher = spec.teacher()
    V0 = spec.model.student()
    trajectory = euler_flow(V0, teacher, spec.times(), dt=spec.dt)
    winners, escapes = direction_escapes(trajectory)
    P = teacher.P
    curves = trajectory.overlaps[:, np.maximum(winners, 0), np.arange(P)]
    record = FlowRecord(
        times=trajectory.times,
        loss=trajectory.loss.astype(np.float64),
        norms_sq=trajectory.norms_sq.astype(np.float32),
        initial_overlaps=trajectory.initial_overlaps.astype(np.float64),
        winners=winners,
        escapes=escapes,
        winner_curves=np.where(winners >= 0, curves, np.nan).astype(np.float32),
        second_moment=float(teacher.second_moment),
        overlaps=trajectory.overlaps.astype(np.float32) if spec.full else None,
    )
    if store is not None:
        store.save(spec, record.arrays())
    return record


# ----------------------------------------------------------------------------------------------
# Analysis helpers (pure NumPy)
# ----------------------------------------------------------------------------------------------


def normalized_activation(spec, name: str | None = None, centre: bool = True) -> Activation:
    r"""``spec`` (anything :func:`companion.hermite.get_activation` takes) with :math:`\hat\sigma_0`
    removed (``centre``) and scaled to :math:`\sum_k\hat\sigma_k^2 = 1` (the truncation's tail is
    dropped), so that :math:`L(0) \approx \tfrac12` for every activation compared."""
    act = get_activation(spec)
    c = np.asarray(act.coefficients, dtype=np.float64).copy()
    if centre:
        c[0] = 0.0
    c /= np.sqrt(np.sum(c**2))
    return Activation(name or act.name, tuple(float(v) for v in c))


def single_neuron_times(s0, activation: Activation, levels=(0.1, 0.5, 0.9), points: int = 4001) -> np.ndarray:
    r"""Times for a lone neuron to go from :math:`\bar v^2 = s_0` to each level, in units of :math:`1/a`.

    The single-neuron direction flow :math:`\dot c = a\,\kappa'(c)(1-c^2)` (exact for one neuron and
    one teacher direction, any activation) integrates by quadrature:
    :math:`a\,t(s) = \int_{\sqrt{s_0}}^{\sqrt s} dc / (\kappa'(c)(1-c^2))` (trapezoid on a grid
    geometric in c). For :math:`k_* = 2` this is logistic in :math:`\log s`, for :math:`k_* \ge 3`
    the blow-up of the decoupled ODE. Levels below :math:`s_0` give 0.

    Args:
        s0: initial squared overlaps, shape (n,), in (0, 1).
        activation: :math:`\sigma` (its kernel derivative :math:`\kappa'` must be > 0 on the path).
        levels: squared-overlap levels in (0, 1).
    Returns:
        shape (n, len(levels)).
    """
    s0 = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    c0 = np.sqrt(s0)
    kd = np.asarray([k * c for k, c in enumerate(activation.kernel_coefficients)][1:], dtype=np.float64)
    out = np.zeros((s0.size, len(levels)))
    u = np.linspace(0.0, 1.0, points)
    for j, level in enumerate(levels):
        c1 = math.sqrt(level)
        ok = c0 < c1
        lo = c0[ok, None]
        c = lo * (c1 / lo) ** u[None, :]  # geometric grid from c0 to c1
        slope = np.polynomial.polynomial.polyval(c, kd)
        integrand = c * np.log(c1 / lo) / (slope * (1.0 - c**2))
        out[ok, j] = np.trapezoid(integrand, u, axis=1)
    return out


def emergence_windows(record: FlowRecord, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    r"""Relative emergence window of every learned direction: the time the winner's
    :math:`\bar v_{k,p}^2` takes from ``low`` to ``high``, over its escape time (level 1/2).
    Shape (at most the number learned,); directions that start above ``low`` or whose winner never
    reaches ``high`` are left out."""
    curves = record.winner_curves.astype(np.float64) ** 2
    ok = np.isfinite(record.escapes) & (curves[0] < low)
    t = record.times
    t_low = crossing_time(t, np.nan_to_num(curves[:, ok]), low)
    t_high = crossing_time(t, np.nan_to_num(curves[:, ok]), high)
    window = (t_high - t_low) / record.escapes[ok]
    return window[np.isfinite(window)]  # a winner that never reaches ``high`` within the record has none


def winner_initial_overlaps(record: FlowRecord) -> np.ndarray:
    r""":math:`\bar v_{k,p}(0)^2` of each learned direction's winner, shape (number learned,)."""
    ok = np.isfinite(record.escapes)
    return record.initial_overlaps[record.winners[ok], np.flatnonzero(ok)] ** 2


def loss_levels(
    coefficients, first: int = 4, last: int | None = None, second_moment: float = 1.0
) -> tuple[float, float]:
    r"""The loss levels :math:`\tfrac12\mathbb E\sigma^2\sum_{p>\text{first}} a_p^2` and
    :math:`\tfrac12\mathbb E\sigma^2\sum_{p>\text{last}} a_p^2` (default last = P/2): the fit window of
    :func:`loss_exponent`, fixed before any run, in loss rather than time, so that it means the
    same thing for every activation, optimizer and noise level."""
    a = np.sort(np.asarray(coefficients, dtype=np.float64))[::-1]
    last = a.size // 2 if last is None else last
    return 0.5 * second_moment * float(np.sum(a[first:] ** 2)), 0.5 * second_moment * float(np.sum(a[last:] ** 2))


def loss_exponent(x, loss, coefficients, beta: float, first: int = 4, last: int | None = None, min_points: int = 6):
    r"""Power-law fit of ``loss + tail`` against x over the window where it falls from the level of
    :func:`loss_levels` ``first`` to that of ``last`` (both with the tail beyond P added, as in the
    scaling chapter). Returns a :class:`companion.scaling.PowerLawFit`; raises ValueError when the
    curve never reaches the lower level (the window is then undefined: a floor, or too short a run)."""
    a = np.asarray(coefficients, dtype=np.float64)
    tail = tail_beyond(a.size, beta)
    high, low = loss_levels(a, first, last)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64) + tail
    start = crossing_time(np.maximum(x, 1e-300), -y, -(high + tail))
    stop = crossing_time(np.maximum(x, 1e-300), -y, -(low + tail))
    if not np.isfinite(stop):
        raise ValueError(f"loss_exponent: the loss never falls to the window's lower level {low + tail:.3g}")
    return fit_power_law(x, y, window=(float(start), float(stop)), min_points=min_points)


def common_direction_overlaps(overlaps, correlation: float) -> np.ndarray:
    r""":math:`\langle\bar v_k, u\rangle` with :math:`u = \sum_p v_p^*/\|\sum_p v_p^*\|` from the overlaps
    (..., P): :math:`\sum_p \bar v_{k,p} / \sqrt{P(1 + (P-1)\rho)}`."""
    C = np.asarray(overlaps, dtype=np.float64)
    P = C.shape[-1]
    return C.sum(axis=-1) / math.sqrt(P * (1.0 + (P - 1) * correlation))


class FirstFeature(NamedTuple):
    r"""The first neuron to hold a macroscopic weight in a run (:func:`first_feature`).

    Attributes:
        time: when (inf if never; the overlaps are then nan).
        v1: its squared overlap with :math:`v_1^*`, the strongest direction.
        u: its squared overlap with the common direction u.
        best: its largest squared overlap with any teacher direction.
    """

    time: float
    v1: float
    u: float
    best: float


def first_feature(record: FlowRecord, coefficients, correlation: float) -> FirstFeature:
    r"""The first neuron to hold a macroscopic weight (:math:`\|v_k\|^2 \ge a_1/2`): when, and its
    squared overlaps with :math:`v_1^*` (the strongest direction) and with the common direction u.
    Needs a ``full`` record."""
    if record.overlaps is None:
        raise ValueError("first_feature: the record was made with full=False and has no overlaps")
    a = np.asarray(coefficients, dtype=np.float64)
    w = record.norms_sq.astype(np.float64)
    big = np.max(w, axis=1) >= a[0] / 2
    if not big.any():
        return FirstFeature(math.inf, math.nan, math.nan, math.nan)
    r = int(np.argmax(big))
    k = int(np.argmax(w[r]))
    C = record.overlaps[r, k].astype(np.float64)
    return FirstFeature(
        float(record.times[r]),
        float(C[0] ** 2),
        float(common_direction_overlaps(C, correlation) ** 2),
        float(np.max(C**2)),
    )


class TopFeature(NamedTuple):
    r"""The best single-neuron fit near :math:`v_1^*` (:func:`top_feature`).

    Attributes:
        v1: its squared overlap with :math:`v_1^*`.
        u: its squared overlap with the common direction u.
        gain: :math:`F` there over :math:`F(v_1^*)` (at least 1).
    """

    v1: float
    u: float
    gain: float


def top_feature(coefficients, correlation: float, activation: Activation, steps: int = 20000) -> TopFeature:
    r"""The best single-neuron fit of an equicorrelated teacher near :math:`v_1^*`.

    A lone neuron of optimal norm removes :math:`F(\bar v)^2/(2\kappa(1))` from the loss, with
    :math:`F(\bar v) = \sum_p a_p\,\kappa(\langle\bar v, v_p^*\rangle)`. Projected gradient ascent of F on
    the sphere, started at :math:`v_1^*` (in the span of the teacher, where the maximizer lies),
    gives the local maximizer the first learned neuron heads for. Returns its squared overlaps with
    :math:`v_1^*` and with the common direction u, and F there over :math:`F(v_1^*)`.
    """
    a = np.asarray(coefficients, dtype=np.float64)
    P = a.size
    rho = float(correlation)
    root = math.sqrt(1.0 - rho) * np.eye(P) + (math.sqrt(1.0 + (P - 1) * rho) - math.sqrt(1.0 - rho)) / P
    gram = root @ root
    kc = np.asarray(activation.kernel_coefficients, dtype=np.float64)
    kd = np.asarray([k * c for k, c in enumerate(kc)][1:] or [0.0])
    poly = np.polynomial.polynomial.polyval
    alpha = root[0].copy()  # v1 in frame coordinates
    h = 0.05
    for _ in range(steps):
        c = root @ alpha
        grad = root @ (a * poly(c, kd))
        new = alpha + h * (grad - (alpha @ grad) * alpha)
        new /= np.linalg.norm(new)
        if np.max(np.abs(new - alpha)) < 1e-13:
            alpha = new
            break
        alpha = new
    c = root @ alpha
    F = float(a @ poly(c, kc))
    F1 = float(a @ poly(gram[0], kc))
    return TopFeature(float(c[0] ** 2), float(common_direction_overlaps(c, rho) ** 2), F / F1)


def merge_correlation(coefficients, activation: Activation, tol: float = 1e-4) -> float:
    r"""The correlation :math:`\rho^*` above which the best single-neuron fit near :math:`v_1^*`
    (:func:`top_feature`) lies closer to the common direction u than to :math:`v_1^*`: beyond it the
    first "step" of the staircase is a merged feature, not a teacher direction. Bisection on
    (0, 1); ``nan`` if there is no crossing."""

    def closer_to_u(rho: float) -> bool:
        f = top_feature(coefficients, rho, activation)
        return f.u > f.v1

    lo, hi = 0.0, 0.99
    if closer_to_u(lo) or not closer_to_u(hi):
        return math.nan
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if closer_to_u(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def unlearned_loss(overlaps, coefficients, threshold: float = 0.5, second_moment: float = 1.0) -> np.ndarray:
    r"""The loss still owed for directions no neuron has escaped on:
    :math:`\tfrac12\mathbb E\sigma^2\sum_p a_p^2\,\mathbf 1\{\max_k\bar v_{k,p}^2 < \text{threshold}\}`.

    ``overlaps`` has shape (..., m, P); the result has shape (...). Subtracted from the loss, it
    leaves the part due to fluctuations and partial learning of the escaped directions (for
    orthonormal teachers), which is what a noise floor is made of.
    """
    C = np.asarray(overlaps, dtype=np.float64)
    a = np.asarray(coefficients, dtype=np.float64)
    missing = np.max(C**2, axis=-2) < threshold
    return 0.5 * second_moment * np.sum(missing * a**2, axis=-1)


def noise_floor(lr: float, batch: int, noise: float, teacher: Teacher) -> float:
    r"""Predicted excess population loss of constant-step SGD with label noise, at the teacher.

    Linearizing at the global minimum (one neuron :math:`v = \sqrt{a_p}\,v_p^*` per direction), SGD
    on fresh samples is least-mean-squares with features :math:`\phi = \nabla_V f(x)`, whose
    stationary excess risk for small :math:`\eta` is :math:`\tfrac{\eta\,\sigma_\varepsilon^2}{4B}\,
    \mathrm{tr}\,H`, :math:`H = \mathbb E[\phi\phi^\top]`. Here
    :math:`\mathbb E\|\nabla_{v_k}f\|^2 = a_p\,(4\kappa(1) + (d-1)\,\mathbb E\sigma'(z)^2)`, so

    .. math::
        L_{\text{floor}} = \frac{\eta\,\sigma_\varepsilon^2}{4B}
            \Big(4\kappa(1) + (d-1)\sum_k k\,\hat\sigma_k^2\Big)\sum_p a_p
        \qquad(h_4:\ \eta\,\sigma_\varepsilon^2\, d\sum_p a_p / B).
    """
    act = teacher.activation
    kc = np.asarray(act.kernel_coefficients, dtype=np.float64)
    slope_sq = float(np.sum(np.arange(kc.size) * kc))
    trace = (4.0 * float(np.sum(kc)) + (teacher.d - 1) * slope_sq) * float(
        np.sum(np.asarray(teacher.coefficients, np.float64))
    )
    return lr * noise**2 * trace / (4.0 * batch)


# ----------------------------------------------------------------------------------------------
# The chapter's experiments and their presets
# ----------------------------------------------------------------------------------------------

_RELU = normalized_activation("relu", "relu")


@dataclass(frozen=True)
class AssumptionsPreset:
    r"""Sizes of every experiment of the chapter (all runs are cached one by one).

    Attributes:
        activations: ``(label, activation)`` pairs; an activation is a name or a coefficient tuple.
        window_model, window_dims, window_horizon: emergence windows at each d of ``window_dims``
            (``window_model`` with d replaced), horizon ``window_horizon * d``.
        law_model, law_horizon, law_seeds: loss curves for the power-law fits.
        correlated_model, correlations, correlated_seeds, correlated_horizon: teachers with
            equicorrelated directions.
        optim_model, optim_samples, optim_runs, optim_seeds: minibatch SGD / Adam at equal samples;
            a run is ``(label, optimizer, batch, lr or None, teacher_directions)`` (None: half the
            measured SGD stability edge, :func:`companion.sgd.stable_lr`).
        noise_model, noise_levels, noise_batch, noise_horizon, noise_seeds: online SGD with label noise.
    """

    activations: tuple
    window_model: ModelConfig
    window_dims: tuple[int, ...]
    window_horizon: float
    law_model: ModelConfig
    law_horizon: float
    law_seeds: tuple[int, ...]
    correlated_model: ModelConfig
    correlations: tuple[float, ...]
    correlated_seeds: tuple[int, ...]
    correlated_horizon: float
    optim_model: ModelConfig
    optim_samples: int
    optim_runs: tuple
    optim_seeds: tuple[int, ...]
    noise_model: ModelConfig
    noise_levels: tuple[float, ...]
    noise_batch: int
    noise_horizon: float
    noise_seeds: int

    def replace(self, **changes) -> AssumptionsPreset:
        return dataclasses.replace(self, **changes)


ACTIVATIONS = (
    ("h4", "h4"),
    ("(h2+h4)/√2", (0.0, 0.0, 2**-0.5, 0.0, 2**-0.5)),
    ("h3", "h3"),
    ("relu", _RELU.coefficients),
)

_OPTIM_RUNS = (
    ("SGD, B = 16", "sgd", 16, None, "axes"),
    ("SGD, B = 64", "sgd", 64, None, "axes"),
    ("Adam, B = 16, axes", "adam", 16, 3e-4, "axes"),
    ("Adam, B = 16, random frame", "adam", 16, 3e-4, "random"),
)

PRESETS: dict[str, AssumptionsPreset] = {
    "test": AssumptionsPreset(
        activations=ACTIVATIONS,
        window_model=ModelConfig(d=16, P=4, m=8),
        window_dims=(16, 32),
        window_horizon=4.0,
        law_model=ModelConfig(d=16, P=8, m=16),
        law_horizon=150.0,
        law_seeds=(0,),
        correlated_model=ModelConfig(d=16, P=4, m=8),
        correlations=(0.0, 0.5),
        correlated_seeds=(0,),
        correlated_horizon=100.0,
        optim_model=ModelConfig(d=16, P=4, m=8),
        optim_samples=80_000,
        optim_runs=(("SGD, B = 16", "sgd", 16, None, "axes"), ("Adam, B = 16", "adam", 16, 3e-3, "random")),
        optim_seeds=(0,),
        noise_model=ModelConfig(d=16, P=4, m=8),
        noise_levels=(0.0, 0.5),
        noise_batch=8,
        noise_horizon=20.0,
        noise_seeds=1,
    ),
    "book": AssumptionsPreset(
        activations=ACTIVATIONS,
        window_model=ModelConfig(d=64, P=16, m=32),
        window_dims=(64, 128, 256),
        window_horizon=4.0,
        law_model=ModelConfig(d=128, P=64, m=128),
        law_horizon=150.0,
        law_seeds=(0, 1),
        correlated_model=ModelConfig(d=64, P=16, m=32),
        correlations=(-0.05, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
        correlated_seeds=(0, 1, 2),
        correlated_horizon=600.0,
        optim_model=ModelConfig(d=32, P=16, m=32),
        optim_samples=1_000_000,
        optim_runs=_OPTIM_RUNS,
        optim_seeds=(0, 1, 2),
        noise_model=ModelConfig(d=32, P=16, m=32),
        noise_levels=(0.0, 0.1, 0.3, 1.0),
        noise_batch=16,
        noise_horizon=150.0,
        noise_seeds=2,
    ),
    # The paper's teacher (d = 2048, P = 1024, h4, beta = 0.8) through the same code, for one GPU.
    "paper": AssumptionsPreset(
        activations=ACTIVATIONS,
        window_model=ModelConfig(d=2048, P=1024, m=2048),
        window_dims=(512, 1024, 2048),
        window_horizon=12.0,
        law_model=ModelConfig(d=2048, P=1024, m=2048),
        law_horizon=2.0e4,
        law_seeds=(0,),
        correlated_model=ModelConfig(d=2048, P=1024, m=2048),
        correlations=(0.0, 0.05, 0.1, 0.2, 0.3),
        correlated_seeds=(0,),
        correlated_horizon=2.0e4,
        optim_model=ModelConfig(d=2048, P=1024, m=1024),
        optim_samples=500_000_000,
        optim_runs=(
            ("SGD, B = 256", "sgd", 256, None, "axes"),
            ("Adam, B = 256, random frame", "adam", 256, 1e-4, "random"),
        ),
        optim_seeds=(0,),
        noise_model=ModelConfig(d=2048, P=1024, m=1024),
        noise_levels=(0.0, 1.0),
        noise_batch=256,
        noise_horizon=5.0e3,
        noise_seeds=1,
    ),
}


def get_preset(name: str, **overrides) -> AssumptionsPreset:
    """A preset of the chapter's experiments (``test``, ``book``, ``paper``), fields overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name].replace(**overrides)


def _iterate(items: Sequence, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="run")


class ActivationRuns(NamedTuple):
    """Records of :func:`activation_experiment`.

    Attributes:
        windows: ``windows[label][d]``: one record (``full=False``) per activation and dimension.
        laws: ``laws[label]``: one record (``full=False``) per seed, for the loss power law.
    """

    windows: dict[str, dict[int, FlowRecord]]
    laws: dict[str, list[FlowRecord]]


class CorrelatedRuns(NamedTuple):
    """Records of :func:`correlated_experiment`: ``runs[rho]``, one full record per seed."""

    runs: dict[float, list[FlowRecord]]


class OptimizerRuns(NamedTuple):
    """Results of :func:`optimizer_experiment`: ``runs[label]`` and ``configs[label]``, one per seed."""

    runs: dict[str, list[OptimResult]]
    configs: dict[str, list[OptimConfig]]


class LabelNoiseRuns(NamedTuple):
    """Results of :func:`label_noise_experiment`: ``runs[noise]`` (all seeds) and ``configs[noise]``."""

    runs: dict[float, SGDResult]
    configs: dict[float, SGDConfig]


def activation_experiment(p: AssumptionsPreset, progress: bool = False, cache: Any = True) -> ActivationRuns:
    r"""Emergence windows (one record per activation and d of ``p.window_dims``, horizon
    ``p.window_horizon * d``) and loss curves for the power-law fit (one record per seed of
    ``p.law_seeds``) for every activation of the preset."""
    windows: dict[str, dict[int, FlowRecord]] = {}
    laws: dict[str, list[FlowRecord]] = {}
    jobs = [(label, act, d) for label, act in p.activations for d in p.window_dims]
    for label, act, d in _iterate(jobs, progress, "activations: windows"):
        model = p.window_model.replace(d=d, activation=act)
        windows.setdefault(label, {})[d] = run_flow_spec(FlowSpec(model, p.window_horizon * d, full=False), cache)
    jobs = [(label, act, s) for label, act in p.activations for s in p.law_seeds]
    for label, act, s in _iterate(jobs, progress, "activations: loss curves"):
        model = p.law_model.replace(activation=act, seed=s)
        laws.setdefault(label, []).append(run_flow_spec(FlowSpec(model, p.law_horizon, records=300, full=False), cache))
    return ActivationRuns(windows, laws)


def correlated_experiment(p: AssumptionsPreset, progress: bool = False, cache: Any = True) -> CorrelatedRuns:
    r"""One full record per seed for every correlation of the preset (400 records each)."""
    runs: dict[float, list[FlowRecord]] = {}
    jobs = [(rho, s) for rho in p.correlations for s in p.correlated_seeds]
    for rho, s in _iterate(jobs, progress, "correlated teachers"):
        spec = FlowSpec(p.correlated_model.replace(seed=s), p.correlated_horizon, records=400, correlation=rho)
        runs.setdefault(rho, []).append(run_flow_spec(spec, cache))
    return CorrelatedRuns(runs)


def optimizer_configs(p: AssumptionsPreset) -> dict[str, list[OptimConfig]]:
    """The :class:`OptimConfig` of every run of the optimizer comparison (label -> one per seed)."""
    out = {}
    for label, name, batch, lr, frame in p.optim_runs:
        rate = stable_lr(p.optim_model.d, batch) if lr is None else lr
        out[label] = [
            OptimConfig(
                p.optim_model.replace(seed=s, teacher_directions=frame),
                name,
                rate,
                steps=p.optim_samples // batch,
                batch=batch,
                record=300,
            )
            for s in p.optim_seeds
        ]
    return out


def optimizer_experiment(p: AssumptionsPreset, progress: bool = False, cache: Any = True) -> OptimizerRuns:
    r"""One :class:`companion.optim.OptimResult` per run and seed, all with the same number of samples."""
    configs = optimizer_configs(p)
    jobs = [(label, c) for label, cs in configs.items() for c in cs]
    runs: dict[str, list[OptimResult]] = {}
    for label, config in _iterate(jobs, progress, "optimizers"):
        runs.setdefault(label, []).append(train(config, cache))
    return OptimizerRuns(runs, configs)


def label_noise_configs(p: AssumptionsPreset) -> dict[float, SGDConfig]:
    """The :class:`companion.sgd.SGDConfig` of each label-noise level (online SGD engine)."""
    lr = stable_lr(p.noise_model.d, p.noise_batch)
    steps = int(round(p.noise_horizon / lr))
    return {
        s: SGDConfig(
            p.noise_model, lr=lr, steps=steps, batch=p.noise_batch, record=300, seeds=p.noise_seeds, label_noise=s
        )
        for s in p.noise_levels
    }


def label_noise_experiment(p: AssumptionsPreset, progress: bool = False, cache: Any = True) -> LabelNoiseRuns:
    r"""A :class:`companion.sgd.SGDResult` (all seeds) per label-noise level."""
    configs = label_noise_configs(p)
    runs = {s: run_sgd(c, cache=cache, progress=progress) for s, c in configs.items()}
    return LabelNoiseRuns(runs, configs)


# ----------------------------------------------------------------------------------------------
# The chapter's analyses: typed summaries of the experiments
# ----------------------------------------------------------------------------------------------


def _half_spread(values) -> float:
    """Half the range of ``values`` (the "±" of a seed spread)."""
    return float(np.ptp(np.asarray(values, dtype=np.float64))) / 2


class WindowStats(NamedTuple):
    """Relative emergence windows of one run (:func:`window_summary`): the measured median and
    quartiles over the learned directions, and the median single-neuron prediction at the winners' s0."""

    median: float
    q25: float
    q75: float
    theory: float


def window_summary(runs: ActivationRuns, activations: Mapping[str, Activation]) -> dict[tuple[str, int], WindowStats]:
    r"""Measured relative emergence windows :math:`[t(0.9) - t(0.1)]/t(0.5)` (:func:`emergence_windows`)
    against the single-neuron quadrature (:func:`single_neuron_times`) at each winner's own
    :math:`s_0`, for every activation label and dimension: ``{(label, d): WindowStats}``."""
    out = {}
    for label, act in activations.items():
        for d, rec in runs.windows[label].items():
            measured = emergence_windows(rec)
            t = single_neuron_times(winner_initial_overlaps(rec), act, levels=(0.1, 0.5, 0.9))
            theory = (t[:, 2] - t[:, 0]) / t[:, 1]
            out[label, d] = WindowStats(
                float(np.median(measured)),
                float(np.quantile(measured, 0.25)),
                float(np.quantile(measured, 0.75)),
                float(np.median(theory)),
            )
    return out


class EscapeRatio(NamedTuple):
    """Measured escape time over the decoupled ODE's prediction (:func:`escape_ratio_summary`): median
    and quartiles over the ``directions`` learned."""

    median: float
    q25: float
    q75: float
    directions: int


def escape_ratio_summary(
    runs: ActivationRuns, activations: Mapping[str, Activation], p: AssumptionsPreset, d: int | None = None
) -> dict[str, EscapeRatio]:
    r"""For each activation, measured escape times over the leading-order prediction
    :func:`companion.dynamics.decoupled_crossing_time` (the decoupled ODE run to 1/2 from the winner's
    :math:`s_0`), at dimension ``d`` (default the largest of ``p.window_dims``)."""
    d = p.window_dims[-1] if d is None else d
    if d not in p.window_dims:
        raise ValueError(f"escape_ratio_summary: d must be one of the preset's window_dims {p.window_dims}, got {d}")
    a = power_law_coefficients(p.window_model.P, p.window_model.beta)
    out = {}
    for label, act in activations.items():
        rec = runs.windows[label][d]
        ok = np.isfinite(rec.escapes)
        ratio = rec.escapes[ok] / decoupled_crossing_time(winner_initial_overlaps(rec), a[ok], act)
        out[label] = EscapeRatio(
            float(np.median(ratio)), float(np.quantile(ratio, 0.25)), float(np.quantile(ratio, 0.75)), int(ok.sum())
        )
    return out


class LawStats(NamedTuple):
    r"""The loss power law of one activation (:func:`law_summary`).

    Attributes:
        exponent, exponent_spread: mean over seeds of the fitted loss exponent, and half the seed spread.
        gamma, gamma_spread: the escape-time law :math:`T_p \propto a_p^{-\gamma}` (mean, half spread;
            nan where fewer than 6 directions of the window escaped).
        implied: the exponent :math:`(1-2\beta)/(\beta\gamma)` it predicts.
        escaped: directions escaped by the end of seed 0's run.
    """

    exponent: float
    exponent_spread: float
    gamma: float
    gamma_spread: float
    implied: float
    escaped: int


def law_summary(runs: ActivationRuns, p: AssumptionsPreset, first: int = 4) -> dict[str, LawStats]:
    r"""Loss exponents (:func:`loss_exponent`, window from ``first`` to P/2 learned directions) and the
    escape-time law fitted on the same directions :math:`p = \text{first}+1..P/2`, per activation
    label. A run whose loss never reaches the window's lower level has exponent nan."""
    law = p.law_model
    a = power_law_coefficients(law.P, law.beta)
    index = np.arange(law.P)
    same = (index >= first) & (index < law.P // 2)
    out = {}
    for label, recs in runs.laws.items():
        slopes, gammas = [], []
        for rec in recs:
            try:
                slopes.append(loss_exponent(rec.times, rec.loss, a, law.beta, first=first).slope)
            except ValueError:
                slopes.append(math.nan)
            ok = same & np.isfinite(rec.escapes)
            # gamma needs escapes; where fewer than 6 of these directions escaped there is none
            gammas.append(-fit_power_law(a[ok], rec.escapes[ok], min_points=6).slope if ok.sum() >= 6 else math.nan)
        gamma = float(np.mean(gammas))
        implied = (1 - 2 * law.beta) / (law.beta * gamma)
        escaped = int(np.isfinite(recs[0].escapes).sum())
        out[label] = LawStats(
            float(np.mean(slopes)), _half_spread(slopes), gamma, _half_spread(gammas), implied, escaped
        )
    return out


class CorrelatedStats(NamedTuple):
    r"""One correlation of :func:`correlated_summary` (means over seeds, "spread" = half the seed range).

    Attributes:
        first_v1, first_u: squared overlaps of the first learned neuron (:func:`first_feature`) with
            :math:`v_1^*` and with the common direction u.
        top: the best single-neuron fit (:func:`top_feature`).
        match, match_spread: fraction of directions whose greedy winner is right.
        time_ratio, time_ratio_spread: median observed over greedy-predicted escape time (level 0.9).
        final_loss: the largest final loss over seeds, relative to :math:`\mathbb E f_*^2`.
    """

    first_v1: float
    first_u: float
    top: TopFeature
    match: float
    match_spread: float
    time_ratio: float
    time_ratio_spread: float
    final_loss: float


class CorrelatedSummary(NamedTuple):
    """:func:`correlated_summary`: the merge correlation of the teacher and one entry per correlation."""

    rho_star: float
    by_correlation: dict[float, CorrelatedStats]


def correlated_summary(runs: CorrelatedRuns, p: AssumptionsPreset, threshold: float = 0.9) -> CorrelatedSummary:
    r"""The first learned feature against the best single-neuron fit, and greedy maximum selection
    (:func:`companion.selection.greedy_selection` on the initial overlaps with the correlated
    directions) against the flow at escape level ``threshold``, for every correlation."""
    model = p.correlated_model
    a = power_law_coefficients(model.P, model.beta)
    act = get_activation(model.activation)
    out = {}
    for rho, recs in runs.runs.items():
        feats = [first_feature(r, a, rho) for r in recs]
        matches, ratios = [], []
        for r in recs:
            comparison = compare_with_trajectory(
                greedy_selection(r.initial_overlaps, a, act), r.as_trajectory(), threshold=threshold
            )
            matches.append(comparison.match_fraction)
            ok = np.isfinite(comparison.observed_time) & np.isfinite(comparison.predicted_time)
            ratios.append(np.median(comparison.observed_time[ok] / comparison.predicted_time[ok]))
        out[rho] = CorrelatedStats(
            float(np.mean([f.v1 for f in feats])),
            float(np.mean([f.u for f in feats])),
            top_feature(a, rho, act),
            float(np.mean(matches)),
            _half_spread(matches),
            float(np.mean(ratios)),
            _half_spread(ratios),
            float(max(r.loss[-1] / r.second_moment for r in recs)),
        )
    return CorrelatedSummary(merge_correlation(a, act), out)


class OptimizerStats(NamedTuple):
    """One run of :func:`optimizer_summary` (over seeds).

    Attributes:
        lr: its learning rate.
        reach, reach_min, reach_max: samples to the window's lower level (median, range; inf if never).
        exponent, exponent_spread: loss exponent against samples (mean over seeds that reach the
            window, half their range).
        floor: the loss beyond unescaped directions at the end (:func:`end_loss`: median over
            seeds of the median over the last ``late`` records).
    """

    lr: float
    reach: float
    reach_min: float
    reach_max: float
    exponent: float
    exponent_spread: float
    floor: float


def end_loss(results: Sequence[OptimResult], a, late: int = 30) -> float:
    r"""The loss beyond unescaped directions at the end of training: the median over the runs in
    ``results`` (seeds) of each run's median over its last ``late`` records (:func:`unlearned_loss`
    subtracted), in float64.

    SGD's value is stable to two digits across machines. At a fixed learning rate Adam ends on a
    fluctuating floor whose value moves by tens of percent when the start moves by one ulp, the
    thread count or the instruction set changes (``make portability``), so chapters print its
    order of magnitude (:func:`companion.report.magnitude`).
    """
    return float(
        np.median([np.median(np.asarray(r.loss - unlearned_loss(r.overlaps, a), np.float64)[-late:]) for r in results])
    )


def optimizer_summary(
    runs: OptimizerRuns, p: AssumptionsPreset, first: int = 2, last: int = 12, late: int = 30
) -> dict[str, OptimizerStats]:
    r"""Samples to reach the loss level of ``last`` learned directions (plus the tail beyond P), the
    loss exponent against samples on the window ``first``..``last`` (:func:`loss_exponent`), and the
    end value of the loss beyond unescaped directions (:func:`unlearned_loss` subtracted), per run."""
    beta = p.optim_model.beta
    a = power_law_coefficients(p.optim_model.P, beta)
    tail = tail_beyond(p.optim_model.P, beta)
    level = loss_levels(a, first, last)[1] + tail
    out = {}
    for label, results in runs.runs.items():
        n_reach, slopes = [], []
        for r in results:
            n = float(crossing_time(np.maximum(r.samples, 1).astype(float), -(r.loss + tail), -level))
            n_reach.append(n)
            slopes.append(loss_exponent(r.samples, r.loss, a, beta, first, last).slope if np.isfinite(n) else np.nan)
        reach, slope = np.array(n_reach), np.array(slopes)
        slope = slope[np.isfinite(slope)]  # seeds that reach the window
        floor = end_loss(results, a, late)
        out[label] = OptimizerStats(
            runs.configs[label][0].lr,
            float(np.median(reach)),
            float(reach.min()),
            float(reach.max()),
            float(np.mean(slope)) if slope.size else math.nan,
            _half_spread(slope) if slope.size else math.nan,
            float(floor),
        )
    return out


class NoiseStats(NamedTuple):
    r"""One label-noise level of :func:`label_noise_summary`.

    Attributes:
        predicted: the linearized floor :func:`noise_floor`.
        excess, excess_spread: loss beyond unescaped directions over the noiseless run's, median over
            the last ``late`` records, mean over seeds and half their range.
        fit: the power-law fit of the mean loss plus tail on the noiseless run's window.
        beyond: the loss beyond unescaped directions, shape (S, R).
    """

    predicted: float
    excess: float
    excess_spread: float
    fit: PowerLawFit
    beyond: np.ndarray


def label_noise_summary(
    runs: LabelNoiseRuns, p: AssumptionsPreset, first: int = 2, last: int = 12, late: int = 30
) -> dict[float, NoiseStats]:
    r"""Measured noise floors against :func:`noise_floor`, paired with the noiseless run (same inputs),
    and the exponent on the window where the noiseless run's mean loss falls from the level of
    ``first`` to that of ``last`` learned directions, fixed for every noise level. Needs the level 0."""
    if 0.0 not in runs.runs:
        raise ValueError(
            f"label_noise_summary: the noise levels must include 0.0 (the control), got {sorted(runs.runs)}"
        )
    nm = p.noise_model
    teacher = nm.teacher()
    a = power_law_coefficients(nm.P, nm.beta)
    tail = tail_beyond(nm.P, nm.beta)
    beyond = {s: r.loss - unlearned_loss(r.overlaps, a) for s, r in runs.runs.items()}
    base = beyond[0.0][:, -late:]
    clean = runs.runs[0.0]
    window = loss_exponent(clean.times, clean.loss.mean(axis=0), a, nm.beta, first=first, last=last).window
    out = {}
    for s, result in runs.runs.items():
        c = runs.configs[s]
        excess = np.median(beyond[s][:, -late:] - base, axis=1)  # per seed
        fit = fit_power_law(result.times, result.loss.mean(axis=0) + tail, window=window)
        out[s] = NoiseStats(
            noise_floor(c.lr, c.batch, s, teacher), float(excess.mean()), _half_spread(excess), fit, beyond[s]
        )
    return out


def reproduce_assumptions(preset: str, progress: bool = False) -> dict:
    """``python -m companion reproduce assumptions --preset ...``: run (or load) every experiment of
    the chapter "Where the assumptions break" and return a JSON-able summary."""
    p = get_preset(preset)
    acts = activation_experiment(p, progress)
    corr = correlated_experiment(p, progress)
    opt = optimizer_experiment(p, progress)
    noise = label_noise_experiment(p, progress)
    a_law = power_law_coefficients(p.law_model.P, p.law_model.beta)
    summary: dict[str, dict[str, Any]] = {"activations": {}, "correlated": {}, "optimizers": {}, "label_noise": {}}
    for label, recs in acts.laws.items():
        slopes: list[float | None] = []
        for rec in recs:
            try:
                slopes.append(loss_exponent(rec.times, rec.loss, a_law, p.law_model.beta).slope)
            except ValueError:
                slopes.append(None)
        windows = {d: emergence_windows(r) for d, r in acts.windows[label].items()}
        summary["activations"][label] = {
            "loss_exponent": slopes,
            "window": {d: float(np.median(w)) if w.size else None for d, w in windows.items()},
        }
    for rho, flows in corr.runs.items():
        summary["correlated"][str(rho)] = {"final_loss": [float(r.loss[-1]) for r in flows]}
    for label, results in opt.runs.items():
        summary["optimizers"][label] = {"final_loss": [float(r.loss[-1]) for r in results]}
    for s, result in noise.runs.items():
        summary["label_noise"][str(s)] = {"final_loss": result.loss[:, -1].tolist()}
    return summary
