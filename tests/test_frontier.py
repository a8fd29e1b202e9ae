"""Frontier fits recover planted exponents; the online-SGD width sweep runs at its test preset."""

import numpy as np
import pytest

from companion import scaling as sc
from companion.config import ModelConfig
from companion.frontier import (
    SGDWidthSweep,
    fit_exponents,
    gd_twin,
    reproduce_width_sweep_sgd,
    run_sgd_width_sweep,
    sgd_width_sweep,
)


def test_fit_exponents_recovers_a_planted_superposition():
    # Escape times T_p = C / a_p, width m holds the top m: the fits must give the derived exponents.
    P, beta = 256, 0.8
    a = np.arange(1, P + 1) ** -beta
    a /= np.sqrt(np.sum(a**2))
    widths = np.array([8, 16, 32, 64, 128, 256, 512])
    t = np.logspace(0, 5, 400)
    T = 10.0 / a
    loss = np.stack([sc.superposition_loss(a, np.where(np.arange(P) < m, T, np.inf), t) for m in widths])[None]
    escapes = np.stack([np.where(np.arange(P) < m, T, np.inf) for m in widths])[None]
    fits = fit_exponents(t, loss, escapes, widths, P, beta)
    assert abs(fits.time[0] - sc.time_exponent(beta)) < 0.05
    assert abs(fits.width[0] - sc.width_exponent(beta)) < 0.1
    assert abs(fits.frontier[0] - sc.compute_exponent(beta)) < 0.08


def test_fit_exponents_checks_shapes():
    with pytest.raises(ValueError, match="must agree"):
        fit_exponents(np.arange(1, 5), np.ones((1, 2, 3)), np.ones((1, 2, 4)), np.array([1, 2]), 4, 0.8)


def test_sweep_validates():
    with pytest.raises(ValueError, match="rule"):
        sgd_width_sweep("test", rule="fast")
    with pytest.raises(ValueError, match="preset"):
        sgd_width_sweep("huge")
    with pytest.raises(ValueError, match="increasing"):
        SGDWidthSweep(ModelConfig(d=16, P=8), widths=(4, 2))


def test_step_size_rules():
    sweep = sgd_width_sweep("book")
    from companion.sgd import stable_lr, theory_lr

    assert sweep.lr == stable_lr(sweep.model.d, sweep.batch)
    theory = sweep.replace(rule="theory")
    assert theory.lr == theory_lr(sweep.model, delta=sweep.delta, batch=sweep.batch)
    assert theory.lr < sweep.lr and theory.steps > sweep.steps
    assert sweep.samples_per_time == pytest.approx(sweep.batch / sweep.lr)


def test_sgd_sweep_at_test_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    sweep = sgd_width_sweep("test")
    result = run_sgd_width_sweep(sweep, cache=True)
    S, W, P = len(sweep.seeds), len(sweep.widths), sweep.model.P
    assert result.loss.shape[:2] == (S, W) and result.escapes.shape == (S, W, P)
    # Wider students learn at least as many directions, and the loss falls from its start.
    learned = np.isfinite(result.learned).sum(-1)[0]
    assert learned[-1] >= learned[0] >= 1
    assert np.all(result.loss[..., -1] < 0.7 * result.loss[..., 0])
    summary = reproduce_width_sweep_sgd("test")  # loads the same runs from the cache
    assert summary["lr"] == sweep.lr and len(summary["final_loss"][0]) == W
    twin = gd_twin(sweep)
    assert twin.widths == sweep.widths and twin.horizon == sweep.horizon
    # The xlarge preset's twin is the executed GD sweep's seed 0, run for run (same cache keys).
    from companion.experiments import width_sweep

    xl_runs, book_runs = list(gd_twin(sgd_width_sweep("xlarge")).runs()), list(width_sweep("book").runs())
    assert xl_runs == book_runs[: len(xl_runs)] and len(xl_runs) == len(width_sweep("book").widths)
    # The provenance runner writes the full summary from the same cached runs, stamped.
    from companion.provenance import load_result, main

    out = tmp_path / "results" / "width_sweep_sgd_test.json"
    assert main(["width_sweep_sgd", "--preset", "test", "--out", str(out)]) == 0
    written = load_result(out)
    prov = written["provenance"]
    assert prov["preset"] == "test" and prov["command"].endswith(f"width_sweep_sgd --preset test --out {out}")
    assert prov["jax_backend"] == "cpu" and prov["machine"]["cpus"] >= 1
    assert written["lr"] == sweep.lr and np.asarray(written["loss"], float).shape == result.loss.shape
