"""Speed of one gradient-flow (Euler / full-batch GD) step at the paper's size, against the
machine's float32 matmul rate measured in the same run. Writes benchmarks/flow.json.

FLOPs counted per step: the student Gram matrix and its adjoint product (2 x 2 m^2 d) plus, for a
general teacher frame, the overlap matrix and its adjoint (2 x 2 m P d); the axis-aligned teacher
(directions e_1..e_P) needs no teacher matmul, so it counts 4 m^2 d.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from run import best_of, matmul_rate  # the same roofline measurement as the SGD benchmark

import companion as cm


def flow_rate(d, m, P, directions, steps=20):
    teacher = cm.make_teacher(d, P, beta=0.8, directions=directions, key=jax.random.key(1))
    V0 = cm.init_student(jax.random.key(2), m, d)
    times = np.array([steps * 0.1])
    cm.euler_flow(V0, teacher, times, dt=0.1)  # compile
    seconds = best_of(lambda: cm.euler_flow(V0, teacher, times, dt=0.1)) / steps
    flops = 4 * m * m * d + (0 if directions == "axes" else 4 * m * P * d)
    return seconds, flops / seconds


def main():
    roof = matmul_rate()["roofline_flops"]
    rows = []
    for d, m, P in [(256, 128, 64), (2048, 1024, 1024)]:
        for directions in ["axes", "random"]:
            seconds, rate = flow_rate(d, m, P, directions)
            rows.append(
                {
                    "d": d,
                    "m": m,
                    "P": P,
                    "teacher": directions,
                    "seconds_per_step": seconds,
                    "flops_per_s": rate,
                    "fraction_of_roofline": rate / roof,
                }
            )
            print(
                f"d={d} m={m} P={P} {directions:6s}: {seconds * 1e3:7.1f} ms/step, {rate / 1e9:6.1f} GFLOP/s, "
                f"{rate / roof:.0%} of the matmul rate"
            )
    out = {
        "matmul_flops_per_s": roof,
        "backend": jax.default_backend(),
        "rows": rows,
        "target": "gradient-flow step at d=2048 >= 50% of the matmul rate",
        "met": all(r["fraction_of_roofline"] >= 0.5 for r in rows if r["d"] == 2048),
    }
    Path(__file__).with_name("flow.json").write_text(json.dumps(out, indent=1))
    print(f"matmul {roof / 1e9:.0f} GFLOP/s; target met: {out['met']}")


if __name__ == "__main__":
    main()
