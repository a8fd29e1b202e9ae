r"""Greedy maximum selection: which student learns which teacher direction, and when.

Under the leading-order decoupled ODE (:mod:`companion.dynamics`) the pair (student k, teacher q)
would blow up at :math:`T_{kq} = 1/(4I(I-1)\hat\sigma_{2I}^2 M_{kq})` with the *strength*

.. math::
    M_{kq} = a_q\, \bar v_{k,q}(0)^{2I-2}, \qquad k\in[m],\ q\in[P],

(:math:`2I = k_*`, the information exponent). The first pair to escape is :math:`\arg\max M`;
once it has, its student is taken and its direction is deflated, so both leave the race. Greedy
maximum selection repeats this on what remains (paper brief §5):

1. :math:`(k_i, q_i) = \arg\max_{k\notin K_{<i},\, q\notin Q_{<i}} M_{kq}`;
2. record :math:`\pi(q_i) = k_i`, delete row :math:`k_i` and column :math:`q_i`;
3. stop after ``n_pairs`` stages (default :math:`\min(m, P)`).

Ties are broken by the lowest student index, then the lowest teacher index (row-major order).
The predicted times :math:`T_{(i)} = 1/(4I(I-1)\hat\sigma_{2I}^2 M_{k_i q_i})` are non-decreasing.

**Gaps (our definitions; the paper's exact ones were not available).** Each is a *ratio* of
strengths, hence also a ratio of leading-order escape times (:math:`T \propto 1/M`), and is
:math:`\ge 1` by construction of the greedy order. With :math:`\mathcal K_i, \mathcal Q_i` the students and
directions still free at the start of stage :math:`i` (so :math:`k_i\in \mathcal K_i`, :math:`q_i\in \mathcal Q_i`):

* row gap :math:`\;g^{\rm row}_i = M_{k_i q_i} / \max_{q\in \mathcal Q_i\setminus\{q_i\}} M_{k_i q}`: how much more
  student :math:`k_i` is drawn to :math:`q_i` than to any other free direction;
* column gap :math:`\;g^{\rm col}_i = M_{k_i q_i} / \max_{k\in \mathcal K_i\setminus\{k_i\}} M_{k q_i}`: how far
  ahead of every other free student :math:`k_i` is on :math:`q_i`;
* threshold gap :math:`\;g^{\rm thr}_i = M_{k_i q_i} / M_{k_{i+1} q_{i+1}}`: the margin between the
  :math:`i`-th pair and the next candidate (the largest strength left after :math:`i` stages). If the run
  targets the first :math:`P_*` pairs (or a horizon that ends between :math:`T_{(P_*)}` and
  :math:`T_{(P_*+1)}`), :math:`g^{\rm thr}_{P_*}` says how safely the un-targeted pairs stay put;
* capture gap (ours, not in the brief) :math:`\;g^{\rm cap}_i = \min_{i'<i} M_{k_{i'} q_{i'}} / M_{k_i q_{i'}}`:
  how far student :math:`k_i` trails the winner of every *earlier* direction. The row gap ignores
  those directions because they are deflated once learned, but a student that nearly ties an
  earlier winner follows it towards that direction before the deflation is complete, and either
  stays there with a vanishing norm or is held near it long enough to lose :math:`q_i` or escape
  late (both seen in simulation at d = 256: among pairs clearing a 20% margin on the row and
  column gaps, 94% matched the observed winner; adding the capture gap, 99%).

An empty maximum (no other free direction or student, or no next candidate) gives ``inf``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from companion._validate import require_finite_array, require_int, require_real
from companion.dynamics import Trajectory, direction_escapes, pair_escape_times
from companion.hermite import Activation


class Selection(NamedTuple):
    r"""Result of :func:`greedy_selection`; stage arrays are in selection order (length n).

    Attributes:
        students: :math:`k_i`, shape (n,).
        teachers: :math:`q_i`, shape (n,).
        strengths: :math:`M_{k_i q_i}`, shape (n,), non-increasing.
        times: predicted leading-order escape (blow-up) times :math:`T_{(i)}`, shape (n,).
        matching: :math:`\pi`, shape (P,): the student selected for each teacher direction, -1 if none.
        row_gap, column_gap, threshold_gap, capture_gap: the gap ratios
            :math:`g^{\rm row}_i, g^{\rm col}_i, g^{\rm thr}_i, g^{\rm cap}_i`, shape (n,).
        strength_matrix: :math:`M`, shape (m, P).
    """

    students: np.ndarray
    teachers: np.ndarray
    strengths: np.ndarray
    times: np.ndarray
    matching: np.ndarray
    row_gap: np.ndarray
    column_gap: np.ndarray
    threshold_gap: np.ndarray
    capture_gap: np.ndarray
    strength_matrix: np.ndarray


def strength_matrix(initial_overlaps, coefficients, information_exponent: int) -> np.ndarray:
    r""":math:`M_{kq} = a_q\,|\bar v_{k,q}(0)|^{k_*-2}` (positive part of the overlap for odd :math:`k_*`).

    Args:
        initial_overlaps: :math:`\bar v_{k,q}(0)`, shape (m, P).
        coefficients: :math:`a`, shape (P,), >= 0.
        information_exponent: :math:`k_* \ge 3` (the leading-order ODE has no blow-up for
            :math:`k_* \le 2`, so there is no race to predict).
    Returns:
        float64 array, shape (m, P).
    """
    C = require_finite_array("initial_overlaps", np.asarray(initial_overlaps, dtype=np.float64))
    a = require_finite_array("coefficients", np.asarray(coefficients, dtype=np.float64))
    if C.ndim != 2:
        raise ValueError(f"initial_overlaps must have shape (m, P), got {C.shape}")
    if a.shape != (C.shape[1],):
        raise ValueError(f"coefficients must have shape (P,) = ({C.shape[1]},), got {a.shape}")
    if np.any(a < 0):
        raise ValueError("coefficients must be >= 0")
    k = require_int("information_exponent", information_exponent, 3, why=" (no blow-up race for k* <= 2)")
    # An odd k*: a negative overlap shrinks under the drive a c^{k-1}, so only c > 0 races.
    base = np.abs(C) if k % 2 == 0 else np.maximum(C, 0.0)
    return a[None, :] * base ** (k - 2)


def greedy_selection(
    initial_overlaps,
    coefficients,
    activation: Activation,
    n_pairs: int | None = None,
) -> Selection:
    r"""Greedy maximum selection on :math:`M_{kq} = a_q\bar v_{k,q}(0)^{2I-2}` (module docstring).

    Args:
        initial_overlaps: :math:`\bar v_{k,q}(0)`, shape (m, P) (``Trajectory.initial_overlaps``
            or :func:`companion.student.overlaps` of V(0)).
        coefficients: :math:`a`, shape (P,).
        activation: :math:`\sigma` (its information exponent :math:`k_* = 2I` and leading
            coefficient :math:`\hat\sigma_{2I}` set M and the times).
        n_pairs: number of directions to recover (default :math:`\min(m, P)`); needs
            ``n_pairs <= m`` and ``n_pairs <= P``.
    Returns:
        a :class:`Selection`. Cost :math:`O(\min(m,P)\cdot mP)`, pure NumPy.
    """
    M = strength_matrix(initial_overlaps, coefficients, activation.information_exponent)
    m, P = M.shape
    if n_pairs is None:
        n_pairs = min(m, P)
    n_pairs = require_int("n_pairs", n_pairs, 0)
    if n_pairs > m:
        raise ValueError(f"n_pairs = {n_pairs}: m < number of directions asked to be recovered (m = {m})")
    if n_pairs > P:
        raise ValueError(f"n_pairs = {n_pairs} exceeds the number of teacher directions P = {P}")
    k_star = activation.information_exponent
    rate = k_star * (k_star - 2) * activation.leading_coefficient**2  # 4I(I-1) sigma_hat^2

    free = M.copy()  # removed rows and columns become -inf
    students = np.zeros(n_pairs, dtype=np.int64)
    teachers = np.zeros(n_pairs, dtype=np.int64)
    row_gap = np.zeros(n_pairs)
    column_gap = np.zeros(n_pairs)
    threshold_gap = np.zeros(n_pairs)
    strengths = np.zeros(n_pairs)
    for s in range(n_pairs):
        # np.argmax returns the first maximum in row-major order: lowest k, then lowest q.
        k, q = np.unravel_index(int(np.argmax(free)), free.shape)
        students[s], teachers[s], strengths[s] = k, q, M[k, q]
        row_gap[s] = _ratio(M[k, q], np.delete(free[k], q))
        column_gap[s] = _ratio(M[k, q], np.delete(free[:, q], k))
        free[k, :] = -np.inf
        free[:, q] = -np.inf
        threshold_gap[s] = _ratio(M[k, q], free)
    capture_gap = np.array([_ratio_min(strengths[:s], M[students[s], teachers[:s]]) for s in range(n_pairs)])
    with np.errstate(divide="ignore"):
        times = 1.0 / (rate * strengths)
    matching = np.full(P, -1, dtype=np.int64)
    matching[teachers] = students
    return Selection(students, teachers, strengths, times, matching, row_gap, column_gap, threshold_gap, capture_gap, M)


def _ratio(top: float, rest: np.ndarray) -> float:
    """top / max(rest) over the finite entries; inf when nothing is left (or rest is all 0)."""
    rest = rest[np.isfinite(rest)]
    if rest.size == 0:
        return float("inf")
    best = float(np.max(rest))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(top / best) if best > 0 else float("inf")


def _ratio_min(tops: np.ndarray, rivals: np.ndarray) -> float:
    """min_i tops[i] / rivals[i] over rivals > 0; inf when there is none."""
    keep = rivals > 0
    return float(np.min(tops[keep] / rivals[keep])) if keep.any() else float("inf")


def passing_pairs(selection: Selection, margin: float, threshold: bool = False, capture: bool = True) -> np.ndarray:
    r"""Which selected pairs clear a stated gap margin c.

    A pair passes when :math:`R_s \ge 1+c` and :math:`C_s \ge 1+c`, and (by default) also
    :math:`K_s \ge 1+c`.

    Args:
        selection: from :func:`greedy_selection`.
        margin: c >= 0 (for example 0.1 asks for a 10% separation of leading-order times).
        threshold: also require :math:`\Theta_s \ge 1 + c` for the pair itself (its time is
            separated from the next pair's by the margin).
        capture: require the capture gap :math:`K_s \ge 1 + c` (default True).
    Returns:
        bool array, shape (n,), in selection order.
    """
    margin = require_real("margin", margin, low=0.0)
    ok = (selection.row_gap >= 1.0 + margin) & (selection.column_gap >= 1.0 + margin)
    if threshold:
        ok &= selection.threshold_gap >= 1.0 + margin
    if capture:
        ok &= selection.capture_gap >= 1.0 + margin
    return ok


class Comparison(NamedTuple):
    r"""Greedy prediction against a recorded trajectory, per teacher direction (shape (P,) each).

    Attributes:
        predicted_student: :math:`\pi(q)` (-1 if no pair was selected for q).
        observed_student: the first student whose :math:`\bar v_{k,q}^2` reached the threshold (-1 if none).
        match: predicted and observed students agree (and both exist).
        predicted_time: the prediction for q (leading-order blow-up time unless overridden; nan if none).
        observed_time: when the observed student crossed (``inf`` if no one did).
        predicted_pair_time: when the *predicted* student crossed on q (``inf`` if it did not).
        stage: the greedy stage s at which q was selected (-1 if never).
    """

    predicted_student: np.ndarray
    observed_student: np.ndarray
    match: np.ndarray
    predicted_time: np.ndarray
    observed_time: np.ndarray
    predicted_pair_time: np.ndarray
    stage: np.ndarray

    @property
    def match_fraction(self) -> float:
        """Fraction of selected directions whose observed winner is the predicted student."""
        selected = self.predicted_student >= 0
        return float(np.mean(self.match[selected])) if selected.any() else float("nan")


def compare_with_trajectory(
    selection: Selection,
    trajectory: Trajectory,
    threshold: float = 0.5,
    predicted_times=None,
) -> Comparison:
    r"""Compare a greedy prediction with what a trajectory did.

    For each teacher direction q: which student escaped on it first (the escape definition of
    :func:`companion.dynamics.crossing_time`: first record time, log-interpolated, at which
    :math:`\bar v_{k,q}^2 \ge` threshold), whether that is :math:`\pi(q)`, and the observed against
    the predicted escape time.

    Args:
        selection: from :func:`greedy_selection` on the trajectory's initial overlaps.
        trajectory: a recorded run (:func:`companion.dynamics.euler_flow` or ``reference_flow``).
        threshold: the escape level of :math:`\bar v^2`.
        predicted_times: optional predictions in *selection order*, shape (n,) (for example
            :func:`companion.dynamics.refined_escape_times` of the selection's pairs); default the
            selection's leading-order blow-up times ``selection.times``.
    """
    P = selection.matching.size
    if trajectory.overlaps.shape[2] != P or trajectory.overlaps.shape[1] != selection.strength_matrix.shape[0]:
        raise ValueError(
            f"trajectory: overlaps of shape (R, m, P) = (R, {selection.strength_matrix.shape[0]}, {P}) expected, "
            f"got {trajectory.overlaps.shape}"
        )
    observed_student, observed_time = direction_escapes(trajectory, threshold)
    pair = pair_escape_times(trajectory, threshold)
    stage = np.full(P, -1, dtype=np.int64)
    stage[selection.teachers] = np.arange(selection.teachers.size)
    staged = selection.times if predicted_times is None else np.asarray(predicted_times, dtype=np.float64)
    if staged.shape != selection.teachers.shape:
        raise ValueError(
            f"predicted_times must have shape (n,) = ({selection.teachers.size},) (selection order), got {staged.shape}"
        )
    predicted = np.full(P, np.nan)
    predicted[selection.teachers] = staged
    pi = selection.matching
    predicted_pair_time = np.where(pi >= 0, pair[np.maximum(pi, 0), np.arange(P)], np.inf)
    match = (pi >= 0) & (observed_student == pi)
    return Comparison(pi, observed_student, match, predicted, observed_time, predicted_pair_time, stage)
