"""companion: the computations behind the literate companion to Ren, Nichani, Wu & Lee (2025),
"Emergence and Scaling Laws in SGD Learning of Shallow Neural Networks" (arXiv 2504.19983).

The package computes; the book's chapters tell the story. Nothing here prints or plots on its own.

JAX configuration fixed here, in code, so that every chapter, test and command line run sees the
same random streams: the threefry PRNG is partitionable. Importing the package does **not** switch
on 64-bit types (that would change the default dtypes of all JAX code in the user's process);
every constructor defaults to float32, and code that needs float64 (``dtype="float64"``, the
layer-wise readout, SGD runs longer than 2**31 steps) asks for it: call :func:`enable_float64`
first (the chapters do, in their setup cell). With 64-bit types on, the engines also record the
population loss in float64; with them off, in float32, whose residual-form loss
(:func:`companion.loss.population_loss`) keeps about three digits down to losses of 1e-6.
"""

import jax

jax.config.update("jax_threefry_partitionable", True)


def enable_float64(enable: bool = True) -> None:
    """Make 64-bit types available to JAX in this process (``jax_enable_x64``); ``False`` turns them off.

    Call it before creating arrays: arrays made before keep their dtype. Defaults stay float32
    everywhere in ``companion`` (constructors take an explicit ``dtype``).
    """
    jax.config.update("jax_enable_x64", bool(enable))


from companion.config import PRESETS, ModelConfig  # noqa: E402
from companion.dynamics import (  # noqa: E402
    BlowUpError,
    Trajectory,
    crossing_time,
    decoupled_blowup_time,
    decoupled_crossing_time,
    decoupled_solution,
    direction_escapes,
    euler_flow,
    log_times,
    logistic_norm,
    logistic_time,
    pair_escape_times,
    reduced_direction_field,
    reference_flow,
    refined_escape_times,
    single_neuron_crossing_time,
    stability_step,
    vector_field,
)
from companion.errors import DivergenceError  # noqa: E402
from companion.hermite import (  # noqa: E402
    Activation,
    activation_from_callable,
    activation_from_coefficients,
    get_activation,
    hermite,
    hermite_activation,
    hermite_coefficients,
    hermite_derivative,
    hermite_stack,
)
from companion.loss import (  # noqa: E402
    monte_carlo_loss,
    population_gradient,
    population_loss,
    residual_loss,
)
from companion.selection import (  # noqa: E402
    Comparison,
    Selection,
    compare_with_trajectory,
    greedy_selection,
    passing_pairs,
    strength_matrix,
)
from companion.student import (  # noqa: E402
    init_student,
    norms_sq,
    overlaps,
    student_holding,
    student_output,
    unit_directions,
)
from companion.teacher import (  # noqa: E402
    Teacher,
    condition_number,
    correlated_directions,
    correlation_range,
    make_teacher,
    power_law_coefficients,
    sample,
)

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "BlowUpError",
    "Comparison",
    "DivergenceError",
    "ModelConfig",
    "PRESETS",
    "Selection",
    "Teacher",
    "Trajectory",
    "activation_from_callable",
    "activation_from_coefficients",
    "compare_with_trajectory",
    "condition_number",
    "correlated_directions",
    "correlation_range",
    "crossing_time",
    "decoupled_blowup_time",
    "enable_float64",
    "decoupled_crossing_time",
    "decoupled_solution",
    "direction_escapes",
    "euler_flow",
    "get_activation",
    "greedy_selection",
    "hermite",
    "hermite_activation",
    "hermite_coefficients",
    "hermite_derivative",
    "hermite_stack",
    "init_student",
    "log_times",
    "logistic_norm",
    "logistic_time",
    "make_teacher",
    "monte_carlo_loss",
    "norms_sq",
    "overlaps",
    "pair_escape_times",
    "passing_pairs",
    "population_gradient",
    "population_loss",
    "power_law_coefficients",
    "reduced_direction_field",
    "reference_flow",
    "refined_escape_times",
    "residual_loss",
    "sample",
    "single_neuron_crossing_time",
    "stability_step",
    "strength_matrix",
    "student_holding",
    "student_output",
    "unit_directions",
    "vector_field",
]
