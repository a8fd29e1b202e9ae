"""Online SGD engine: analytic gradient, unbiasedness, small-step limit, guard, configs, seeds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import companion  # noqa: F401  (enables x64 before any array is made)
from companion.config import ModelConfig
from companion.hermite import activation_from_coefficients, get_activation
from companion.loss import activation_series, population_gradient
from companion.sgd import (
    SGDConfig,
    SGDDivergenceError,
    log_steps,
    minibatch_gradient,
    minibatch_loss,
    run_sgd,
    sgd_step,
    simulate,
    stability_edge,
    stable_lr,
    theory_lr,
)
from companion.teacher import make_teacher

H4 = get_activation("h4")
# An even activation with several degrees, to exercise the recurrence beyond a single term.
MIXED = activation_from_coefficients([0.0, 0.0, 0.3, 0.0, 0.8, 0.0, 0.5], name="mixed")


def _random_state(key, m, d, B, dtype=jnp.float64):
    kv, kx, ky, kn = jax.random.split(key, 4)
    V = jax.random.normal(kv, (m, d), dtype) * jax.random.uniform(kn, (m, 1), dtype, 0.2, 1.5) / math.sqrt(d)
    x = jax.random.normal(kx, (B, d), dtype)
    y = jax.random.normal(ky, (B,), dtype)
    return V, x, y


@pytest.mark.parametrize("activation", [H4, MIXED], ids=["h4", "mixed"])
def test_series_matches_activation(activation):
    z = jnp.linspace(-5.0, 5.0, 101, dtype=jnp.float64)
    s, ds = activation_series(activation)(z)
    np.testing.assert_allclose(s, activation(z), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds, activation.derivative(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [H4, MIXED], ids=["h4", "mixed"])
def test_analytic_gradient_matches_autodiff(activation):
    V, x, y = _random_state(jax.random.key(1), m=6, d=9, B=5)
    V = V.at[2].set(0.0)  # a dead neuron: its gradient must be exactly zero
    analytic = minibatch_gradient(V, x, y, activation)
    autodiff = jax.grad(minibatch_loss)(V, x, y, activation)
    scale = float(jnp.max(jnp.abs(autodiff)))
    assert scale > 1e-3
    np.testing.assert_allclose(analytic, autodiff, rtol=1e-10, atol=1e-12 * scale)
    assert float(jnp.max(jnp.abs(analytic[2]))) < 1e-12
    # and one SGD step is V - lr * gradient
    np.testing.assert_allclose(sgd_step(V, x, y, 0.01, activation), V - 0.01 * autodiff, rtol=1e-10, atol=1e-14)


def test_gradient_is_the_brief_formula_per_sample():
    """B = 1: (f - y)[2 v σ(z) + ||v|| σ'(z) (I - v̄ v̄ᵀ) x], written out row by row (brief §4.6)."""
    V, x, y = _random_state(jax.random.key(2), m=4, d=7, B=1)
    V, x, y = np.asarray(V), np.asarray(x)[0], float(y[0])
    r = np.linalg.norm(V, axis=1)
    unit = V / r[:, None]
    z = unit @ x
    f = float(np.sum(r**2 * np.asarray(H4(jnp.asarray(z)))))
    expected = np.stack(
        [
            (f - y)
            * (
                2 * V[i] * float(H4(jnp.asarray(z[i])))
                + r[i] * float(H4.derivative(jnp.asarray(z[i]))) * (np.eye(7) - np.outer(unit[i], unit[i])) @ x
            )
            for i in range(4)
        ]
    )
    got = minibatch_gradient(jnp.asarray(V), jnp.asarray(x[None]), jnp.asarray([y]), H4)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_minibatch_gradient_is_unbiased():
    """E[minibatch gradient] = population gradient, within a tolerance from the sample variance.

    For each of the m·d coordinates, z = (mean of N per-sample gradients − population gradient) /
    (sample std / √N) is approximately N(0, 1) by the CLT (the per-sample gradient is a polynomial
    in Gaussian x, so all its moments are finite). We require max |z| < 5: for 96 independent
    normal coordinates a false alarm has probability about 96 · 5.7e-7 ≈ 6e-5. The same statistic
    applied to a wrong gradient (projection term left out) must fail, so the test has power.
    """
    m, d, P = 6, 16, 4
    teacher = make_teacher(d, P, beta=0.8, dtype="float64")
    V = jax.random.normal(jax.random.key(3), (m, d), jnp.float64) * 0.5
    truth = np.asarray(population_gradient(V, teacher))

    per_sample = jax.jit(jax.vmap(lambda x, y: minibatch_gradient(V, x[None], y[None], H4)))

    def wrong(x, y):  # leave out the tangential term r σ'(z)(I - v̄v̄ᵀ)x
        r2 = jnp.sum(V * V, 1)
        s = H4(x @ (V / jnp.sqrt(r2)[:, None]).T)
        return 2 * V * ((s @ r2 - y) * s)[:, None]

    wrong_per_sample = jax.jit(jax.vmap(wrong))
    n_batches, size = 20, 10_000
    total = {k: np.zeros((m, d)) for k in ("good", "wrong")}
    total_sq = {k: np.zeros((m, d)) for k in ("good", "wrong")}
    for i in range(n_batches):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(4), i), (size, d), jnp.float64)
        y = teacher(x)
        for name, fn in (("good", per_sample), ("wrong", wrong_per_sample)):
            g = np.asarray(fn(x, y))
            total[name] += g.sum(0)
            total_sq[name] += (g**2).sum(0)
        # the minibatch gradient is exactly the mean of the per-sample ones
        if i == 0:
            np.testing.assert_allclose(
                minibatch_gradient(V, x, y, H4), np.asarray(per_sample(x, y)).mean(0), rtol=1e-9, atol=1e-12
            )
    N = n_batches * size

    def zmax(name):
        mean = total[name] / N
        std = np.sqrt(np.maximum(total_sq[name] / N - mean**2, 0) * N / (N - 1))
        return float(np.max(np.abs(mean - truth) / (std / math.sqrt(N))))

    assert zmax("good") < 5.0
    assert zmax("wrong") > 20.0


def test_small_learning_rate_tracks_gradient_descent():
    """SGD at learning rate η for T/η steps approaches gradient flow up to time T as η → 0.

    The reference is explicit Euler on the closed-form population loss with 400 steps of dt = T/400
    (it moves by less than 2e-4 when dt is divided by 4: far below the SGD fluctuation). The SGD
    fluctuation shrinks like √(η/B) (measured: 0.05 → 0.01 of a 0.21 displacement when η drops
    16x at B = 256). We check that the RMS distance to the reference over 2 runs is under 10% of the
    displacement at the smallest η and drops by at least 2.5x when η drops 16x (4x is expected).
    """
    model = ModelConfig(d=12, P=3, m=4, init_norm_sq=0.25, dtype="float64", seed=5)
    teacher, V0 = model.build()
    T, batch = 0.5, 256
    euler = jax.jit(
        lambda V: jax.lax.fori_loop(0, 400, lambda i, V: V - (T / 400) * population_gradient(V, teacher), V)
    )
    V = np.asarray(euler(V0))
    moved = float(np.linalg.norm(V - V0))
    assert moved > 0.1  # the flow does go somewhere in time T

    errors = []
    for lr in (2e-3, 1.25e-4):
        steps = int(round(T / lr))
        result = simulate(teacher, jnp.stack([V0, V0]), jax.random.key(6), lr, (steps,), batch=batch)
        errors.append(float(np.sqrt(np.mean(np.sum((result.final_state - V) ** 2, axis=(1, 2))))))
    assert errors[1] < 0.1 * moved
    assert errors[0] / errors[1] > 2.5


def test_record_and_time_axis():
    config = SGDConfig(ModelConfig.preset("test", seed=1), lr=2e-4, steps=3000, record=(0, 10, 1000, 3000))
    result = run_sgd(config, cache=False)
    np.testing.assert_array_equal(result.steps, [0, 10, 1000, 3000])
    np.testing.assert_allclose(result.times, 2e-4 * np.array([0, 10, 1000, 3000]))
    S, R, m, P = result.overlaps.shape
    assert (S, R, m, P) == (1, 4, 16, 8)
    assert result.norms_sq.shape == (1, 4, 16) and result.loss.shape == (1, 4)
    teacher, V0 = config.model.build()
    # the first record is the initial state, measured by the closed form
    np.testing.assert_allclose(result.norms_sq[0, 0], np.sum(np.asarray(V0) ** 2, 1), rtol=1e-6)
    assert (
        abs(
            result.loss[0, 0]
            - float(
                companion.population_loss(
                    V0.astype(jnp.float64), jax.tree.map(lambda a: a.astype(jnp.float64), teacher)
                )
            )
        )
        < 1e-9
    )
    assert log_steps(1000, 5) == (0, 1, 6, 32, 178, 1000)
    # escape times: the recorded helper and companion.dynamics on the Trajectory view agree
    from companion.dynamics import direction_escapes

    trajectory = result.trajectory(0)
    np.testing.assert_array_equal(trajectory.times, result.times)
    students, times = direction_escapes(trajectory)
    coarse = result.escape_times()[0]
    assert np.array_equal(np.isfinite(times), np.isfinite(coarse))
    assert np.all(times[np.isfinite(times)] <= coarse[np.isfinite(coarse)])
    # the final step is always recorded
    np.testing.assert_array_equal(config.replace(record=(0, 10)).record_steps, [0, 10, 3000])
    assert config.replace(record=8).record_steps[-1] == 3000


def test_chunking_and_resume_do_not_change_the_run():
    model = ModelConfig.preset("test", seed=2)
    teacher, V0 = model.build()
    key = jax.random.key(7)
    one = simulate(teacher, V0, key, 3e-4, (0, 37, 5000), block=64, chunk_seconds=100.0)
    # tiny chunks (one block per dispatch) and a checkpoint/resume in the middle
    saved = {}

    def checkpoint(state, records):
        if int(state.step) > 1000:
            saved.setdefault("first", (state, {k: list(v) for k, v in records.items()}))

    simulate(
        teacher,
        V0,
        key,
        3e-4,
        (0, 37, 5000),
        block=64,
        chunk_seconds=1e-9,
        checkpoint=checkpoint,
        checkpoint_seconds=0.0,
    )
    state, records = saved["first"]
    assert 1000 < int(state.step) < 5000 and records["steps"] == [0, 37]
    resumed = simulate(teacher, V0, key, 3e-4, (0, 37, 5000), block=64, resume=(state, records))
    np.testing.assert_array_equal(resumed.final_state, one.final_state)
    np.testing.assert_array_equal(resumed.overlaps, one.overlaps)


def test_seeds_vmap_and_sharding_agree_with_single_runs():
    config = SGDConfig(ModelConfig.preset("test", seed=3), lr=3e-4, steps=2000, record=(0, 500, 2000), seeds=2)
    sequential = run_sgd(config, cache=False, vectorize=False)
    vectorized = run_sgd(config, cache=False, vectorize=True)
    sharded = run_sgd(config, cache=False, devices=jax.devices()[:1])
    for j in range(2):
        single = run_sgd(config.replace(model=config.model.replace(seed=3 + j), seeds=1), cache=False)
        np.testing.assert_array_equal(sequential.final_state[j], single.final_state[0])
        np.testing.assert_allclose(vectorized.final_state[j], single.final_state[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sharded.final_state, vectorized.final_state, rtol=1e-5, atol=1e-7)
    # the two runs are different runs (their own start and stream), far beyond the tolerances above
    assert np.max(np.abs(sequential.final_state[0] - sequential.final_state[1])) > 1e-2
    np.testing.assert_allclose(vectorized.loss, sequential.loss, rtol=1e-4)


def test_label_noise_enters_linearly_on_the_same_inputs():
    """The noise is drawn from its own key (the inputs do not move), so over a short run the
    deviation from the noiseless run is linear in the noise level: half the level, half the deviation."""
    base = SGDConfig(ModelConfig.preset("test", seed=4), lr=3e-4, steps=500, record=(500,))
    clean = run_sgd(base, cache=False)
    full = run_sgd(base.replace(label_noise=0.5), cache=False)
    half = run_sgd(base.replace(label_noise=0.25), cache=False)
    dev_full = np.linalg.norm(full.final_state - clean.final_state)
    dev_half = np.linalg.norm(half.final_state - clean.final_state)
    assert dev_full > 1e-3 * np.linalg.norm(clean.final_state)
    assert 1.8 < dev_full / dev_half < 2.2


def test_divergence_guard_fires_with_step_lr_and_range():
    config = SGDConfig(ModelConfig.preset("test", seed=0), lr=0.05, steps=200_000, record=16)
    with pytest.raises(SGDDivergenceError) as info:
        run_sgd(config, cache=False)
    err = info.value
    message = str(err)
    assert "step" in message and "lr = 0.05" in message and "lr <=" in message
    assert 0 <= err.step < 200_000 and err.lr == 0.05 and err.seeds == [0]
    assert f"{0.5 * stability_edge(32, 1):.3g}" in message
    # no silent NaN: the records taken before the divergence (step 0 at least) come with the error,
    # all finite and all at or before the step that broke the bound
    assert err.partial is not None and err.partial.steps[0] == 0
    assert np.all(err.partial.steps <= err.step) and err.partial.loss.shape == (1, err.partial.steps.size)
    assert np.all(np.isfinite(err.partial.loss))
    assert err.time == pytest.approx(err.lr * err.step) and isinstance(err, companion.DivergenceError)


def test_nan_state_is_caught():
    teacher, V0 = ModelConfig.preset("test").build()
    with pytest.raises(SGDDivergenceError):
        simulate(teacher, V0.at[0, 0].set(jnp.nan), jax.random.key(0), 1e-4, (0, 10))


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("nan")),
        ("steps", 0),
        ("batch", 0),
        ("seeds", 0),
        ("label_noise", -0.1),
        ("record", 0),
        ("record", (5, 3)),
        ("record", (0, 10**9)),
        ("block", 0),
        ("max_norm_sq", 0.0),
    ],
)
def test_bad_config_names_the_parameter(field, value):
    kwargs = {"model": ModelConfig.preset("test"), "lr": 1e-3, "steps": 100}
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        SGDConfig(**kwargs)


def test_bad_model_type_is_rejected():
    with pytest.raises(ValueError, match="model"):
        SGDConfig(model={"d": 32}, lr=1e-3, steps=10)


def test_learning_rate_helpers():
    model = ModelConfig(d=64, P=16, m=32)
    a_min = float(np.min(model.teacher().coefficients))
    lr = theory_lr(model, delta=0.1, c=2.0)
    assert lr == pytest.approx(2.0 * a_min * 0.01 / 64**2, rel=1e-6)  # I = k*/2 = 2 for h4
    assert theory_lr(model.replace(d=128), delta=0.1, c=2.0) == pytest.approx(lr / 4, rel=1e-6)
    assert theory_lr(model, delta=0.1, p_star=1, c=2.0) > lr
    assert stable_lr(256, 16) == pytest.approx(0.5 * stability_edge(256, 16))
    assert stability_edge(512, 1) < stability_edge(256, 1) < stability_edge(256, 16)


def test_fast_normal_is_jax_normal_bit_for_bit():
    from companion._prng import normal as _normal

    for seed, shape in [(0, (7,)), (1, (3, 129)), (2, (4, 1, 64))]:
        key = jax.random.key(seed)
        np.testing.assert_array_equal(_normal(key, shape, jnp.float32), jax.random.normal(key, shape, jnp.float32))
    keys = jax.random.split(jax.random.key(3), 5)
    np.testing.assert_array_equal(
        jax.vmap(lambda k: _normal(k, (2, 33), jnp.float32))(keys),
        jax.vmap(lambda k: jax.random.normal(k, (2, 33), jnp.float32))(keys),
    )
    key = jax.random.key(4)  # other dtypes fall back to JAX itself
    np.testing.assert_array_equal(_normal(key, (5,), jnp.float64), jax.random.normal(key, (5,), jnp.float64))


SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, numpy as np
import companion
from companion.config import ModelConfig
from companion.sgd import SGDConfig, run_sgd
assert len(jax.devices()) == 2
config = SGDConfig(ModelConfig.preset("test", seed=3), lr=3e-4, steps=1000, record=(0, 1000), seeds=4)
a = run_sgd(config, cache=False, vectorize=True)
b = run_sgd(config, cache=False, devices=jax.devices())
np.testing.assert_allclose(b.final_state, a.final_state, rtol=1e-5, atol=1e-7)
np.testing.assert_allclose(b.loss, a.loss, rtol=1e-6)
print("ok")
"""


def test_runs_shard_over_two_devices():
    """Seeds split over 2 (forced host) devices give the same runs as one device."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_progress_bar_is_optional(capsys):
    config = SGDConfig(ModelConfig.preset("test", seed=1), lr=2e-4, steps=3000, record=(0, 10, 1000, 3000))
    run_sgd(config, cache=False)
    assert "SGD d=32" not in capsys.readouterr().err
    run_sgd(config, cache=False, progress=True)
    assert "SGD d=32" in capsys.readouterr().err
