"""Tests of companion.selection: greedy maximum selection, gap diagnostics, comparison with a run."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import companion as c
from companion.dynamics import Trajectory, euler_flow, log_times, refined_escape_times
from companion.selection import (
    compare_with_trajectory,
    greedy_selection,
    passing_pairs,
    strength_matrix,
)

H4 = c.get_activation("h4")


def _select(M, n_pairs=None, activation=H4):
    """Greedy selection on a hand-made strength matrix M (h4: M = a c^2 with a = 1, c = sqrt M)."""
    M = np.asarray(M, dtype=np.float64)
    return greedy_selection(np.sqrt(M), np.ones(M.shape[1]), activation, n_pairs)


HAND = np.array(
    [
        [9.0, 3.0, 1.0],
        [8.0, 6.0, 2.0],
        [4.0, 5.0, 7.0],
    ]
)


def test_greedy_order_matching_and_times_on_a_hand_made_matrix():
    sel = _select(HAND)
    assert list(zip(sel.students.tolist(), sel.teachers.tolist(), strict=True)) == [(0, 0), (2, 2), (1, 1)]
    assert sel.matching.tolist() == [0, 1, 2]
    np.testing.assert_allclose(sel.strengths, [9.0, 7.0, 6.0])
    np.testing.assert_allclose(sel.times, 1.0 / (8.0 * np.array([9.0, 7.0, 6.0])))


def test_gap_ratios_on_a_hand_made_matrix():
    sel = _select(HAND)
    np.testing.assert_allclose(sel.row_gap, [9 / 3, 7 / 5, np.inf])
    np.testing.assert_allclose(sel.column_gap, [9 / 8, 7 / 2, np.inf])
    np.testing.assert_allclose(sel.threshold_gap, [9 / 7, 7 / 6, np.inf])
    # student 2 trails the winner of direction 0 by 9/4; student 1 by 9/8 (and of direction 2 by 7/2)
    np.testing.assert_allclose(sel.capture_gap, [np.inf, 9 / 4, 9 / 8])
    assert passing_pairs(sel, 0.2).tolist() == [False, True, False]  # 9/8 < 1.2
    assert passing_pairs(sel, 0.2, capture=False).tolist() == [False, True, True]
    assert passing_pairs(sel, 0.1).tolist() == [True, True, True]
    assert passing_pairs(sel, 0.1, threshold=True).tolist() == [True, True, True]
    assert passing_pairs(sel, 0.2, threshold=True, capture=False).tolist() == [False, False, True]  # 7/6 < 1.2
    # stopping early: the threshold gap of the last targeted pair looks at the next candidate
    two = _select(HAND, n_pairs=2)
    np.testing.assert_allclose(two.threshold_gap, [9 / 7, 7 / 6])
    assert two.matching.tolist() == [0, -1, 2]


def test_ties_break_to_the_lowest_student_then_teacher():
    sel = _select(np.ones((3, 3)))
    assert sel.students.tolist() == [0, 1, 2] and sel.teachers.tolist() == [0, 1, 2]
    np.testing.assert_allclose(sel.row_gap[:2], 1.0)
    sel = _select([[1.0, 2.0], [2.0, 1.0]])
    assert sel.students.tolist() == [0, 1] and sel.teachers.tolist() == [1, 0]


def test_more_students_than_directions():
    M = np.array([[1.0, 2.0], [5.0, 1.0], [4.0, 3.0], [0.5, 0.5]])
    sel = _select(M)
    assert list(zip(sel.students.tolist(), sel.teachers.tolist(), strict=True)) == [(1, 0), (2, 1)]
    assert sel.matching.tolist() == [1, 2]
    np.testing.assert_allclose(sel.column_gap, [5 / 4, 3 / 2])  # other free students on the column
    np.testing.assert_allclose(sel.row_gap, [5 / 1, np.inf])
    np.testing.assert_allclose(sel.threshold_gap, [5 / 3, np.inf])
    np.testing.assert_allclose(sel.capture_gap, [np.inf, 5 / 4])


def test_fewer_students_than_directions():
    M = np.array([[1.0, 2.0, 6.0, 0.1], [3.0, 2.5, 4.0, 0.2]])
    sel = _select(M)
    assert list(zip(sel.students.tolist(), sel.teachers.tolist(), strict=True)) == [(0, 2), (1, 0)]
    assert sel.matching.tolist() == [1, -1, 0, -1]
    np.testing.assert_allclose(sel.row_gap, [6 / 2, 3 / 2.5])
    np.testing.assert_allclose(sel.column_gap, [6 / 4, np.inf])
    with pytest.raises(ValueError, match="m < number of directions asked to be recovered"):
        _select(M, n_pairs=3)


def test_n_pairs_errors():
    with pytest.raises(ValueError, match="n_pairs"):
        _select(np.ones((4, 2)), n_pairs=3)
    with pytest.raises(ValueError, match="n_pairs"):
        _select(np.ones((2, 2)), n_pairs=-1)
    assert _select(np.ones((2, 2)), n_pairs=0).students.size == 0


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 7)), elements=st.floats(0.0, 1.0)),
    st.data(),
)
def test_greedy_selection_laws(C0, data):
    m, P = C0.shape
    a = data.draw(arrays(np.float64, P, elements=st.floats(0.01, 1.0)))
    sel = greedy_selection(C0, a, H4)
    M = a[None, :] * C0**2
    n = min(m, P)
    assert sel.students.size == n
    assert len(set(sel.students.tolist())) == n and len(set(sel.teachers.tolist())) == n
    free_rows, free_cols = set(range(m)), set(range(P))
    for k, q in zip(sel.students, sel.teachers, strict=True):
        # each pick is the maximum of what is still free
        assert M[k, q] == max(M[i, j] for i in free_rows for j in free_cols)
        free_rows.discard(int(k))
        free_cols.discard(int(q))
    assert np.all(np.diff(sel.strengths) <= 0) and np.all(sel.times[:-1] <= sel.times[1:])  # inf for M = 0
    for gap in (sel.row_gap, sel.column_gap, sel.threshold_gap, sel.capture_gap):
        assert np.all(np.nan_to_num(gap, nan=np.inf) >= 1.0)
    # the next candidate of stage s is the pick of stage s + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = sel.strengths[:-1] / sel.strengths[1:]
    both = sel.strengths[1:] > 0
    np.testing.assert_allclose(sel.threshold_gap[:-1][both], expected[both])
    assert (sel.matching >= 0).sum() == n


def test_strength_matrix_exponent_and_sign():
    C0 = np.array([[0.5, -0.5]])
    a = np.array([2.0, 1.0])
    np.testing.assert_allclose(strength_matrix(C0, a, 4), [[0.5, 0.25]])
    np.testing.assert_allclose(strength_matrix(C0, a, 6), [[2 * 0.5**4, 0.5**4]])
    np.testing.assert_allclose(strength_matrix(C0, a, 3), [[1.0, 0.0]])  # odd k*: only c > 0 races
    with pytest.raises(ValueError, match="information_exponent"):
        strength_matrix(C0, a, 2)
    with pytest.raises(ValueError, match="coefficients"):
        strength_matrix(C0, [1.0], 4)
    with pytest.raises(ValueError, match="coefficients"):
        strength_matrix(C0, [1.0, -1.0], 4)
    with pytest.raises(ValueError, match="initial_overlaps"):
        strength_matrix(np.ones(3), [1.0, 1.0, 1.0], 4)
    with pytest.raises(ValueError, match="margin"):
        passing_pairs(_select(HAND), -0.1)
    # h6: T = 1/(24 sigma^2 M)
    sel = greedy_selection(C0, a, c.get_activation("h6"))
    np.testing.assert_allclose(sel.times, [1.0 / (24 * 2 * 0.5**4)])


def _trajectory(times, overlaps):
    R, m, P = overlaps.shape
    return Trajectory(
        np.asarray(times, float),
        overlaps,
        np.zeros((R, m)),
        np.zeros(R),
        overlaps[0],
        np.zeros(m),
        np.zeros((m, 1)),
        0,
        0.1,
        "euler",
    )


def test_compare_with_a_synthetic_trajectory():
    # greedy on M = c0^2: student 0 -> teacher 0 (0.36), then student 1 -> teacher 1 (0.09)
    C0 = np.array([[0.6, 0.1], [0.2, 0.3], [0.1, 0.2]])
    sel = greedy_selection(C0, np.ones(2), H4)
    assert sel.matching.tolist() == [0, 1]
    times = np.array([1.0, 2.0, 4.0])
    ov = np.repeat(C0[None], 3, axis=0)
    ov[1:, 0, 0] = 0.9  # student 0 escapes on teacher 0 as predicted, in (1, 2]
    ov[2, 2, 1] = 0.9  # student 2, not 1, escapes on teacher 1, in (2, 4]
    cmp = compare_with_trajectory(sel, _trajectory(times, ov))
    assert cmp.observed_student.tolist() == [0, 2]
    assert cmp.match.tolist() == [True, False]
    assert cmp.match_fraction == 0.5
    assert cmp.stage.tolist() == [0, 1]
    np.testing.assert_allclose(cmp.predicted_time, sel.times)
    assert 1.0 < cmp.observed_time[0] <= 2.0 and 2.0 < cmp.observed_time[1] <= 4.0
    assert cmp.predicted_pair_time[0] == cmp.observed_time[0] and np.isinf(cmp.predicted_pair_time[1])
    override = compare_with_trajectory(sel, _trajectory(times, ov), predicted_times=[10.0, 20.0])
    np.testing.assert_allclose(override.predicted_time, [10.0, 20.0])
    with pytest.raises(ValueError, match="predicted_times"):
        compare_with_trajectory(sel, _trajectory(times, ov), predicted_times=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="trajectory"):
        compare_with_trajectory(sel, _trajectory(times, ov[:, :, :1]))


def test_greedy_and_refined_predictions_on_a_real_run():
    """Book preset, seed 2: greedy names every winner; the refined predictor is within 2%."""
    teacher, V0 = c.ModelConfig.preset("book", seed=2).build()
    run = euler_flow(V0, teacher, log_times(400.0, 300, 0.3), 0.1)
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    sel = greedy_selection(run.initial_overlaps, a, teacher.activation)
    refined = refined_escape_times(
        run.initial_overlaps, run.initial_norms_sq, a, teacher.activation, sel.students, sel.teachers
    )
    cmp = compare_with_trajectory(sel, run, predicted_times=refined)
    assert cmp.match_fraction >= 0.9
    ratio = cmp.predicted_pair_time / cmp.predicted_time
    ok = np.isfinite(ratio)
    assert ok.sum() >= 28
    assert np.median(np.abs(ratio[ok] - 1.0)) < 0.02
    # the leading-order blow-up time is biased early by several percent at this d
    leading = cmp.predicted_pair_time[sel.teachers] / sel.times
    assert np.median(leading[np.isfinite(leading)]) > 1.03
