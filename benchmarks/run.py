"""Speed of the online-SGD engine against a NumPy reference and the machine's matmul roofline.

For d/m/P = 128/64/32, 512/256/128 and 2048/1024/1024 and minibatch B = 1 and 256, it reports:

* samples per second of the engine (``companion.sgd``: jit + lax.scan, blocks of samples);
* samples per second of a straightforward NumPy implementation of the same update (vectorized,
  float32, one ``rng.standard_normal`` per step), measured in the same run, and the ratio;
* the engine's FLOP rate, counting the two matrix products of a step (4·B·m·d; the labels of the
  axis-aligned teacher need no product), against the measured float32 matmul rate (the roofline).

Then the peak resident memory of a complete paper-size run (a fresh subprocess that builds the
model, runs SGD with B = 256 and records overlaps, norms and the float64 closed-form loss).

Targets on a 2-core CPU: B = 1 at least 5x NumPy at every size; B = 256 at d = 2048 at least 40%
of the matmul rate; peak memory under 2 GB. Results go to ``benchmarks/results.json``.
Every timing is the best of several repetitions (other processes only ever slow a run down);
the load average before and after is stored with the results.

Usage: python benchmarks/run.py [--quick]     (about 2-3 minutes; --quick: small sizes only)
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import companion  # noqa: E402,F401

companion.enable_float64()  # as the book does: float64 references, float64-recorded loss
from companion._sgd_engine import advance  # noqa: E402
from companion.config import ModelConfig  # noqa: E402
from companion.sgd import SGDConfig, SGDState, auto_block, build, sgd_step  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = [(128, 64, 32), (512, 256, 128), (2048, 1024, 1024)]
BATCHES = [1, 256]
S24 = 1.0 / math.sqrt(24.0)


def best_of(fn, repeats=3):
    """Smallest wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


# ----------------------------------------------------------------------------------------------
# Roofline
# ----------------------------------------------------------------------------------------------


def matmul_rate(n=2048):
    """Measured float32 matmul rate in FLOP/s: the best of JAX and NumPy on n x n products."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    jax_t = best_of(lambda: f(a, a).block_until_ready(), 5)
    an = np.asarray(a)
    np_t = best_of(lambda: an @ an, 3)
    return {
        "n": n,
        "jax_flops": 2 * n**3 / jax_t,
        "numpy_flops": 2 * n**3 / np_t,
        "roofline_flops": 2 * n**3 / min(jax_t, np_t),
    }


# ----------------------------------------------------------------------------------------------
# NumPy reference: the same update, written plainly
# ----------------------------------------------------------------------------------------------


def numpy_sgd(V, a, P, lr, batch, steps, rng):
    """Online SGD for f(x) = sum_k |v_k|^2 h4(<v_k/|v_k|, x>), teacher e_1..e_P, in NumPy."""
    lr = V.dtype.type(lr)  # float32 in the benchmark
    d = V.shape[1]
    for _ in range(steps):
        x = rng.standard_normal((batch, d), dtype=V.dtype)
        zt2 = x[:, :P] ** 2
        y = ((zt2 * zt2 - 6 * zt2 + 3) * S24) @ a
        r = np.linalg.norm(V, axis=1)
        U = V / r[:, None]
        z = x @ U.T
        z2 = z * z
        s = (z2 * z2 - 6 * z2 + 3) * S24
        ds = z * (4 * z2 - 12) * S24
        e = s @ (r * r) - y
        A = e[:, None] * ds / batch
        grad = 2 * V * ((e @ s) / batch)[:, None] + r[:, None] * (A.T @ x - np.sum(A * z, 0)[:, None] * U)
        V = V - lr * grad
    return V


def check_same_update():
    """The NumPy reference and the engine's step agree to round-off (float64, one step)."""
    model = ModelConfig(d=16, P=4, m=8, dtype="float64")
    teacher, V = model.build()
    x = np.random.default_rng(1).standard_normal((5, 16))
    y = np.asarray(teacher(jnp.asarray(x)))

    class FixedRng:
        def standard_normal(self, shape, dtype):
            return x

    ours = np.asarray(sgd_step(V, jnp.asarray(x), jnp.asarray(y), 0.01, teacher.activation))
    ref = numpy_sgd(np.asarray(V), np.asarray(teacher.coefficients), 4, 0.01, 5, 1, FixedRng())
    err = float(np.max(np.abs(ours - ref)))
    assert err < 1e-12, f"NumPy reference and engine disagree by {err}"
    return err


# ----------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------


def engine_rate(d, m, P, batch, seconds=1.5):
    """Steady-state samples/s of the engine (the jitted advance that ``simulate`` dispatches)."""
    config = SGDConfig(ModelConfig(d=d, P=P, m=m), lr=1e-9, steps=1, batch=batch)
    teachers, V0, keys = build(config)
    block = auto_block(batch, d)
    static = {
        "batch": batch,
        "block": block,
        "axes": True,
        "noisy": False,
        "unroll": 4 if m * d <= (1 << 15) and batch == 1 else 1,
        "teacher_batched": False,
        "vectorize": False,
    }
    state = SGDState(V0, jax.random.key_data(keys), jnp.zeros((), jnp.int64), jnp.full((1,), -1, jnp.int64))
    lr = jnp.asarray(1e-9, jnp.float64)
    bound, noise = jnp.asarray(1e30, V0.dtype), jnp.asarray(0.0, V0.dtype)
    run = lambda n: advance(state, teachers[0], lr, bound, noise, n, **static).V.block_until_ready()  # noqa: E731
    tic = time.perf_counter()
    run(block)  # compile
    compile_s = time.perf_counter() - tic
    t1 = best_of(lambda: run(block), 2)
    steps = max(block, int(seconds / t1 * block) // block * block)
    t = best_of(lambda: run(steps), 3)
    return {
        "steps": steps,
        "seconds": t,
        "samples_per_s": steps * batch / t,
        "block": block,
        "flops": 4.0 * batch * m * d * steps / t,
        "compile_s": compile_s,
    }


def numpy_rate(d, m, P, batch, seconds=1.0):
    rng = np.random.default_rng(0)
    V = (rng.standard_normal((m, d)) / math.sqrt(d * m)).astype(np.float32)
    a = (np.arange(1, P + 1) ** -0.8).astype(np.float32)
    a /= np.linalg.norm(a)
    t1 = best_of(lambda: numpy_sgd(V, a, P, 1e-9, batch, 2, rng), 1) / 2
    steps = max(2, int(seconds / t1))
    t = best_of(lambda: numpy_sgd(V, a, P, 1e-9, batch, steps, rng), 2)
    return {"steps": steps, "seconds": t, "samples_per_s": steps * batch / t}


# ----------------------------------------------------------------------------------------------
# Peak memory at paper size (fresh process)
# ----------------------------------------------------------------------------------------------

MEMORY_SCRIPT = r"""
import os, resource, json, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")

def peak_rss():
    # VmHWM: this process's own resident high-water mark (ru_maxrss can carry over the parent's
    # peak across fork + exec on Linux).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

import jax, companion
from companion.config import ModelConfig
from companion.sgd import SGDConfig, run_sgd
jax.numpy.zeros(1).block_until_ready()
base = peak_rss()
config = SGDConfig(ModelConfig.preset("paper"), lr=1e-6, steps=int(sys.argv[1]), batch=256, record=int(sys.argv[2]))
tic = time.perf_counter()
result = run_sgd(config, cache=False)
print(json.dumps({"peak_rss_bytes": peak_rss(), "after_import_rss_bytes": base, "seconds": time.perf_counter() - tic,
                  "records": int(result.steps.size), "steps": config.steps}))
"""


def paper_memory(steps=24, records=8):
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(steps), str(records)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Hook: gradient-flow step benchmarks (companion.dynamics) go here
# ----------------------------------------------------------------------------------------------


def gradient_flow_benchmarks(roofline_flops):
    """HOOK for the gradient-flow (Euler step) benchmark of ``companion.dynamics``.

    Return a list of dicts like the SGD rows (size, seconds per step, FLOP/s, fraction of
    ``roofline_flops``); they are written under ``"gradient_flow"`` in results.json. Empty until
    the dynamics module's owner fills it in.
    """
    return []


# ----------------------------------------------------------------------------------------------


def main():
    quick = "--quick" in sys.argv
    sizes = SIZES[:2] if quick else SIZES
    load_before = os.getloadavg()
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; load {load_before}")
    check_same_update()
    roof = matmul_rate()
    R = roof["roofline_flops"]
    print(
        f"float32 matmul 2048^3: JAX {roof['jax_flops'] / 1e9:.0f} GFLOP/s, NumPy {roof['numpy_flops'] / 1e9:.0f} GFLOP/s"
    )
    rows = []
    header = f"{'d':>5} {'m':>5} {'P':>5} {'B':>4} | {'engine samples/s':>16} {'numpy samples/s':>15} {'ratio':>6} | {'GFLOP/s':>7} {'of roofline':>11}"
    print(header)
    print("-" * len(header))
    for d, m, P in sizes:
        for batch in BATCHES:
            eng = engine_rate(d, m, P, batch)
            ref = numpy_rate(d, m, P, batch, seconds=0.5 if d >= 2048 else 1.0)
            row = {
                "d": d,
                "m": m,
                "P": P,
                "batch": batch,
                "engine": eng,
                "numpy": ref,
                "speedup_vs_numpy": eng["samples_per_s"] / ref["samples_per_s"],
                "fraction_of_roofline": eng["flops"] / R,
            }
            rows.append(row)
            print(
                f"{d:>5} {m:>5} {P:>5} {batch:>4} | {eng['samples_per_s']:>16.4g} {ref['samples_per_s']:>15.4g} "
                f"{row['speedup_vs_numpy']:>6.1f} | {eng['flops'] / 1e9:>7.1f} {row['fraction_of_roofline']:>10.0%}",
                flush=True,
            )
    memory = None if quick else paper_memory()
    if memory:
        print(
            f"paper size (d=2048, m=1024, P=1024, B=256, {memory['steps']} steps, {memory['records']} records): "
            f"peak RSS {memory['peak_rss_bytes'] / 2**30:.2f} GiB (after imports {memory['after_import_rss_bytes'] / 2**30:.2f} GiB)"
        )
    flow = gradient_flow_benchmarks(R)
    targets = {
        "B=1 >= 5x numpy at every size": all(r["speedup_vs_numpy"] >= 5 for r in rows if r["batch"] == 1),
        "B=256, d=2048 >= 40% of roofline": any(
            r["fraction_of_roofline"] >= 0.4 for r in rows if r["batch"] == 256 and r["d"] == 2048
        )
        if not quick
        else None,
        "paper-size peak memory < 2 GB": memory["peak_rss_bytes"] < 2e9 if memory else None,
    }
    print("targets:", json.dumps(targets))
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "numpy": np.__version__,
            "backend": jax.default_backend(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "matmul": roof,
        "sgd": rows,
        "paper_memory": memory,
        "gradient_flow": flow,
        "targets": targets,
    }
    if not quick:
        (HERE / "results.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
