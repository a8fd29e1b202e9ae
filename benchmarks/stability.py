"""Measure the online-SGD stability edge (largest stable learning rate) at a few sizes.

For each (d, B) with m = d/2, P = d/4, beta = 0.8, sigma = h4, ||v(0)||^2 = 1/m, one seed:
bracket the edge to a factor sqrt(2) with ``companion.sgd.find_stability_edge`` (probe horizon:
gradient-flow time 50), write ``benchmarks/stability.json`` after every size, and fit
log(edge) = log C + gamma log B - alpha log d by least squares on the brackets' geometric means.

Usage: python benchmarks/stability.py [--quick | --summarize]   (about 45 min on 2 cores, 21 of
them for d = 512, B = 1; --quick: d <= 128; --summarize: refit the stored brackets only).
Result (stability.json): every bracket contains 0.0088 B/d, i.e. edge ~ B/d, not B/d^1.5.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import companion  # noqa: F401

companion.enable_float64()  # as the book does: float64 references, float64-recorded loss
from companion.config import ModelConfig
from companion.sgd import find_stability_edge

OUT = Path(__file__).with_name("stability.json")
SIZES = [
    (64, 1),
    (64, 16),
    (64, 256),
    (128, 1),
    (128, 16),
    (128, 256),
    (256, 1),
    (256, 16),
    (256, 256),
    (512, 16),
    (512, 256),
    (512, 1),
]


def fit(rows):
    X = np.array([[1.0, math.log(r["batch"]), -math.log(r["d"])] for r in rows])
    y = np.array([math.log(math.sqrt(r["stable"] * r["unstable"])) for r in rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    lo = max(r["stable"] * r["d"] / r["batch"] for r in rows)
    hi = min(r["unstable"] * r["d"] / r["batch"] for r in rows)
    return {
        "C": float(math.exp(coef[0])),
        "batch_exponent": float(coef[1]),
        "d_exponent": float(coef[2]),
        "max_abs_log_residual": float(np.max(np.abs(resid))),
        # the law edge = C1 * B / d: the interval of C1 consistent with every bracket (if any)
        "C1_consistent_with_all_brackets": [lo, hi] if lo <= hi * (1 + 1e-9) else None,
    }


def main():
    if "--summarize" in sys.argv:
        data = json.loads(OUT.read_text())
        data["fit"] = fit(data["rows"])
        OUT.write_text(json.dumps(data, indent=1))
        print(json.dumps(data["fit"], indent=1))
        return
    sizes = [s for s in SIZES if s[0] <= 128] if "--quick" in sys.argv else SIZES
    rows = json.loads(OUT.read_text())["rows"] if OUT.exists() and "--fresh" not in sys.argv else []
    done = {(r["d"], r["batch"]) for r in rows}
    for d, batch in sizes:
        if (d, batch) in done:
            continue
        model = ModelConfig(d=d, m=d // 2, P=d // 4, beta=0.8, seed=0)
        tic = time.perf_counter()
        stable, unstable, probes = find_stability_edge(model, batch, horizon=50.0, log=lambda s: print(s, flush=True))
        rows.append(
            {
                "d": d,
                "m": d // 2,
                "P": d // 4,
                "batch": batch,
                "stable": stable,
                "unstable": unstable,
                "probes": [[lr, None if math.isinf(t) else t] for lr, t in probes],
                "seconds": time.perf_counter() - tic,
            }
        )
        print(f"d={d} B={batch}: edge in [{stable:.3g}, {unstable:.3g}]  ({rows[-1]['seconds']:.0f} s)", flush=True)
        result = {
            "rows": rows,
            "fit": fit(rows) if len(rows) >= 3 else None,
            "setting": "m=d/2, P=d/4, beta=0.8, h4, ||v0||^2=1/m, one seed, probe horizon t=50, bracket factor sqrt(2)",
        }
        OUT.write_text(json.dumps(result, indent=1))
    if len(rows) >= 3:
        print(json.dumps(fit(rows), indent=1))


if __name__ == "__main__":
    main()
