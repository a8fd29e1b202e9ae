"""Samples to escape the search phase, minimized over learning rates: inputs, starts, analysis, a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from companion import sample_complexity as sc_


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"dims": (16,)}, "dims"),
        ({"dims": (32, 16)}, "dims"),
        ({"dims": (4, 16)}, "dims"),
        ({"fractions": (0.5, 2.0)}, "fractions"),
        ({"fractions": (0.1, 0.5)}, "strictly decreasing"),
        ({"seeds": 2}, "seeds"),
        ({"horizon": 0.0}, "horizon"),
        ({"threshold": 1.0}, "threshold"),
    ],
)
def test_bad_sweep_names_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        sc_.TEST.replace(**changes)


def test_starts_are_independent_across_d_and_on_the_right_sphere():
    sweep = sc_.TEST.replace(dims=(8, 16))
    v8, v16 = sc_.initial_students(sweep, 8), sc_.initial_students(sweep, 16)
    assert v8.shape == (sweep.seeds, sweep.width, 8) and v16.shape == (sweep.seeds, sweep.width, 16)
    np.testing.assert_allclose(np.sum(v16.astype(float) ** 2, axis=-1), sweep.init_norm_sq, rtol=1e-5)
    # a counter-based generator would repeat the leading coordinates; fold_in(key, d) must not
    lead8 = v8[..., :4] / np.linalg.norm(v8, axis=-1, keepdims=True)
    lead16 = v16[..., :4] / np.linalg.norm(v16, axis=-1, keepdims=True)
    assert not np.allclose(lead8 * np.sqrt(8), lead16 * np.sqrt(16), atol=0.05)


def test_analysis_on_planted_samples():
    # Planted: at the fast rate samples = d^2, at the slow one 4 d^2 except one never-escaped run.
    sweep = sc_.EscapeSweep(dims=(16, 32, 64), fractions=(0.5, 0.125), seeds=3)
    d = np.array(sweep.dims, float)[:, None, None]
    samples = np.concatenate([np.broadcast_to(d**2, (3, 1, 3)), np.broadcast_to(4 * d**2, (3, 1, 3))], axis=1).copy()
    samples[0, 1, 0] = np.inf
    r = sc_.EscapeSweepResult(sweep, samples)
    np.testing.assert_allclose(r.best, d.ravel() ** 2)
    assert r.best_fraction.tolist() == [0.5, 0.5, 0.5]
    assert r.exponent() == pytest.approx(2.0) and r.exponent_at(0.125) == pytest.approx(2.0)
    assert r.never.tolist() == [[0, 1], [0, 0], [0, 0]]
    lo, hi = r.bootstrap(reps=50)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    summary = r.summary()
    assert summary["exponent"] == pytest.approx(2.0) and summary["best_fraction"] == [0.5, 0.5, 0.5]


def test_tiny_sweep_escapes_and_caches(tmp_path):
    sweep = sc_.TEST.replace(fractions=(0.5,), width=2, records=30)
    first = sc_.run_escape_sweep(sweep, cache=tmp_path)
    assert first.samples.shape == (2, 1, sweep.seeds)
    escaped = first.samples[np.isfinite(first.samples)]
    assert escaped.size >= sweep.seeds and np.all(escaped > 0)
    # samples are multiples of the batch (B times a recorded step)
    np.testing.assert_allclose(escaped % sweep.batch, 0.0, atol=1e-6)
    again = sc_.run_escape_sweep(sweep, cache=tmp_path)
    np.testing.assert_array_equal(first.samples, again.samples)
