"""Provenance records name the command, code, preset, machine and JAX."""

import json

import numpy as np

from companion.provenance import load_result, provenance, write_result


def test_provenance_round_trip(tmp_path):
    prov = provenance("python -m x", "test", 1.234)
    for key in ("command", "commit", "preset", "wall_time_s", "machine", "jax_backend", "jax_version"):
        assert key in prov
    assert prov["wall_time_s"] == 1.2
    path = write_result(tmp_path / "r.json", {"x": np.array([1.0, np.inf])}, prov)
    back = load_result(path)
    assert back["provenance"]["preset"] == "test" and back["x"] == [1.0, None]
    json.loads(path.read_text())
