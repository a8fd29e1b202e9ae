import numpy as np
import pytest

from companion.report import bound, fmt, magnitude, markdown_table
from companion.scaling import idealized_escape_times, superposition_loss, time_exponent


def test_bound_and_fmt():
    assert bound(9.7e-11) == "1e-10" and bound(1e-3) == "1e-3" and bound(0) == "0"
    assert fmt(0.123456) == "0.123"


def test_magnitude_is_the_nearest_power_of_ten_on_a_log_scale():
    assert [magnitude(x) for x in (1.1e-3, 1.6e-3, 3.1e-3, 3.2e-3, 5.9e-3, 1.0)] == [
        "1e-3",
        "1e-3",
        "1e-3",
        "1e-2",
        "1e-2",
        "1e0",
    ]
    for bad in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite positive"):
            magnitude(bad)


def test_markdown_table():
    table = markdown_table(["a", "b"], [[1, 0.5]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5 |"]
    assert markdown_table(["|x|"], [["|y|"]]).splitlines()[2] == "| \\|y\\| |"


def test_superposition_counts_unlearned_terms():
    a = np.array([0.8, 0.6])
    T = idealized_escape_times(a, scale=1.0)  # 1.25, 1.667
    loss = superposition_loss(a, T, [1.0, 1.5, 2.0])
    np.testing.assert_allclose(loss, [0.5, 0.18, 0.0])
    with pytest.raises(ValueError, match="escape_times"):
        superposition_loss(a, T[:1], [1.0])
    assert time_exponent(0.8) == pytest.approx(-0.75)
    with pytest.raises(ValueError, match="beta"):
        time_exponent(0.5)
