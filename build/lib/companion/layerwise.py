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

**Modules.** The engines are in :mod:`companion._layerwise_engine`, the width theory in
:mod:`companion._layerwise_theory`; this module holds the experiments and presets and re-exports
every public name of both.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from companion._core import log_steps
from companion._layerwise_engine import (  # noqa: F401  (re-exported)
    PHASE_TWO_METHODS,
    LayerwiseRun,
    PhaseOne,
    Readout,
    check_ridge,
    correlation_field,
    correlation_objective,
    feature_moments,
    least_squares,
    phase_one_flow,
    phase_one_sgd,
    phase_one_stability_step,
    phase_two,
    phase_two_curve,
    phase_two_population,
    phase_two_samples,
    readout_loss,
    solve_ridge,
    train_layerwise,
)
from companion._layerwise_theory import (  # noqa: F401  (re-exported)
    GrowthFits,
    coverage_probability,
    first_cover,
    growth_fits,
    landed_directions,
    median_band,
    predicted_winners,
    width_quantile,
    winner_probabilities,
)
from companion._validate import require_int, require_real
from companion.cache import Cache
from companion.config import ModelConfig
from companion.dynamics import (
    decoupled_blowup_time,
    euler_flow,
)
from companion.hermite import get_activation
from companion.student import init_student
from companion.teacher import Teacher, make_teacher, power_law_coefficients

#: Bump when a run's meaning changes, so that old cache entries are not reused.
VERSION = "1"


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
            raise ValueError(
                f"first_step: the smallest budget batch * first_step must exceed readout_chunk = "
                f"{self.readout_chunk}, got {self.batch * self.first_step}"
            )
        check_ridge(self.ridge)
        require_real("threshold", self.threshold, low=0.5, high=1.0, high_open=True)

    def replace(self, **changes) -> SampleComparison:
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


class CurveSummary(NamedTuple):
    r"""One scheme's sample curves (:class:`SampleCurves`) reduced to what the chapter reports.

    Attributes:
        final: median over seeds of the loss at the largest budget.
        final_max: the largest seed's loss there.
        best: median over seeds of each curve's lowest loss over the budgets.
        missed: median over seeds of :math:`\tfrac12\sum_{q\notin S}a_q^2` at the largest budget.
        recovered: directions recovered per seed at the largest budget, shape (S,).
        drops: how often, over seeds and consecutive budgets, the recovered count fell.
        precision, precision_low: median and smallest :math:`\max_k c_{kq}^2` over the directions
            held (:math:`\ge 1/2`) at the largest budget, all seeds pooled (NaN if none is held).
    """

    final: float
    final_max: float
    best: float
    missed: float
    recovered: np.ndarray
    drops: int
    precision: float
    precision_low: float


def summarize_curves(curves: SampleCurves, scheme: str) -> CurveSummary:
    """The :class:`CurveSummary` of ``scheme`` (``"single"`` or ``"layer"``) in ``curves``."""
    if scheme not in ("single", "layer"):
        raise ValueError(f"scheme must be 'single' or 'layer', got {scheme!r}")
    loss = np.asarray(getattr(curves, f"{scheme}_loss"), np.float64)
    recovered = np.asarray(getattr(curves, f"{scheme}_recovered"))
    best = np.asarray(getattr(curves, f"{scheme}_best"), np.float64)[:, -1]
    held = best[best >= 0.5]
    return CurveSummary(
        final=float(np.median(loss[:, -1])),
        final_max=float(loss[:, -1].max()),
        best=float(np.median(loss.min(axis=1))),
        missed=float(np.median(np.asarray(getattr(curves, f"{scheme}_missed"))[:, -1])),
        recovered=recovered[:, -1],
        drops=int(np.sum(np.diff(recovered, axis=1) < 0)),
        precision=float(np.median(held)) if held.size else math.nan,
        precision_low=float(held.min()) if held.size else math.nan,
    )


class Destinations(NamedTuple):
    r"""Where the neurons of one start end under both schemes (:func:`neuron_destinations`).

    Attributes:
        single, layer: the direction each neuron lands on (:func:`landed_directions`, -1 for
            none), after single-phase training and after layer-wise phase one, shape (m,) each.
        predicted: the leading-order winner of each neuron (:func:`predicted_winners`), shape (m,).
        single_counts, layer_counts: neurons per destination ``-1, 0, ..., P-1``, shape (P + 1,).
        single_covered, layer_covered: distinct directions covered.
        single_doubled: directions held by more than one neuron (single-phase).
        single_idle: neurons with no direction (single-phase).
        layer_on_top: neurons on the top direction q = 0 (layer-wise).
        rule_agrees: layer-wise neurons landing where :func:`predicted_winners` says.
    """

    single: np.ndarray
    layer: np.ndarray
    predicted: np.ndarray
    single_counts: np.ndarray
    layer_counts: np.ndarray
    single_covered: int
    layer_covered: int
    single_doubled: int
    single_idle: int
    layer_on_top: int
    rule_agrees: int


def neuron_destinations(V0, teacher: Teacher, times, dt: float, threshold: float = 0.5) -> Destinations:
    r"""Run both schemes from ``V0`` (gradient flow on the squared loss by :func:`euler_flow`, and
    layer-wise phase one by :func:`phase_one_flow`, both to ``times[-1]`` with step ``dt``) and
    count where the neurons end: the direction q with :math:`c_{kq}^2 \ge` threshold, if any."""
    single_run = euler_flow(V0, teacher, times, dt=dt)
    layer_run = phase_one_flow(V0, teacher, times, dt=dt)
    single = landed_directions(single_run.overlaps[-1], threshold)
    layer = landed_directions(layer_run.overlaps[-1], threshold)
    a = np.asarray(teacher.coefficients, np.float64)
    predicted = predicted_winners(layer_run.initial_overlaps, a, teacher.activation)
    bins = np.arange(-1, teacher.P)
    return Destinations(
        single=single,
        layer=layer,
        predicted=predicted,
        single_counts=np.array([np.sum(single == q) for q in bins]),
        layer_counts=np.array([np.sum(layer == q) for q in bins]),
        single_covered=len(set(single[single >= 0].tolist())),
        layer_covered=len(set(layer[layer >= 0].tolist())),
        single_doubled=int(sum(np.sum(single == q) > 1 for q in range(teacher.P))),
        single_idle=int(np.sum(single < 0)),
        layer_on_top=int(np.sum(layer == 0)),
        rule_agrees=int(np.sum(layer == predicted)),
    )


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
    one = phase_one_sgd(
        V0,
        teacher,
        jax.random.fold_in(key, 0),
        lr,
        int(marks[-1]),
        comparison.batch,
        tuple(int(m) for m in marks),
        keep_directions=True,
    )
    where = np.searchsorted(marks, s1)
    assert one.record_directions is not None
    loss, recovered, missed = [], [], []
    for n2, idx in zip(comparison.readout_samples, where, strict=False):
        fit = phase_two_samples(
            one.record_directions[idx],
            teacher,
            jax.random.fold_in(key, 1),
            int(n2),
            comparison.ridge,
            batch=comparison.readout_chunk,
        )
        loss.append(fit.loss)
        recovered.append(_recovered(one.overlaps[idx], comparison.threshold))
        missed.append(_missed_share(one.overlaps[idx], teacher.coefficients, comparison.threshold))
    best = np.max(np.asarray(one.overlaps, np.float64)[where] ** 2, axis=1)  # (R, P)
    return {
        "loss": np.asarray(loss),
        "recovered": np.asarray(recovered, np.int32),
        "missed": np.asarray(missed),
        "best": best,
    }


def compare_on_samples(comparison: SampleComparison, cache: Cache | bool | None = True) -> SampleCurves:
    """Run (or load from the cache) both schemes of a :class:`SampleComparison` on every seed.

    The single-phase runs go through :func:`companion.sgd.run_sgd` (its own cache entry), the
    layer-wise runs are cached here per seed.
    """
    from companion.sgd import SGDConfig, run_sgd

    cache = Cache.resolve(cache, namespace="layerwise", version=VERSION)
    c = comparison
    steps = c.record_steps
    config = SGDConfig(
        c.model, lr=c.lr, steps=c.steps, batch=c.batch, record=tuple(int(s) for s in steps), seeds=c.seeds
    )
    single = run_sgd(config, cache=False if cache is None else cache.directory)  # run_sgd's own namespace
    single_rec = np.array(
        [[_recovered(single.overlaps[s, r], c.threshold) for r in range(steps.size)] for s in range(c.seeds)], np.int32
    )
    a = c.model.teacher().coefficients
    single_missed = np.array(
        [[_missed_share(single.overlaps[s, r], a, c.threshold) for r in range(steps.size)] for s in range(c.seeds)]
    )
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
    return SampleCurves(
        c.batch * steps,
        c.batch * c.phase_one_steps,
        np.asarray(single.loss, np.float64),
        np.stack(layer_loss),
        single_rec,
        np.stack(layer_rec),
        single_missed,
        np.stack(layer_missed),
        np.max(np.asarray(single.overlaps, np.float64) ** 2, axis=2),
        np.stack(layer_best),
    )


@dataclass(frozen=True)
class _SampleRun:
    comparison: SampleComparison
    seed: int


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
        if (
            not self.width_factors
            or any(not f >= 1.0 for f in self.width_factors)
            or list(self.width_factors) != sorted(set(self.width_factors))
        ):
            raise ValueError(f"width_factors must be strictly increasing and >= 1, got {self.width_factors}")
        require_real("horizon_scale", self.horizon_scale, low=0.0, low_open=True)
        require_real("dt", self.dt, low=0.0, low_open=True)
        require_real("threshold", self.threshold, low=0.5, high=1.0, high_open=True)
        if self.model.init_norm_sq is None:
            raise ValueError("model.init_norm_sq must be set: a width sweep needs the same initial norm at every width")

    def replace(self, **changes) -> LayerwiseSweep:
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
        return make_teacher(
            self.model.d, self.padded_P, coefficients=a, activation=self.model.activation, dtype=self.model.dtype
        )

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
        blocks = [
            init_student(jax.random.fold_in(key, j), BLOCK, model.d, model.init_norm_sq, model.dtype)
            for j in range(-(-count // BLOCK))
        ]
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
    teacher = make_teacher(
        sweep.model.d,
        case.P,
        coefficients=case.coefficients(),
        activation=sweep.model.activation,
        dtype=sweep.model.dtype,
    )
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
    arrays = {
        "first_cover": first,
        "landed": np.concatenate(landed, axis=1).astype(np.int32),
        "predicted": np.concatenate(predicted, axis=1).astype(np.int32),
    }
    if cache is not None:
        cache.save(run, arrays)
    return arrays


def _run_single(
    sweep: LayerwiseSweep, case: WidthCase, seed: int, width: int, cache: Cache | None
) -> dict[str, np.ndarray]:
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


def single_phase_min_width(
    sweep: LayerwiseSweep, case: WidthCase, seed: int, cache: Cache | bool | None = True
) -> tuple[float, np.ndarray]:
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


def run_layerwise_sweep(
    sweep: LayerwiseSweep, cache: Cache | bool | None = True, progress: bool = False
) -> LayerwiseResult:
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
    "test": LayerwiseSweep(
        _sweep_model(32),
        cases=(WidthCase(2, 1.0), WidthCase(3, 1.0), WidthCase(3, 2.0)),
        seeds=(0, 1),
        pool=1024,
        width_factors=(1.0, 1.5, 2.0, 3.0, 4.0),
        horizon_scale=3.0,
    ),
    "book": LayerwiseSweep(
        _sweep_model(256),
        cases=(*(WidthCase(P, 1.0) for P in (4, 6, 8, 11, 16)), *(WidthCase(8, b) for b in (0.5, 1.5, 2.0))),
        seeds=(0, 1, 2, 3, 4, 5),
        pool=8192,
        width_factors=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
        horizon_scale=3.0,
    ),
    "paper": LayerwiseSweep(
        ModelConfig(d=2048, P=1, m=1, beta=0.8, activation="h4", init_norm_sq=1e-6),
        cases=tuple(WidthCase(1024, 0.8, p) for p in (2, 4, 8, 16, 32, 64)),
        seeds=(0, 1, 2),
        pool=1 << 16,
        width_factors=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
        horizon_scale=3.0,
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
    cases = [
        {
            "P": c.P,
            "beta": c.beta,
            "p_star": c.n_recover,
            "kappa": float(k),
            "horizon": float(h),
            "single_phase_median_width": _jsonable([np.median(s)])[0],
            "layerwise_median_width": _jsonable([np.median(w)])[0],
            "single_phase_widths": _jsonable(s),
            "layerwise_widths": _jsonable(w),
        }
        for c, k, h, s, w in zip(
            sweep.cases, result.kappa, result.horizon, result.single_width, result.layerwise_width, strict=False
        )
    ]
    return {"d": sweep.model.d, "seeds": list(sweep.seeds), "pool": sweep.pool, "cases": cases}
