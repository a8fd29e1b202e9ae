r"""One validated configuration of the model (teacher + initial student), with named presets.

Experiments in later chapters carry a :class:`ModelConfig` inside their own config. Presets:

* ``test``: seconds on a CPU, for unit tests;
* ``book``: what a chapter executes on a 2-core CPU;
* ``paper``: the paper's experiment, :math:`d = 2048`, :math:`P = 1024`, :math:`\sigma = h_4`,
  :math:`\beta = 0.8` (the width is ours: the paper's was not available).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from companion._validate import require_int, require_real
from companion.hermite import get_activation
from companion.student import check_norm_sq, init_student
from companion.teacher import Teacher, make_teacher

#: The largest seed :func:`jax.random.key` accepts (a signed 64-bit integer).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ModelConfig:
    r"""Teacher and initial student, fully determined by these fields.

    Attributes:
        d: input dimension.
        P: number of teacher directions (:math:`\le d`).
        m: student width (>= 1).
        beta: power-law exponent of :math:`a_p \propto p^{-\beta}`.
        activation: name of :math:`\sigma` (see :func:`companion.hermite.get_activation`).
        init_norm_sq: :math:`\|v_k(0)\|^2`; ``None`` means :math:`1/m`.
        teacher_directions: ``"axes"`` or ``"random"``.
        seed: the one integer every random draw derives from.
        dtype: ``"float32"`` or ``"float64"``.
    """

    d: int = 256
    P: int = 32
    m: int = 64
    beta: float = 0.8
    activation: str = "h4"
    init_norm_sq: float | None = None
    teacher_directions: str = "axes"
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        # Normalize while validating: equal values give equal configs and one cache key
        # (beta=1 and beta=1.0 are the same model; a string for a number is refused).
        set_ = object.__setattr__
        if not isinstance(self.dtype, str) or self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        set_(self, "d", require_int("d", self.d, 1))
        set_(self, "P", require_int("P", self.P, 1, self.d, why=f" (P orthonormal directions need P <= d = {self.d})"))
        set_(self, "m", require_int("m", self.m, 1))
        set_(self, "beta", require_real("beta", self.beta, low=0.0))
        set_(
            self,
            "seed",
            require_int("seed", self.seed, 0, MAX_SEED, why=" (jax.random.key takes a signed 64-bit seed)"),
        )
        if self.init_norm_sq is not None:
            set_(self, "init_norm_sq", require_real("init_norm_sq", self.init_norm_sq, low=0.0, low_open=True))
            check_norm_sq("init_norm_sq", self.init_norm_sq, self.m, self.dtype)
        if not isinstance(self.teacher_directions, str) or self.teacher_directions not in ("axes", "random"):
            raise ValueError(f"teacher_directions must be 'axes' or 'random', got {self.teacher_directions!r}")
        get_activation(self.activation)  # raises on an unknown name

    @classmethod
    def preset(cls, name: str, **overrides) -> ModelConfig:
        """A named preset (``test``, ``book``, ``paper``), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def replace(self, **changes) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def keys(self) -> dict[str, jax.Array]:
        """Independent PRNG keys for each random part, derived from ``seed``."""
        teacher_key, student_key, data_key = jax.random.split(jax.random.key(self.seed), 3)
        return {"teacher": teacher_key, "student": student_key, "data": data_key}

    def teacher(self) -> Teacher:
        return make_teacher(
            self.d,
            self.P,
            beta=self.beta,
            activation=self.activation,
            directions=self.teacher_directions,
            key=self.keys()["teacher"],
            dtype=self.dtype,
        )

    def student(self):
        """The initial student V(0), shape (m, d)."""
        return init_student(self.keys()["student"], self.m, self.d, self.init_norm_sq, self.dtype)

    def build(self):
        """``(teacher, V0)``."""
        return self.teacher(), self.student()


PRESETS: dict[str, ModelConfig] = {
    "test": ModelConfig(d=32, P=8, m=16),
    "book": ModelConfig(d=256, P=32, m=64),
    "paper": ModelConfig(d=2048, P=1024, m=1024),
}
