"""Serialization of online-SGD runs for the results cache: finished results and checkpoints.

A finished run is stored under the hash of its :class:`companion.sgd.SGDConfig`; an unfinished one
as a ``partial`` entry holding the engine state and the records taken so far, from which
:func:`companion.sgd.run_sgd` resumes.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from companion._sgd_types import SGDConfig, SGDResult, SGDState


def load_result(store, config: SGDConfig) -> SGDResult | None:
    """The cached finished result of ``config``, or None."""
    hit = store.load(config)
    if hit is None:
        return None
    arrays, meta = hit
    return SGDResult(
        config,
        config.lr,
        arrays["steps"],
        arrays["overlaps"],
        arrays["norms_sq"],
        arrays["loss"],
        arrays["final_state"],
        float(meta.get("wall_time", 0.0)),
        cached=True,
    )


def save_result(store, config: SGDConfig, result: SGDResult) -> None:
    """Store the finished result and drop the checkpoint."""
    store.save(config, result.arrays(), {"wall_time": result.wall_time})
    store.remove(config, tag="partial")


def load_partial(store, config: SGDConfig) -> tuple[SGDState, dict] | None:
    """``(state, records)`` of the last checkpoint of ``config``, or None."""
    part = store.load(config, tag="partial")
    if part is None:
        return None
    arrays, _ = part
    R = arrays["steps"].size
    records = {
        "steps": [int(s) for s in arrays["steps"]],
        "overlaps": [arrays["overlaps"][:, i] for i in range(R)],
        "norms_sq": [arrays["norms_sq"][:, i] for i in range(R)],
        "loss": [arrays["loss"][:, i] for i in range(R)],
    }
    state = SGDState(
        jnp.asarray(arrays["V"]),
        jnp.asarray(arrays["key"]),
        jnp.asarray(arrays["step"]),
        jnp.asarray(arrays["diverged_at"]),
    )
    return state, records


def save_partial(store, config: SGDConfig, state: SGDState, records: dict) -> None:
    """Checkpoint the engine state and the records taken so far."""
    S, m, P = state.V.shape[0], config.model.m, config.model.P
    R = len(records["steps"])
    store.save(
        config,
        {
            "V": np.asarray(state.V),
            "key": np.asarray(state.key),
            "step": np.asarray(state.step),
            "diverged_at": np.asarray(state.diverged_at),
            "steps": np.asarray(records["steps"], dtype=np.int64),
            "overlaps": np.stack(records["overlaps"], 1) if R else np.zeros((S, 0, m, P), np.float32),
            "norms_sq": np.stack(records["norms_sq"], 1) if R else np.zeros((S, 0, m), np.float32),
            "loss": np.stack(records["loss"], 1) if R else np.zeros((S, 0), np.float64),
        },
        {"step": int(state.step)},
        tag="partial",
    )
