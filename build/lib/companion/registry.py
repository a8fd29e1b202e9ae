r"""The one registry of named experiments: ``python -m companion reproduce NAME --preset PRESET``.

Each experiment is declared once, by an :class:`Experiment` line in :data:`EXPERIMENTS`: its name,
a one-line description, its runner and its presets, the last two as ``"module:attribute"``
references that are imported only when used (listing the experiments imports nothing heavy).
``reproduce``, ``reproduce --list`` and the tests read this registry.

A runner is a function ``runner(preset: str, progress: bool) -> dict`` that runs the experiment
at the preset through the results cache and returns a JSON-able summary; the presets are a
module-level ``dict`` from preset name to the experiment's frozen configuration.

Adding an experiment is one line in :data:`EXPERIMENTS`, e.g.::

    Experiment("width_sweep_sgd", "width sweep trained by online SGD",
               "companion.frontier:reproduce_width_sweep_sgd", "companion.frontier:WIDTH_SWEEPS_SGD"),
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _resolve(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Experiment:
    """One named experiment.

    Attributes:
        name: the name ``reproduce`` takes.
        description: one line for ``reproduce --list``.
        runner: ``"module:function"``, the function ``(preset, progress) -> dict``.
        presets: ``"module:NAME"``, a dict from preset name to the experiment's configuration.
    """

    name: str
    description: str
    runner: str
    presets: str

    def preset_names(self) -> tuple[str, ...]:
        """The preset names, in the order the module declares them."""
        return tuple(_resolve(self.presets))

    def check_preset(self, preset: str) -> str:
        """Return ``preset`` if the experiment has it, else raise a ValueError naming ``--preset``."""
        names = self.preset_names()
        if preset not in names:
            raise ValueError(f"--preset must be one of {', '.join(names)} for {self.name}, got {preset!r}")
        return preset

    def run(self, preset: str, progress: bool = False) -> dict:
        """Run the experiment at ``preset`` (through the cache); its JSON-able summary."""
        runner: Callable[[str, bool], dict] = _resolve(self.runner)
        return runner(self.check_preset(preset), progress)


#: Every registered experiment, by name.
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "width_sweep",
            "width sweep of the scaling-law chapter (loss against time, width, compute)",
            "companion.experiments:reproduce_width_sweep",
            "companion.experiments:WIDTH_SWEEPS",
        ),
        Experiment(
            "width_sweep_sgd",
            "the same width sweep trained by online SGD, the paper's algorithm (scaling-law chapter)",
            "companion.frontier:reproduce_width_sweep_sgd",
            "companion.frontier:SGD_WIDTH_SWEEPS",
        ),
        Experiment(
            "unstable_lr",
            "online SGD at eta ~ a_P* against eta ~ a_min, one initialization (unstable-learning-rate chapter)",
            "companion.unstable:reproduce_unstable",
            "companion.unstable:UNSTABLE_PRESETS",
        ),
        Experiment(
            "layerwise",
            "width to recover the top P* directions, single-phase vs layer-wise training",
            "companion.layerwise:reproduce_layerwise",
            "companion.layerwise:LAYERWISE_SWEEPS",
        ),
        Experiment(
            "assumptions",
            "experiments of the chapter 'Where the assumptions break' (activations, "
            "correlated directions, minibatches and Adam, label noise)",
            "companion.assumptions:reproduce_assumptions",
            "companion.assumptions:PRESETS",
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``, or a ValueError listing the known ones."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)} (see reproduce --list)")
    return EXPERIMENTS[name]
