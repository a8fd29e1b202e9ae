"""Provenance records name the command, code, preset, machine and JAX."""

import json

import numpy as np
import pytest

from companion.provenance import load_result, main, provenance, to_jsonable, write_result


def test_provenance_round_trip(tmp_path):
    prov = provenance("python -m x", "test", 1.234)
    for key in ("command", "commit", "preset", "wall_time_s", "machine", "jax_backend", "jax_version"):
        assert key in prov
    assert prov["wall_time_s"] == 1.2
    path = write_result(tmp_path / "r.json", {"x": np.array([1.0, np.inf])}, prov)
    back = load_result(path)
    assert back["provenance"]["preset"] == "test" and back["x"] == [1.0, None]
    json.loads(path.read_text())


def test_to_jsonable_handles_configs_numpy_scalars_and_non_finite_values():
    from companion.config import ModelConfig

    out = to_jsonable({"model": ModelConfig(d=8, m=2, P=2), 3: (np.int64(4), np.bool_(True), np.float32(np.nan))})
    assert out["model"]["d"] == 8 and out["3"] == [4, True, None]
    json.dumps(out)


def test_runner_refuses_an_unknown_experiment(tmp_path, capsys):
    assert main(["width_sweeps", "--preset", "test", "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown experiment 'width_sweeps'" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("experiment", ["width_sweep", "width_sweep_sgd", "prediction_scale", "unstable_lr"])
def test_runner_refuses_an_unknown_preset_before_any_compute(experiment, tmp_path, capsys):
    assert main([experiment, "--preset", "huge", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--preset must be one of ") and "test" in err and "'huge'" in err
    assert not (tmp_path / "r.json").exists()


def test_runner_records_the_commit_it_started_from_not_one_made_during_the_run(tmp_path, monkeypatch):
    """A long background run must not be stamped with a commit made while it ran."""
    from companion import provenance as prov_module

    states = iter([{"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}])
    monkeypatch.setattr(prov_module, "git_state", lambda: next(states))
    monkeypatch.setitem(prov_module.SUMMARIES, "width_sweep", lambda preset, progress: {"preset": preset})
    assert main(["width_sweep", "--preset", "test", "--out", str(tmp_path / "r.json")]) == 0
    back = load_result(tmp_path / "r.json")["provenance"]
    assert back["commit"] == "a" * 40 and back["dirty"] is False
