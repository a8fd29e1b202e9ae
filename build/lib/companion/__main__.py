r"""Command line: ``python -m companion simulate ...`` and ``python -m companion reproduce ...``.

``simulate`` runs one training run of the 2-homogeneous student (online SGD, gradient descent on
the population loss, or the adaptive gradient-flow reference) and writes ``summary.json`` (final
loss, every direction's escape time and winning neuron, the greedy prediction where it applies)
and ``arrays.npz`` (record times, overlaps, norms, loss) to the folder ``--out``.

``reproduce`` runs a named experiment (:mod:`companion.registry`; ``reproduce --list``) at a
preset through the results cache; on a GPU the ``paper`` presets are the paper's scale.

Before any compute, one validation pass checks the whole command: every flag's range, that
``--out`` and the results cache can be written, whether the greedy prediction applies to the
activation, and a memory and time estimate (refused if the memory cannot fit; shown with
``--progress``; ``--dry-run`` prints the plan and stops). Outputs are written atomically: a
temporary sibling, then a rename, so ``--out`` always holds one complete run.

Exit statuses:

* 0: done (also a ``--dry-run`` or ``--list``);
* 2: refused before any compute: a flag out of range (the message names the flag and the allowed
  range), an output that cannot be written, or a run that does not fit in memory;
* 3: the run diverged (or the adaptive solver gave up): the message gives the step, time and
  learning rate and the stable range; the records up to the divergence are written, marked
  ``"partial": true``;
* 4: the run finished but its output could not be written (a full disk): nothing is left half
  written, and a cached run is still in the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from companion.config import ModelConfig

METHODS = ("sgd", "gd", "flow")
EXIT_REFUSED, EXIT_DIVERGED, EXIT_WRITE_FAILED = 2, 3, 4
#: The most steps a run may ask for (the engine counts steps in int64).
MAX_STEPS = 2**62
#: Rough cost of one record point (a dispatch, the summaries, a host copy), seconds.
RECORD_SECONDS = 1e-3
#: Runs estimated to take longer than this say so before they start (without --progress too).
ANNOUNCE_SECONDS = 600.0
#: Files ``simulate`` writes; an existing --out folder holding anything else is refused.
OUTPUT_FILES = ("summary.json", "arrays.npz")


class Refusal(ValueError):
    """A command refused before any compute (exit status 2): one line naming the flag."""


class WriteFailure(OSError):
    """The output could not be written (exit status 4)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a refusal is one line (no usage block), exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m companion",
        description=__doc__.splitlines()[0],
        epilog="exit statuses: 0 done, 2 refused before compute, 3 diverged "
        "(partial records written), 4 output could not be written",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="one training run; writes summary.json and arrays.npz")
    sim.add_argument(
        "--method",
        choices=METHODS,
        default="sgd",
        help="sgd (online SGD), gd (full-batch gradient descent "
        "on the population loss, i.e. Euler steps of size --lr), flow (adaptive reference solution)",
    )
    sim.add_argument("--d", type=int, default=64, help="input dimension (>= 1)")
    sim.add_argument("--m", type=int, default=16, help="student width (>= 1)")
    sim.add_argument("--P", type=int, default=8, help="number of teacher directions (1 <= P <= d)")
    sim.add_argument("--beta", type=float, default=0.8, help="power-law exponent of a_p (>= 0)")
    sim.add_argument(
        "--activation",
        default="h4",
        help="h<k> (1 <= k <= 60), relu, abs or tanh; the greedy "
        "prediction applies only for information exponent >= 3 (h3, h4, ...)",
    )
    sim.add_argument("--init-norm-sq", type=float, default=None, help="||v_k(0)||^2 (> 0; default 1/m)")
    sim.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (sgd, gd; > 0); default: half the measured stability edge for sgd, 0.1 for gd",
    )
    sim.add_argument("--batch", type=int, default=1, help="fresh samples per SGD step (>= 1; sgd only)")
    sim.add_argument("--steps", type=int, default=None, help="number of steps (sgd, gd; 1 .. 2^62)")
    sim.add_argument(
        "--horizon", type=float, default=None, help="gradient-flow time to reach (> 0; instead of --steps)"
    )
    sim.add_argument(
        "--records",
        type=int,
        default=200,
        help="log-spaced record points (>= 1, >= 2 for flow; more records than steps records every step)",
    )
    sim.add_argument("--seed", type=int, default=0, help="seed of the teacher, initialization and data (0 .. 2^63-1)")
    sim.add_argument(
        "--out",
        type=str,
        required=True,
        help="output folder (made atomically; an existing one is "
        "replaced only if it holds nothing but a previous run's files)",
    )
    sim.add_argument("--no-cache", action="store_true", help="do not read or write the results cache (sgd)")
    sim.add_argument("--progress", action="store_true", help="show the memory and time estimate and a progress bar")
    sim.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, records, memory, rough time) and exit without running",
    )
    rep = sub.add_parser("reproduce", help="run a named experiment at a preset, through the cache")
    rep.add_argument("experiment", nargs="?", help="name of the experiment (see --list)")
    rep.add_argument("--list", action="store_true", help="list the experiments and their presets, then exit")
    rep.add_argument("--preset", default="book", help="a preset of the experiment (see --list), e.g. test, book, paper")
    rep.add_argument("--progress", action="store_true", help="show a progress bar")
    rep.add_argument("--out", type=str, default=None, help="also write the full summary to this JSON file (atomically)")
    return parser


# ----------------------------------------------------------------------------------------------
# The validation pass
# ----------------------------------------------------------------------------------------------


def _int(flag: str, value: int, low: int, high: int | None = None, why: str = "") -> int:
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise Refusal(f"{flag} must be >= {low}{upper}{why}, got {value}")
    return value


def _real(flag: str, value: float, low: float = 0.0, open_low: bool = True, high: float | None = None) -> float:
    if not math.isfinite(value) or (value <= low if open_low else value < low) or (high is not None and value > high):
        side = ">" if open_low else ">="
        upper = "" if high is None else f" and <= {high:.3g}"
        raise Refusal(f"{flag} must be finite and {side} {low:g}{upper}, got {value}")
    return value


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def check_output(flag: str, text: str | None, kind: str) -> Path | None:
    """Refuse (exit 2) an output path that cannot be written: empty, a file where a folder is
    wanted or the reverse, under a file, or in a folder that cannot be written."""
    if text is None:
        return None
    if not text.strip():
        raise Refusal(f"{flag} must name a {kind}, got an empty string")
    path = Path(text).expanduser()
    if path.name in ("", ".", ".."):
        raise Refusal(f"{flag} must name a new {kind}, not {text!r}")
    anchor = _existing_ancestor(path)
    if anchor == path:
        if kind == "folder":
            if not path.is_dir():
                raise Refusal(f"{flag} must be a folder, but {text} is a file")
            other = sorted(p.name for p in path.iterdir() if p.name not in OUTPUT_FILES)
            if other:
                raise Refusal(
                    f"{flag} {text} already holds other files ({', '.join(other[:3])}); give a new or empty "
                    "folder, or one written by simulate"
                )
        elif path.is_dir():
            raise Refusal(f"{flag} must be a file, but {text} is a folder")
        anchor = path.parent if str(path.parent) else Path(".")
    if not anchor.is_dir():
        raise Refusal(f"{flag} {text}: {anchor} is a file, so nothing can be made under it")
    from companion.cache import check_writable

    reason = check_writable(anchor)  # creates and deletes a probe file: the real test
    if reason is not None:
        raise Refusal(f"{flag} {text}: {reason}")
    return path


@dataclass
class Plan:
    """Everything ``simulate`` will do, decided before any compute."""

    method: str
    model: ModelConfig
    lr: float
    steps: int | None
    horizon: float
    record: tuple
    out: Path
    use_cache: bool
    greedy: str | None  # None: the greedy prediction applies; else why not
    batch: int = 1
    n_records: int = 0  # record points, known before the record steps are built
    memory_bytes: int = 0
    available_bytes: int | None = None
    seconds: float | None = None
    notes: list = field(default_factory=list)

    @property
    def records(self) -> int:
        return self.n_records


def _activation(name: str):
    from companion.hermite import get_activation

    text = name.strip().lower()
    if text.startswith("h") and text[1:].isdigit() and not 1 <= int(text[1:]) <= 60:
        raise Refusal(f"--activation h<k> needs 1 <= k <= 60, got {name!r}")
    try:
        return get_activation(name)
    except ValueError:
        raise Refusal(f"--activation must be h<k> (1 <= k <= 60), relu, abs or tanh, got {name!r}") from None


def plan_simulate(args) -> Plan:
    """The validation pass of ``simulate``: every flag, the output, the cache, the greedy
    prediction's applicability, and the memory and time estimate. Raises :class:`Refusal`."""
    from companion.config import MAX_SEED, ModelConfig
    from companion.student import check_norm_sq

    d = _int("--d", args.d, 1)
    P = _int("--P", args.P, 1, d, f" (P orthonormal directions need P <= --d = {d})")
    m = _int("--m", args.m, 1)
    beta = _real("--beta", args.beta, 0.0, open_low=False)
    activation = _activation(args.activation)
    seed = _int("--seed", args.seed, 0, MAX_SEED)
    batch = _int("--batch", args.batch, 1)
    records = _int(
        "--records",
        args.records,
        2 if args.method == "flow" else 1,
        why=" for --method flow (the first and last time)" if args.method == "flow" else "",
    )
    if args.init_norm_sq is not None:
        _real("--init-norm-sq", args.init_norm_sq)
        try:
            check_norm_sq("--init-norm-sq", args.init_norm_sq, m, "float32")  # the model is built in float32
        except ValueError as error:
            raise Refusal(str(error)) from None
    if args.steps is not None and args.horizon is not None:
        raise Refusal("give --steps or --horizon, not both")
    if args.horizon is not None:
        _real("--horizon", args.horizon)
    if args.method != "sgd" and batch != 1:
        raise Refusal(f"--batch applies to --method sgd only, got --batch {batch} with --method {args.method}")
    out = check_output("--out", args.out, "folder")
    model = ModelConfig(d=d, P=P, m=m, beta=beta, activation=args.activation, init_norm_sq=args.init_norm_sq, seed=seed)
    k_star = activation.information_exponent
    greedy = (
        None
        if k_star >= 3
        else (
            f"the greedy prediction does not apply: activation {args.activation!r} has information exponent {k_star}, "
            "and greedy maximum selection needs a blow-up race (information exponent >= 3)"
        )
    )

    if args.method == "flow":
        if args.lr is not None or args.steps is not None:
            raise Refusal("--method flow is the adaptive solver: give --horizon, not --lr or --steps")
        horizon = args.horizon if args.horizon is not None else 100.0
        lr, steps, n_records = float("nan"), None, records
    else:
        from companion.sgd import stable_lr

        lr = args.lr if args.lr is not None else (stable_lr(d, batch) if args.method == "sgd" else 0.1)
        _real("--lr", lr)
        if args.steps is None:
            horizon = args.horizon if args.horizon is not None else 100.0
            if horizon / lr > MAX_STEPS:
                raise Refusal(
                    f"--horizon {horizon:g} at --lr {lr:.3g} is {horizon / lr:.3g} steps, more than "
                    f"2^62 = {MAX_STEPS:.3g}; lower --horizon or raise --lr"
                )
            if horizon < lr:
                raise Refusal(f"--horizon must be >= --lr = {lr:.3g} (one step), got {horizon:g}")
            steps = int(round(horizon / lr))
        else:
            steps = _int("--steps", args.steps, 1, MAX_STEPS)
        horizon = lr * steps
        n_records = min(records, steps) + 1  # an upper bound (log-spaced steps may coincide)
    use_cache = args.method == "sgd" and not args.no_cache
    plan = Plan(args.method, model, lr, steps, horizon, (), cast(Path, out), use_cache, greedy, batch, n_records)
    _estimate(plan, batch)
    if plan.available_bytes is not None and plan.memory_bytes > plan.available_bytes:
        raise Refusal(
            f"the run needs about {_size(plan.memory_bytes)} of memory (--d {d}, --m {m}, --P {P}, --batch {batch}, "
            f"--records {records}) but the machine has {_size(plan.available_bytes)} available; lower --d, --m, "
            "--batch or --records"
        )
    if plan.use_cache:
        from companion.cache import Cache

        plan.use_cache = Cache(namespace="sgd").usable()  # if not, says so now, before any compute
    if steps is not None:
        plan.record = _record_steps(steps, records)
        plan.n_records = len(plan.record)
    return plan


def _record_steps(steps: int, records: int) -> tuple[int, ...]:
    """0, then ``records`` log-spaced steps ending at ``steps`` (every step if records >= steps)."""
    if records >= steps:
        return tuple(range(steps + 1))
    from companion.sgd import log_steps

    grid = log_steps(steps, records)
    return grid if grid[-1] == steps else (*grid, steps)  # the run always records its last step


# ----------------------------------------------------------------------------------------------
# Memory and time estimate
# ----------------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: the accelerator's free memory when JAX runs
    on one, else the host's ``MemAvailable`` (Linux) or free physical pages."""
    try:
        import jax

        if jax.default_backend() != "cpu":
            stats = jax.devices()[0].memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # noqa: BLE001 - an estimate; no accelerator information is fine
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _measured_rates() -> dict:
    """FLOP/s measured by the committed benchmarks (``benchmarks/results.json``, ``flow.json``):
    ``sgd``: [(batch, m*d, flop/s)], ``flow``: [(m*d, flop/s)]; empty where not found."""
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    rates: dict[str, Any] = {"sgd": [], "flow": [], "machine": ""}
    try:
        results = json.loads((root / "results.json").read_text())
        rates["sgd"] = [(r["batch"], r["m"] * r["d"], r["engine"]["flops"]) for r in results.get("sgd", [])]
        machine = results.get("machine", {})
        rates["machine"] = f"{machine.get('cpus', '?')}-core {machine.get('backend', '?')}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        flow = json.loads((root / "flow.json").read_text())
        rates["flow"] = [(r["m"] * r["d"], r["flops_per_s"]) for r in flow.get("rows", [])]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return rates


def _nearest(rows, *point) -> float | None:
    if not rows:
        return None

    def distance(row):
        return sum(abs(math.log(max(a, 1)) - math.log(max(b, 1))) for a, b in zip(row[:-1], point, strict=False))  # noqa: E731

    return float(min(rows, key=distance)[-1])


def _estimate(plan: Plan, batch: int) -> None:
    """Fill in ``memory_bytes`` (a generous upper estimate of the peak) and ``seconds`` (from the
    committed benchmarks' measured rates; rough, for that machine) and the available memory."""
    model = plan.model
    d, m, P, R = model.d, model.m, model.P, plan.records
    word = 8 if plan.method == "flow" else 4
    base = 400 << 20  # the JAX runtime and compiled code
    state = m * d * word
    records = R * (m * P + m + 2) * word * 3  # device records, host copies, stacking
    teacher = P * d * word * 3
    rates = _measured_rates()
    if plan.method == "sgd":
        from companion.sgd import auto_block as _auto_block

        block = _auto_block(batch, d)
        samples = block * batch * (d + 2) * word * 3  # drawn block, labels, pre-activations
        step = 2 * batch * m * word + 4 * state + m * P * word
        plan.memory_bytes = base + records + teacher + samples + step + 6 * state
        rate = _nearest(rates["sgd"], batch, m * d) or 8e9
        assert plan.steps is not None
        plan.seconds = 4.0 * batch * m * d * plan.steps / rate + 2.0 + RECORD_SECONDS * R
    else:
        step = (m * m + 2 * m * P) * word * 3 + 6 * state
        stages = 9 * state if plan.method == "flow" else 0  # Tsit5 stages and error estimate
        plan.memory_bytes = base + records + teacher + step + stages + 4 * state
        rate = _nearest(rates["flow"], m * d) or 8e9
        flops = 4 * m * m * d + 4 * m * P * d
        if plan.method == "gd":
            assert plan.steps is not None
            plan.seconds = flops * plan.steps / rate + 2.0 + RECORD_SECONDS * R
        else:
            plan.seconds = None  # adaptive steps: not known in advance
            plan.notes.append(
                f"adaptive solver: about {6 * flops / (0.5 * rate):.2g} s per step on the benchmark "
                "machine; the number of steps is not known in advance (at most 200000)"
            )
    plan.available_bytes = available_memory()
    if rates["machine"] and plan.seconds is not None:
        plan.notes.append(
            f"time from the rates measured on the benchmark machine ({rates['machine']}, benchmarks/*.json)"
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (adaptive)"
    for unit, size in (("years", 3.15e7), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"about {seconds / size:.2g} {unit}"
    return f"about {seconds:.2g} s"


def describe(plan: Plan) -> dict:
    """The plan as a JSON-able dict (what ``--dry-run`` prints)."""
    return {
        "method": plan.method,
        "d": plan.model.d,
        "m": plan.model.m,
        "P": plan.model.P,
        "activation": plan.model.activation,
        "lr": None if math.isnan(plan.lr) else plan.lr,
        "steps": plan.steps,
        "horizon": plan.horizon,
        "records": plan.records,
        "out": str(plan.out),
        "cache": plan.use_cache,
        "greedy_prediction": "applies" if plan.greedy is None else plan.greedy,
        "memory_estimate": _size(plan.memory_bytes),
        "memory_available": None if plan.available_bytes is None else _size(plan.available_bytes),
        "time_estimate": _duration(plan.seconds),
        "notes": plan.notes,
    }


# ----------------------------------------------------------------------------------------------
# Running and writing
# ----------------------------------------------------------------------------------------------


def write_folder(out: Path, files: dict) -> None:
    """Write ``files`` (name -> callable(handle)) into a temporary sibling of ``out``, then rename it
    to ``out`` (replacing a previous run's folder): ``out`` always holds one complete run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = None
    try:
        tmp.mkdir()
        for name, write in files.items():
            with open(tmp / name, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.rename(old, out)
        raise WriteFailure(f"could not write {out}: {error}") from error
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling of ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteFailure(f"could not write {path}: {error}") from error


def _clean(x) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def _run(plan: Plan, progress: bool):
    """The run itself: ``(trajectory, teacher)``."""
    from companion.dynamics import Trajectory, euler_flow, log_times, reference_flow

    if plan.method == "flow":
        teacher, V0 = plan.model.build()
        return reference_flow(V0.astype("float64"), teacher, log_times(plan.horizon, plan.records)), teacher
    if plan.method == "gd":
        teacher, V0 = plan.model.build()
        return euler_flow(V0, teacher, plan.lr * np.asarray(plan.record, dtype=np.float64), dt=plan.lr), teacher
    from companion.sgd import SGDConfig, run_sgd
    from companion.student import norms_sq, overlaps

    assert plan.steps is not None
    config = SGDConfig(plan.model, lr=plan.lr, steps=plan.steps, batch=plan.batch, record=plan.record)
    result = run_sgd(config, cache=plan.use_cache, progress=progress)
    teacher, V0 = plan.model.build()
    trajectory = Trajectory(
        times=result.times,
        overlaps=result.overlaps[0],
        norms_sq=result.norms_sq[0],
        loss=result.loss[0],
        initial_overlaps=np.asarray(overlaps(V0, teacher)),
        initial_norms_sq=np.asarray(norms_sq(V0)),
        final_state=result.final_state[0],
        steps=plan.steps,
        dt=plan.lr,
        method="sgd",
    )
    return trajectory, teacher


def _arrays(record) -> dict | None:
    """``times``, ``overlaps``, ``norms_sq``, ``loss`` of a trajectory or of the first run of an
    SGD result (a divergence's partial records), or None."""
    if record is None or not hasattr(record, "overlaps"):
        return None
    take = (lambda a: np.asarray(a)[0]) if np.ndim(record.overlaps) == 4 else np.asarray  # (S, R, m, P)
    try:
        return {
            "times": np.asarray(record.times),
            "overlaps": take(record.overlaps),
            "norms_sq": take(record.norms_sq),
            "loss": take(record.loss),
        }
    except (AttributeError, ValueError, TypeError):
        return None


def _npz(arrays):
    return lambda handle: np.savez(handle, **arrays)


def _simulate(args) -> int:
    try:
        plan = plan_simulate(args)
    except Refusal:
        raise
    except ValueError as error:  # a check of the model's own constructors: still before any compute
        raise Refusal(str(error)) from None
    if args.dry_run:
        print(json.dumps(describe(plan)))
        return 0
    if args.progress or (plan.seconds or 0) > ANNOUNCE_SECONDS:
        print(
            f"plan: {plan.steps if plan.steps is not None else 'adaptive'} steps, {plan.records} records, "
            f"memory about {_size(plan.memory_bytes)} of {_size(plan.available_bytes or 0)} available, time "
            f"{_duration(plan.seconds)}",
            file=sys.stderr,
        )
    import jax

    config = {
        **describe(plan),
        "seed": plan.model.seed,
        "beta": plan.model.beta,
        "init_norm_sq": plan.model.init_norm_sq,
        "batch": args.batch,
    }
    try:
        trajectory, teacher = _run(plan, args.progress)
    except FloatingPointError as error:  # every divergence error derives from it
        return _diverged(plan, error, config)
    except RuntimeError as error:
        if plan.method == "flow" and str(error).startswith("reference_flow"):  # the solver gave up
            return _diverged(plan, error, config)
        raise
    from companion.dynamics import direction_escapes

    winners, escapes = direction_escapes(trajectory)
    summary = {
        "config": config,
        "jax_backend": jax.default_backend(),
        "partial": False,
        "final_loss": float(trajectory.loss[-1]),
        "final_time": float(trajectory.times[-1]),
        "escape_times": _clean(escapes),
        "escape_students": winners.tolist(),
    }
    if plan.greedy is None:
        from companion.selection import greedy_selection

        selection = greedy_selection(trajectory.initial_overlaps, np.asarray(teacher.coefficients), teacher.activation)
        predicted = np.full(plan.model.P, np.inf)
        predicted[selection.teachers] = selection.times
        predicted_student = np.full(plan.model.P, -1)
        predicted_student[selection.teachers] = selection.students
        summary.update(
            greedy_predicted_times=_clean(predicted),
            greedy_predicted_students=predicted_student.tolist(),
            greedy_match_fraction=float(np.mean(predicted_student == winners)),
        )
    else:
        summary.update(
            greedy_prediction=plan.greedy,
            greedy_predicted_times=None,
            greedy_predicted_students=None,
            greedy_match_fraction=None,
        )
    text = json.dumps(summary, indent=1, default=str).encode()
    write_folder(plan.out, {"arrays.npz": _npz(_arrays(trajectory)), "summary.json": lambda h: h.write(text)})
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, default=str)[:2000])
    return 0


def _diverged(plan: Plan, error: Exception, config: dict) -> int:
    """Write the records up to the divergence (marked partial) and say where it happened (exit 3)."""
    step, time, lr = (getattr(error, name, None) for name in ("step", "time", "lr"))
    lr = lr if lr is not None else (None if math.isnan(plan.lr) else plan.lr)
    if time is None and step is not None and lr is not None:
        time = step * lr
    if plan.method == "sgd":
        from companion.sgd import stability_edge

        stable = f"stable range: --lr below the measured edge {stability_edge(plan.model.d, plan.batch):.3g} (half of it is safe)"
    elif plan.method == "gd":
        from companion.dynamics import stability_step

        stable = f"stable range: --lr < {stability_step(plan.model.teacher()):.3g} (1/(2 kappa(1) a_max))"
    else:
        stable = "the adaptive solver stopped: lower --horizon or --init-norm-sq"
    arrays = _arrays(getattr(error, "partial", None))
    where = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in (("step", step), ("time", time), ("lr", lr))
        if v is not None
    )
    summary = {
        "config": config,
        "partial": True,
        "diverged": {"step": step, "time": time, "lr": lr, "message": str(error)},
        "records_written": 0 if arrays is None else int(np.size(arrays["times"])),
    }
    files = {"summary.json": (lambda h: h.write(json.dumps(summary, indent=1, default=str).encode()))}
    if arrays is not None:
        files["arrays.npz"] = _npz(arrays)
    write_folder(plan.out, files)
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(
        f"python -m companion simulate: diverged ({where or 'see the message'}); {stable}. "
        f"{summary['records_written']} records up to it written to {plan.out} (partial). {first_line}",
        file=sys.stderr,
    )
    return EXIT_DIVERGED


def _reproduce(args) -> int:
    from companion.registry import EXPERIMENTS, get_experiment

    if args.list:
        for experiment in EXPERIMENTS.values():
            print(f"{experiment.name}: {experiment.description} (presets: {', '.join(experiment.preset_names())})")
        return 0
    if args.experiment is None:
        raise Refusal(f"give an experiment: one of {', '.join(EXPERIMENTS)} (see reproduce --list)")
    try:
        experiment = get_experiment(args.experiment)
        experiment.check_preset(args.preset)
    except ValueError as error:
        raise Refusal(str(error)) from None
    out = check_output("--out", args.out, "file")
    from companion.cache import Cache

    Cache().usable()  # an unwritable cache is said now, once; the experiment then runs without it
    try:
        summary = {"experiment": args.experiment, "preset": args.preset, **experiment.run(args.preset, args.progress)}
    except FloatingPointError as error:
        print(
            f"python -m companion reproduce: {args.experiment} diverged: {str(error).splitlines()[0]}", file=sys.stderr
        )
        return EXIT_DIVERGED
    if out is not None:
        write_file(out, json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps(summary, default=str)[:2000])
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    import warnings

    parser = _parser()
    args = parser.parse_args(argv)
    __import__("companion").enable_float64()  # the CLI computes as the book does (64-bit types on)
    with warnings.catch_warnings():  # warnings become one line each on stderr, as they happen
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        return _main(parser, args)


def _main(parser, args) -> int:
    try:
        return _simulate(args) if args.command == "simulate" else _reproduce(args)
    except Refusal as error:  # refused before any compute: one line, exit 2 like argparse
        print(f"python -m companion {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except WriteFailure as error:
        print(f"python -m companion {args.command}: {error}; nothing was left half written", file=sys.stderr)
        return EXIT_WRITE_FAILED


if __name__ == "__main__":
    sys.exit(main())
