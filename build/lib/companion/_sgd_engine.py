r"""The jitted online-SGD engine behind :func:`companion.sgd.simulate` (see :mod:`companion.sgd`).

One step is the fused update of :func:`companion.loss.sgd_update` on the minibatch of
:func:`companion._core.draw`. Steps run inside ``jax.jit`` + ``lax.scan``, a block of K steps per
loop iteration with the K minibatches of a block drawn in one call; :func:`simulate` drives the
compiled advance through :func:`companion._core.drive`. The learning rate, the divergence bound and
the label-noise level are traced arguments: new values never recompile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from companion._core import cast_teacher, counter_dtype, draw, drive, is_axes, record_dtype, summary
from companion._sgd_types import SGDConfig, SGDResult, SGDState, auto_block
from companion._validate import require_int, require_real
from companion.dynamics import default_norm_bound
from companion.errors import SGDDivergenceError
from companion.learning_rate import stability_edge
from companion.loss import sgd_update
from companion.teacher import Teacher


def _advance_one(V, key_data, bad, teacher, lr, bound, noise, t0, n, *, batch, block, axes, noisy, unroll):
    """Advance one run by n steps from step t0 (n, t0, lr, bound, noise traced). Returns (V, diverged_at)."""
    key = jax.random.wrap_key_data(key_data)
    d, dtype = V.shape[1], V.dtype
    lr = lr.astype(dtype)
    activation = teacher.activation
    step = partial(draw, key, batch=batch, d=d, dtype=dtype, noise=noise, teacher=teacher, axes=axes, noisy=noisy)

    def one(V, bad, t, x, y):
        V_new, w_max = sgd_update(V, x, y, lr, activation)
        # NaN compares False, so a NaN norm counts as broken too.
        bad = jnp.where((bad < 0) & ~(w_max <= bound), t, bad)
        return V_new, bad

    def single(i, carry):  # one step with its own draw (for the unaligned head and tail)
        V, bad = carry
        t = t0 + i
        return one(V, bad, t, *step(t))

    # Head: steps until t is a multiple of the block, so that block boundaries (and hence the
    # compiled arithmetic of every step) do not depend on how the run is chunked.
    head = jnp.minimum(n, (-t0) % block)
    V, bad = jax.lax.fori_loop(0, head, single, (V, bad))
    t1 = t0 + head
    nfull = (n - head) // block

    def full_block(carry):
        i, V, bad = carry
        ts = t1 + i * block + jnp.arange(block, dtype=t0.dtype)
        xs, ys = jax.vmap(step)(ts)

        def body(c, inp):
            return one(*c, *inp), None

        (V, bad), _ = jax.lax.scan(body, (V, bad), (ts, xs, ys), unroll=unroll)
        return i + 1, V, bad

    # Stop at the end of the block in which the run diverged: no silent NaN steps.
    _, V, bad = jax.lax.while_loop(lambda c: (c[0] < nfull) & (c[2] < 0), full_block, (jnp.zeros((), t0.dtype), V, bad))
    t2 = t1 + nfull * block
    tail = jnp.where(bad < 0, n - head - nfull * block, 0)
    V, bad = jax.lax.fori_loop(0, tail, lambda i, c: single(i + (t2 - t0), c), (V, bad))
    return V, bad


@partial(jax.jit, static_argnames=("batch", "block", "axes", "noisy", "unroll", "teacher_batched", "vectorize"))
def advance(
    state: SGDState,
    teacher: Teacher,
    lr,
    bound,
    noise,
    n,
    *,
    batch,
    block,
    axes,
    noisy,
    unroll,
    teacher_batched,
    vectorize,
):
    """Advance all runs by n steps (n, lr, bound, noise traced: no recompilation for new values)."""
    n = jnp.asarray(n, state.step.dtype)
    fn = partial(_advance_one, batch=batch, block=block, axes=axes, noisy=noisy, unroll=unroll)
    if vectorize:
        V, bad = jax.vmap(fn, in_axes=(0, 0, 0, 0 if teacher_batched else None, None, None, None, None, None))(
            state.V, state.key, state.diverged_at, teacher, lr, bound, noise, state.step, n
        )
    else:  # one run after the other inside one dispatch

        def run(j, carry):
            V_all, bad_all = carry
            tj = jax.tree.map(lambda a: a[j], teacher) if teacher_batched else teacher
            Vj, bj = fn(V_all[j], state.key[j], bad_all[j], tj, lr, bound, noise, state.step, n)
            return V_all.at[j].set(Vj), bad_all.at[j].set(bj)

        V, bad = jax.lax.fori_loop(0, state.V.shape[0], run, (state.V, state.diverged_at))
    return SGDState(V, state.key, state.step + n, bad)


@partial(jax.jit, static_argnames=("teacher_batched",))
def measure(V, teacher: Teacher, teacher_batched):
    """:func:`companion._core.summary` of every run: overlaps (S, m, P), norms² (S, m), loss (S,)."""
    loss_dtype = record_dtype(V.dtype)
    return jax.vmap(lambda V, t: summary(V, t, loss_dtype), in_axes=(0, 0 if teacher_batched else None))(V, teacher)


def default_vectorize(m: int, d: int, batch: int) -> bool:
    """vmap over runs on accelerators; on a CPU only for tiny models, where per-step overhead
    dominates (measured on 2 cores, B = 1: 1.8x at d = 64, 1.3x at d = 128, 0.74x at d = 256)."""
    return jax.default_backend() != "cpu" or m * d * batch <= (1 << 13)


def _check_V0(V0):
    V0 = jnp.asarray(V0)
    if V0.ndim == 2:
        V0 = V0[None]
    if V0.ndim != 3:
        raise ValueError(f"V0 must have shape (m, d) or (S, m, d), got {V0.shape}")
    return V0


def _teacher_tree(teacher, S: int, d: int, dtype):
    """(teachers as a list, one teacher or a stacked tree cast to dtype, shared?, axes?)."""
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if len(teachers) not in (1, S):
        raise ValueError(f"teacher: give one teacher or one per run ({S}), got {len(teachers)}")
    if any(t.d != d for t in teachers):
        raise ValueError(f"teacher dimension {teachers[0].d} does not match V0's d = {d}")
    if any(t.activation != teachers[0].activation for t in teachers):
        raise ValueError("teacher: all runs must share one activation")
    shared = len(teachers) == 1 or all(
        all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(teachers[0]), jax.tree.leaves(t), strict=False)
        )
        for t in teachers[1:]
    )
    tree = teachers[0] if shared else jax.tree.map(lambda *xs: jnp.stack(xs), *teachers)
    return teachers, cast_teacher(tree, dtype), shared, all(is_axes(t) for t in teachers)


def _run_keys(key, S: int):
    """S typed keys: the given S keys, or ``fold_in(key, j)`` for run j of one key (S > 1)."""
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError("key must be a typed PRNG key (jax.random.key(...)) or an array of S of them")
    if key.ndim == 0:
        key = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(S)) if S > 1 else key[None]
    if key.shape != (S,):
        raise ValueError(f"key: give one key or S = {S} keys, got shape {key.shape}")
    return key


def _shard(state: SGDState, teacher_tree, shared: bool, devices):
    """Put the runs axis of the state (and a per-run teacher) on ``devices``."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices)
    S = state.V.shape[0]
    if S % len(devices):
        raise ValueError(f"devices: the {S} runs must split evenly over {len(devices)} devices")
    mesh = Mesh(np.asarray(devices), ("runs",))
    spread = NamedSharding(mesh, PartitionSpec("runs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    state = SGDState(
        jax.device_put(state.V, spread),
        jax.device_put(state.key, spread),
        jax.device_put(state.step, replicated),
        jax.device_put(state.diverged_at, spread),
    )
    return state, jax.device_put(teacher_tree, replicated if shared else spread)


def result_from_records(records, state, lr, config, wall) -> SGDResult:
    """The :class:`SGDResult` of the records taken so far."""
    return SGDResult(
        config=config,
        lr=lr,
        steps=np.asarray(records["steps"], dtype=np.int64),
        overlaps=np.stack(records["overlaps"], axis=1),
        norms_sq=np.stack(records["norms_sq"], axis=1),
        loss=np.stack(records["loss"], axis=1),
        final_state=np.asarray(state.V),
        wall_time=wall,
    )


def _divergence(state, records, *, lr, batch, d, bound, config, wall) -> SGDDivergenceError | None:
    """The error to raise if a run broke the bound or the last recorded loss is non-finite, else None."""
    bad = np.asarray(state.diverged_at)
    loss_bad = records["loss"] and not np.all(np.isfinite(records["loss"][-1]))
    if not (np.any(bad >= 0) or loss_bad):
        return None
    first = int(bad[bad >= 0].min()) if np.any(bad >= 0) else int(state.step)
    partial_result = result_from_records(records, state, lr, config, wall) if records["steps"] else None
    edge = stability_edge(d, batch)
    return SGDDivergenceError(
        f"SGD diverged at step {first} (gradient-flow time t = {lr * first:.4g}) with lr = {lr:.4g}, "
        f"batch = {batch}, d = {d}: max ||v_k||^2 became non-finite or exceeded {bound:.3g} "
        f"in run(s) {np.flatnonzero(bad >= 0).tolist() or 'all'}. "
        f"The measured stability edge at this size is about lr = {edge:.3g} "
        f"(stability_edge(d={d}, batch={batch})); use lr <= {0.5 * edge:.3g} (half the edge), "
        f"or a larger batch (the edge grows about linearly with it).",
        first,
        lr,
        np.flatnonzero(bad >= 0),
        partial_result,
    )


def _check_record_steps(record_steps) -> np.ndarray:
    record_steps = np.asarray(record_steps, dtype=np.int64).reshape(-1)
    if record_steps.size == 0 or record_steps[0] < 0 or np.any(np.diff(record_steps) <= 0):
        raise ValueError(f"record_steps must be strictly increasing ints >= 0, got {record_steps.tolist()}")
    if record_steps[-1] > np.iinfo(counter_dtype()).max:
        raise ValueError(
            f"record_steps: {record_steps[-1]} steps need 64-bit counters; call companion.enable_float64()"
        )
    return record_steps


def simulate(
    teacher: Teacher | Sequence[Teacher],
    V0,
    key,
    lr: float,
    record_steps,
    batch: int = 1,
    label_noise: float = 0.0,
    block: int | None = None,
    max_norm_sq: float | None = None,
    vectorize: bool | None = None,
    devices=None,
    progress: bool = False,
    chunk_seconds: float = 2.0,
    checkpoint: Callable[[SGDState, dict], None] | None = None,
    checkpoint_seconds: float = 60.0,
    resume: tuple[SGDState, dict] | None = None,
    config: SGDConfig | None = None,
) -> SGDResult:
    r"""Run online SGD from ``V0`` and record summaries at ``record_steps``.

    Args:
        teacher: one teacher shared by all runs, or one per run.
        V0: initial students, shape (m, d) or (S, m, d).
        key: PRNG key(s) of the data stream: one key, or S keys (a typed key array of shape (S,)).
            With one key and S > 1 runs, run j uses ``fold_in(key, j)``.
        lr: learning rate (> 0).
        record_steps: strictly increasing ints >= 0; the run stops at the last one.
        batch: fresh samples per step.
        label_noise: std of Gaussian label noise.
        block: steps drawn per block (default :func:`companion._sgd_types.auto_block`).
        max_norm_sq: divergence bound (default :func:`companion.dynamics.default_norm_bound`).
        vectorize: ``vmap`` the runs (default: on GPU/TPU yes; on a CPU only for tiny models,
            where it was measured to pay, see :func:`default_vectorize`).
        devices: shard the runs over these devices (the number of runs must be a multiple of
            their number); default: no sharding.
        progress: show a tqdm progress bar.
        chunk_seconds: target wall time of one dispatch (progress and checkpoint granularity).
        checkpoint: called as ``checkpoint(state, records)`` at most every ``checkpoint_seconds``
            on chunk boundaries.
        resume: ``(state, records)`` from a checkpoint to continue from.
        config: stored in the result.
    Raises:
        SGDDivergenceError: the norms became non-finite or exceeded the bound.
    """
    lr = require_real("lr", lr, low=0.0, low_open=True)
    batch = require_int("batch", batch, 1)
    label_noise = require_real("label_noise", label_noise, low=0.0)
    record_steps = _check_record_steps(record_steps)
    V0 = _check_V0(V0)
    S, m, d = V0.shape
    teachers, teacher_tree, shared, axes = _teacher_tree(teacher, S, d, V0.dtype)
    keys = _run_keys(key, S)
    block = auto_block(batch, d) if block is None else require_int("block", block, 1)
    bound = float(max_norm_sq) if max_norm_sq is not None else max(default_norm_bound(V0, t) for t in teachers)
    vectorize = default_vectorize(m, d, batch) if vectorize is None else bool(vectorize)
    vectorize = vectorize or devices is not None  # sharding splits the vmapped run axis
    unroll = 4 if m * d <= (1 << 15) and batch == 1 else 1
    static = {
        "batch": batch,
        "block": block,
        "axes": axes,
        "noisy": label_noise > 0.0,
        "unroll": unroll,
        "teacher_batched": not shared,
        "vectorize": vectorize,
    }
    traced = (
        jnp.asarray(lr, jnp.float64 if jax.config.jax_enable_x64 else V0.dtype),  # type: ignore[attr-defined]
        jnp.asarray(bound, V0.dtype),
        jnp.asarray(label_noise, V0.dtype),
    )

    if resume is not None:
        state = jax.tree.map(jnp.asarray, resume[0])
        state = SGDState(
            state.V, state.key, state.step.astype(counter_dtype()), state.diverged_at.astype(counter_dtype())
        )
        records = {k: list(v) for k, v in resume[1].items()}
    else:
        state = SGDState(
            V0, jax.random.key_data(keys), jnp.zeros((), counter_dtype()), jnp.full((S,), -1, counter_dtype())
        )
        records = {"steps": [], "overlaps": [], "norms_sq": [], "loss": []}
    if devices is not None:
        state, teacher_tree = _shard(state, teacher_tree, shared, devices)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=int(record_steps[-1]),
            initial=int(state.step),
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            desc=f"SGD d={d} m={m} B={batch} x{S}",
        )

    def record(state):
        overlaps, r2, loss = measure(state.V, teacher_tree, not shared)
        records["steps"].append(int(state.step))
        records["overlaps"].append(np.asarray(overlaps, dtype=np.float32))
        records["norms_sq"].append(np.asarray(r2, dtype=np.float32))
        records["loss"].append(np.asarray(loss, dtype=np.float64))

    def check(state, wall):
        error = _divergence(state, records, lr=lr, batch=batch, d=d, bound=bound, config=config, wall=wall)
        if error is not None:
            raise error

    try:
        state, wall = drive(
            state,
            record_steps[len(records["steps"]) :],
            step_of=lambda s: int(s.step),
            advance=lambda s, n: advance(s, teacher_tree, *traced, n, **static),
            record=record,
            check=check,
            block=block,
            chunk_seconds=chunk_seconds,
            bar=bar,
            checkpoint=None if checkpoint is None else (lambda s: checkpoint(s, records)),
            checkpoint_seconds=checkpoint_seconds,
        )
    finally:
        if bar is not None:
            bar.close()
    return result_from_records(records, state, lr, config, wall)
