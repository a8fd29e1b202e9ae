"""Experiments: presets validate, runs are cached and identical on reload, bad input is refused."""

import numpy as np
import pytest

from companion.cache import Cache
from companion.config import ModelConfig
from companion.experiments import WIDTH_SWEEPS, WidthSweep, run_width_sweep, width_sweep


def test_presets_validate():
    for name, sweep in WIDTH_SWEEPS.items():
        assert sweep.widths == tuple(sorted(sweep.widths)), name
    assert width_sweep("paper").model.d == 2048
    with pytest.raises(ValueError, match="preset must be one of"):
        width_sweep("huge")


def test_bad_sweeps():
    model = ModelConfig(d=16, P=4, m=1)
    with pytest.raises(ValueError, match="widths must be strictly increasing"):
        WidthSweep(model, widths=(8, 4))
    with pytest.raises(ValueError, match="widths must be >= 1"):
        WidthSweep(model, widths=(0, 4))
    with pytest.raises(ValueError, match="horizon must lie in"):
        WidthSweep(model, widths=(4,), horizon=-1.0)
    with pytest.raises(ValueError, match="non-empty"):
        WidthSweep(model, widths=())


def test_sweep_runs_caches_and_reloads(tmp_path):
    sweep = width_sweep("test", widths=(4, 16), horizon=150.0, records=40)
    cache = Cache(tmp_path, namespace="t")
    first = run_width_sweep(sweep, cache=cache)
    assert first.loss.shape == (1, 2, 40) and first.escapes.shape == (1, 2, 16)
    # the sweep stores under its own namespace, whatever the given Cache's namespace
    assert len(list((tmp_path / "width_sweep").glob("*.json"))) == 2
    second = run_width_sweep(sweep, cache=cache)
    for a, b in zip(first, second, strict=False):
        np.testing.assert_array_equal(a, b)
    # a direction's norm grows after its overlap escaped
    both = np.isfinite(first.learned) & np.isfinite(first.escapes)
    assert both.any() and np.all(first.learned[both] >= first.escapes[both] - 1e-9)
    # a wider student learns more directions and ends lower
    assert np.isfinite(first.escapes[0, 1]).sum() >= np.isfinite(first.escapes[0, 0]).sum()
    assert first.loss[0, 1, -1] < first.loss[0, 0, -1]
    assert np.all(first.loss[:, :, -1] < first.loss[:, :, 0])
