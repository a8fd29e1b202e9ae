"""Measure the constant c of the theory's learning rate eta = c * a_min * Delta^2 * d^(-I).

The theory (paper brief 4.6) chooses eta so that SGD escape times stay within a factor 1 +- Delta
of gradient flow's. Its derivation predicts, for direction p, a relative deviation
delta_p = T_p(SGD) / T_p(GF) - 1 with E[delta_p^2] ~ eta d^I / (c a_p). We measure delta_p
directly and report c_p = eta d^I / (a_p RMS(delta_p)^2) per direction and learning rate.

Setting: sigma = h4 (I = 2), beta = 0.8, m = d/2, P = d/4, ||v(0)||^2 = 1/m, B = 1; one initial
student (seed 0) shared by all runs, independent data streams; gradient flow by explicit Euler
with dt = 0.0025 (escape times move by <= 0.3% (d = 64) and <= 3% (d = 128, one straggler)
between dt = 0.005 and 0.01, so dt = 0.0025 is accurate to a few tenths of a percent); escape
time of direction p = first time max_k overlap_kp^2 >= 1/2, interpolated linearly between
records (1500 log-spaced records, 0.3% apart). Only directions that gradient flow learns before t_cap / 1.25 are used
(d = 128 has stragglers up to t = 460 that would make SGD at small eta too expensive).

Usage: python benchmarks/theory_lr.py   (about 30 min on 2 cores). Writes theory_lr.json;
``--summarize`` recomputes only its "summary" (the constant c per d) from the stored runs.
"""

import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import companion  # noqa: F401

companion.enable_float64()  # as the book does: float64 references, float64-recorded loss
from companion.config import ModelConfig
from companion.loss import population_gradient
from companion.sgd import simulate, stability_edge

OUT = Path(__file__).with_name("theory_lr.json")


def crossing(times, values, threshold=0.5):
    """First crossing of `threshold` along axis 0, linear interpolation; inf if none."""
    above = values >= threshold
    first = np.argmax(above, axis=0)
    hit = np.any(above, axis=0)
    prev = np.maximum(first - 1, 0)
    y0 = np.take_along_axis(values, prev[None], 0)[0]
    y1 = np.take_along_axis(values, first[None], 0)[0]
    frac = np.where(first > 0, (threshold - y0) / np.where(y1 > y0, y1 - y0, 1.0), 0.0)
    t = times[prev] + np.clip(frac, 0, 1) * (times[first] - times[prev])
    return np.where(hit, t, np.inf)


def gradient_flow_escapes(teacher, V0, t_max, dt=0.005, records=4000):
    n = int(math.ceil(t_max / dt))
    every = max(1, n // records)

    @jax.jit
    def segment(V):
        V = jax.lax.fori_loop(0, every, lambda i, V: V - dt * population_gradient(V, teacher), V)
        unit = V / jnp.linalg.norm(V, axis=1, keepdims=True)
        return V, jnp.max((unit @ teacher.directions.T) ** 2, axis=0)

    V, times, values = V0, [0.0], [np.max(np.asarray(companion.overlaps(V0, teacher)) ** 2, axis=0)]
    for j in range(n // every):
        V, v = segment(V)
        times.append((j + 1) * every * dt)
        values.append(np.asarray(v))
    return crossing(np.array(times), np.array(values))


def measure(d, fractions, seeds, t_cap):
    model = ModelConfig(d=d, m=d // 2, P=d // 4, beta=0.8, seed=0, dtype="float32")
    teacher, V0 = model.build()
    t64 = jax.tree.map(lambda a: a.astype(jnp.float64), teacher)
    gf = gradient_flow_escapes(t64, V0.astype(jnp.float64), t_max=t_cap, dt=0.0025)
    used = gf <= t_cap / 1.25
    t_max = 1.25 * float(np.max(gf[used]))
    a = np.asarray(teacher.coefficients, dtype=np.float64)
    edge = stability_edge(d, 1)
    rows = []
    for fraction in fractions:
        lr = fraction * edge
        steps = int(math.ceil(t_max / lr))
        # dense around every escape: 1500 log-spaced records from 0.2 min(T_GF) (0.3% spacing)
        t_first = 0.2 * float(np.min(gf[used]))
        times = np.concatenate([[0.0], np.geomspace(t_first, t_max, 1500), np.linspace(0, t_max, 200)])
        record = np.unique(np.round(times / lr).astype(np.int64))
        tic = time.perf_counter()
        result = simulate(teacher, jnp.stack([V0] * seeds), model.keys()["data"], lr, record, batch=1, progress=False)
        sgd = np.stack([crossing(result.times, result.max_overlap_sq()[s]) for s in range(seeds)])  # (S, P)
        delta = (sgd / gf[None] - 1.0)[:, used]
        rms = np.sqrt(np.mean(delta**2, axis=0))
        c_p = lr * d**2 / (a[used] * rms**2)
        rows.append(
            {
                "d": d,
                "lr": lr,
                "fraction_of_edge": fraction,
                "steps": steps,
                "seeds": seeds,
                "rms_delta": rms.tolist(),
                "mean_delta": np.mean(delta, 0).tolist(),
                "c_p": c_p.tolist(),
                "seconds": time.perf_counter() - tic,
            }
        )
        print(
            f"d={d} lr={lr:.3g} ({fraction} edge): RMS delta median {np.median(rms):.3f} max {np.max(rms):.3f}, "
            f"|mean delta| median {np.median(np.abs(np.mean(delta, 0))):.3f}; "
            f"c_p median {np.median(c_p):.3g} min {np.min(c_p):.3g}  ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    return {
        "d": d,
        "a": a.tolist(),
        "gf_escape_times": gf.tolist(),
        "used": used.tolist(),
        "t_max": t_max,
        "rows": rows,
    }


def summarize(results):
    """c(d): with eta = c a_min Delta^2 d^-2, the median direction's RMS deviation equals Delta.

    Per run and used direction p: c_hat_p = eta d^2 / (a_min rms_p^2), a_min = a_P (all P
    directions, as in the theory); c(d) = median over p at the smallest eta (quartiles kept).
    Directions SGD did not learn within t_max count as rms = inf (c_hat = 0), which lowers c.
    Also: how the median rms scales with eta (exponent of rms ~ eta^e; the theory says 1/2).
    """
    out = []
    for res in results:
        d, a = res["d"], np.asarray(res["a"])
        rows = sorted(res["rows"], key=lambda r: r["lr"])
        per_eta = []
        for row in rows:
            rms = np.asarray(row["rms_delta"])
            c_hat = row["lr"] * d**2 / (a.min() * rms**2)
            per_eta.append(
                {
                    "lr": row["lr"],
                    "median_rms": float(np.median(rms)),
                    "c_quartiles": np.percentile(c_hat, [25, 50, 75]).tolist(),
                    "unlearned": int(np.sum(~np.isfinite(rms))),
                }
            )
        lrs = np.array([r["lr"] for r in per_eta])
        med = np.array([r["median_rms"] for r in per_eta])
        exponent = float(np.polyfit(np.log(lrs), np.log(med), 1)[0]) if len(lrs) > 1 else None
        out.append(
            {
                "d": d,
                "a_min": float(a.min()),
                "per_eta": per_eta,
                "rms_vs_eta_exponent": exponent,
                "c": per_eta[0]["c_quartiles"][1],
            }
        )
    return out


def main():
    import sys

    if "--summarize" in sys.argv:
        data = json.loads(OUT.read_text())
        data["summary"] = summarize(data["results"])
        OUT.write_text(json.dumps(data, indent=1))
        print(json.dumps(data["summary"], indent=1))
        return
    results = []
    for d, fractions, seeds, t_cap in [(64, (0.5, 0.125, 1 / 32), 8, 80.0), (128, (0.125, 1 / 16), 8, 125.0)]:
        results.append(measure(d, fractions, seeds, t_cap))
        OUT.write_text(json.dumps({"results": results, "summary": summarize(results)}, indent=1))


if __name__ == "__main__":
    main()
