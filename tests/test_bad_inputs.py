"""The Python API refuses what the command line refuses (a ValueError or TypeError naming the
argument), and configs normalize their fields so that equal configs have one cache key."""

import jax
import numpy as np
import pytest

from companion._validate import require_int, require_real
from companion.cache import config_key
from companion.config import ModelConfig
from companion.experiments import FlowRun, WidthSweep
from companion.loss import residual_loss
from companion.student import init_student
from companion.teacher import correlated_directions, make_teacher

TEACHER = make_teacher(8, 4, beta=0.8)
KEY = jax.random.key(0)

BAD_CALLS = [
    (lambda: make_teacher(8, 4, beta=0.8, dtype="int32"), "dtype"),
    (lambda: make_teacher(8, 4, beta=0.8, dtype=np.int64), "dtype"),
    (lambda: make_teacher(8, 4, beta=0.8, dtype="float16"), "dtype"),
    (lambda: make_teacher(8, 2, coefficients=[1e30, 1.0]), "coefficients"),
    (lambda: make_teacher(8, 2, coefficients=[1e200, 1.0], dtype="float64"), "coefficients"),
    (lambda: make_teacher(8, 4, beta="0.8"), "beta"),
    (lambda: correlated_directions(4, 8, 0.2, dtype="int32"), "dtype"),
    (lambda: residual_loss(TEACHER, [-1]), "learned"),
    (lambda: residual_loss(TEACHER, [4]), "learned"),
    (lambda: residual_loss(TEACHER, [0, -4]), "learned"),
    (lambda: residual_loss(TEACHER, [0.5]), "learned"),
    (lambda: init_student(KEY, 4, 8, 1e39), "norm_sq"),
    (lambda: init_student(KEY, 4, 8, 1e19), "norm_sq"),
    (lambda: init_student(KEY, 4, 8, 1e-300), "norm_sq"),
    (lambda: init_student(KEY, 4, 8, None, "int32"), "dtype"),
    (lambda: init_student(KEY, 4, 8, "0.1"), "norm_sq"),
    (lambda: ModelConfig(beta="0.8"), "beta"),
    (lambda: ModelConfig(beta=True), "beta"),
    (lambda: ModelConfig(d=True), "d"),
    (lambda: ModelConfig(d=8.0), "d"),
    (lambda: ModelConfig(seed=2**63), "seed"),
    (lambda: ModelConfig(seed=-1), "seed"),
    (lambda: ModelConfig(m=4, init_norm_sq=1e39), "init_norm_sq"),
    (lambda: ModelConfig(init_norm_sq=float("nan")), "init_norm_sq"),
    (lambda: ModelConfig(teacher_directions="diagonal"), "teacher_directions"),
    (lambda: ModelConfig(dtype="int32"), "dtype"),
    (lambda: FlowRun(ModelConfig(), horizon="1500"), "horizon"),
    (lambda: FlowRun(ModelConfig(), horizon=float("inf")), "horizon"),
    (lambda: FlowRun(ModelConfig(), horizon=10.0, records=7), "records"),
    (lambda: FlowRun("model", horizon=10.0), "model"),
    (lambda: WidthSweep(ModelConfig(), widths=(4, "8")), "widths"),
    (lambda: WidthSweep(ModelConfig(), widths=(4,), seeds=(-1,)), "seeds"),
    (lambda: require_real("x", b"1"), "x"),
    (lambda: require_int("n", np.bool_(True), 0), "n"),
]


def test_every_bad_api_call_is_refused_by_name():
    for call, name in BAD_CALLS:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert name in str(info.value), (name, str(info.value))


def test_strings_for_numbers_are_a_type_error_that_is_also_a_value_error():
    with pytest.raises(TypeError, match="beta must be a real number"):
        ModelConfig(beta="0.8")
    with pytest.raises(ValueError, match="beta must be a real number"):
        ModelConfig(beta="0.8")


def test_equal_configs_in_different_spellings_have_one_key():
    model = ModelConfig(d=16, P=4, m=8)
    spellings = [
        ModelConfig(d=16, P=4, m=8, beta=0.8),
        ModelConfig(d=np.int64(16), P=np.int32(4), m=8, beta=np.float64(0.8)),
        ModelConfig(d=16, P=4, m=8, beta=0.8, seed=np.uint8(0)),
    ]
    assert {config_key(c) for c in spellings} == {config_key(model)}
    assert config_key(ModelConfig(beta=1)) == config_key(ModelConfig(beta=1.0))
    assert isinstance(ModelConfig(beta=1).beta, float) and isinstance(ModelConfig(d=np.int64(16), P=4).d, int)
    runs = [
        FlowRun(model, 1500),
        FlowRun(model, 1500.0),
        FlowRun(model, np.float32(1500.0), dt=np.float64(0.1)),
        FlowRun(model, 1500, records=np.int64(300)),
    ]
    assert len({config_key(r) for r in runs}) == 1 and len(set(runs)) == 1
    sweeps = [WidthSweep(model, widths=(4, 8)), WidthSweep(model, widths=[np.int64(4), 8], seeds=[0], horizon=1500)]
    assert len({config_key(s) for s in sweeps}) == 1
    assert config_key(FlowRun(model, 1500)) != config_key(FlowRun(model, 1500.5))


def test_valid_edge_values_still_pass():
    assert residual_loss(TEACHER, []) == pytest.approx(residual_loss(TEACHER, np.array([], dtype=np.int64)))
    assert residual_loss(TEACHER, [0, 1, 2, 3]) == pytest.approx(0.0, abs=1e-12)
    assert ModelConfig(seed=2**63 - 1).keys()["data"].shape == ()
    V = init_student(KEY, 4, 8, 1e18)
    assert np.all(np.isfinite(np.asarray(V)))
