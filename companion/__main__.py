r"""Command line: ``python -m companion simulate ...`` and ``python -m companion reproduce ...``.

``simulate`` runs one training run of the 2-homogeneous student (online SGD, gradient descent on
the population loss, or the adaptive gradient-flow reference) and writes ``summary.json`` (final
loss, every direction's escape time and winning neuron, the greedy prediction) and
``arrays.npz`` (record times, overlaps, norms, loss) to ``--out``.

``reproduce`` runs a named experiment at a preset (``test``, ``book``, ``paper``) through the
cache, so that the book can show its results; on a GPU the ``paper`` presets are the paper's scale.

Bad arguments exit with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

METHODS = ("sgd", "gd", "flow")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m companion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="one training run; writes summary.json and arrays.npz")
    sim.add_argument("--method", choices=METHODS, default="sgd", help="sgd (online SGD), gd (full-batch gradient descent "
                     "on the population loss, i.e. Euler steps of size --lr), flow (adaptive reference solution)")
    sim.add_argument("--d", type=int, default=64, help="input dimension")
    sim.add_argument("--m", type=int, default=16, help="student width")
    sim.add_argument("--P", type=int, default=8, help="number of teacher directions (<= d)")
    sim.add_argument("--beta", type=float, default=0.8, help="power-law exponent of a_p")
    sim.add_argument("--activation", default="h4", help="h<k>, relu, abs or tanh")
    sim.add_argument("--init-norm-sq", type=float, default=None, help="||v_k(0)||^2 (default 1/m)")
    sim.add_argument("--lr", type=float, default=None, help="learning rate (sgd, gd); default: half the measured "
                     "stability edge for sgd, 0.1 for gd")
    sim.add_argument("--batch", type=int, default=1, help="fresh samples per SGD step")
    sim.add_argument("--steps", type=int, default=None, help="number of steps (sgd, gd)")
    sim.add_argument("--horizon", type=float, default=None, help="gradient-flow time to reach (instead of --steps)")
    sim.add_argument("--records", type=int, default=200, help="log-spaced record points")
    sim.add_argument("--seed", type=int, default=0, help="seed of the teacher, initialization and data")
    sim.add_argument("--out", type=Path, required=True, help="output folder")
    sim.add_argument("--no-cache", action="store_true", help="do not read or write the results cache (sgd)")
    sim.add_argument("--progress", action="store_true", help="show a progress bar")
    rep = sub.add_parser("reproduce", help="run a named experiment at a preset, through the cache")
    rep.add_argument("experiment", help="name of the experiment (see --list)")
    rep.add_argument("--preset", default="book", help="test, book or paper")
    rep.add_argument("--progress", action="store_true", help="show a progress bar")
    rep.add_argument("--out", type=Path, default=None, help="also write the full summary to this JSON file")
    return parser


def _simulate(args) -> dict:
    import jax

    from companion.config import ModelConfig
    from companion.dynamics import Trajectory, direction_escapes, euler_flow, log_times, reference_flow
    from companion.selection import greedy_selection
    from companion.sgd import SGDConfig, log_steps, run_sgd, stable_lr

    model = ModelConfig(d=args.d, P=args.P, m=args.m, beta=args.beta, activation=args.activation,
                        init_norm_sq=args.init_norm_sq, seed=args.seed)
    if args.steps is not None and args.horizon is not None:
        raise ValueError("give --steps or --horizon, not both")
    if args.method == "flow":
        if args.lr is not None or args.steps is not None:
            raise ValueError("--method flow is the adaptive solver: give --horizon, not --lr or --steps")
        horizon = args.horizon if args.horizon is not None else 100.0
        teacher, V0 = model.build()
        trajectory = reference_flow(V0.astype("float64"), teacher, log_times(horizon, args.records))
        lr = float("nan")
    else:
        lr = args.lr if args.lr is not None else (stable_lr(args.d, args.batch) if args.method == "sgd" else 0.1)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if args.steps is None:
            horizon = args.horizon if args.horizon is not None else 100.0
            steps = max(int(round(horizon / lr)), 1)
        else:
            steps = args.steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        record = log_steps(steps, args.records)
        if args.method == "gd":
            teacher, V0 = model.build()
            trajectory = euler_flow(V0, teacher, lr * np.asarray(record, dtype=np.float64), dt=lr)
        else:
            config = SGDConfig(model, lr=lr, steps=steps, batch=args.batch, record=tuple(int(s) for s in record))
            result = run_sgd(config, cache=not args.no_cache, progress=args.progress)
            teacher, V0 = model.build()
            from companion.student import norms_sq, overlaps

            trajectory = Trajectory(
                times=result.times, overlaps=result.overlaps[0], norms_sq=result.norms_sq[0], loss=result.loss[0],
                initial_overlaps=np.asarray(overlaps(V0, teacher)), initial_norms_sq=np.asarray(norms_sq(V0)),
                final_state=result.final_state[0], steps=steps, dt=lr, method="sgd",
            )
    winners, escapes = direction_escapes(trajectory)
    selection = greedy_selection(trajectory.initial_overlaps, np.asarray(teacher.coefficients), teacher.activation)
    predicted = np.full(model.P, np.inf)
    predicted[selection.teachers] = selection.times
    predicted_student = np.full(model.P, -1)
    predicted_student[selection.teachers] = selection.students
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "arrays.npz", times=trajectory.times, overlaps=trajectory.overlaps,
             norms_sq=trajectory.norms_sq, loss=trajectory.loss)

    def clean(x):
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64)]

    summary = {
        "config": {**vars(args), "out": str(args.out), "lr": lr},
        "jax_backend": jax.default_backend(),
        "final_loss": float(trajectory.loss[-1]),
        "final_time": float(trajectory.times[-1]),
        "escape_times": clean(escapes),
        "escape_students": winners.tolist(),
        "greedy_predicted_times": clean(predicted),
        "greedy_predicted_students": predicted_student.tolist(),
        "greedy_match_fraction": float(np.mean(predicted_student == winners)),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


#: name -> (description, "module:function"); the function takes (preset: str, progress: bool),
#: runs the experiment through the results cache and returns a JSON-able summary.
EXPERIMENTS = {
    "width_sweep": ("width sweep of the scaling-law chapter (loss against time, width, compute)",
                    "companion.experiments:reproduce_width_sweep"),
    "unstable_lr": ("online SGD at eta ~ a_P* against eta ~ a_min, one initialization (unstable-learning-rate chapter)",
                    "companion.unstable:reproduce_unstable"),
    "layerwise": ("width to recover the top P* directions, single-phase vs layer-wise training",
                  "companion.layerwise:reproduce_layerwise"),
    "assumptions": ("experiments of the chapter 'Where the assumptions break' (activations, correlated "
                    "directions, minibatches and Adam, label noise)", "companion.assumptions:reproduce_assumptions"),
}


def _reproduce(args) -> dict:
    import importlib

    if args.experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {args.experiment!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    module, function = EXPERIMENTS[args.experiment][1].split(":")
    runner = getattr(importlib.import_module(module), function)
    summary = {"experiment": args.experiment, "preset": args.preset, **runner(args.preset, args.progress)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    __import__("companion").enable_float64()  # the CLI computes as the book does (64-bit types on)
    try:
        summary = _simulate(args) if args.command == "simulate" else _reproduce(args)
    except ValueError as error:  # a bad value: say which, exit 2 like argparse does
        parser.error(str(error))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config",)}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
