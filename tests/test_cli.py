"""The command line: a run writes its summary; bad arguments exit 2 with a message naming them."""

import json

import pytest

from companion.__main__ import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_simulate_gd_writes_summary(tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "--method", "gd", "--d", "16", "--P", "2", "--m", "4", "--horizon", "60", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["escape_times"]) == 2 and summary["final_loss"] < 0.5
    assert (out / "arrays.npz").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["simulate", "--d", "8", "--P", "16", "--out", "x"], "P must be"),
        (["simulate", "--m", "0", "--out", "x"], "m must be >= 1"),
        (["simulate", "--beta", "-1", "--out", "x"], "beta must lie in"),
        (["simulate", "--lr", "-0.1", "--out", "x"], "lr must be > 0"),
        (["simulate", "--method", "adam", "--out", "x"], "invalid choice"),
        (["simulate", "--activation", "gelu", "--out", "x"], "unknown name"),
        (["simulate", "--steps", "10", "--horizon", "5", "--out", "x"], "not both"),
        (["reproduce", "nothing"], "unknown experiment"),
        (["reproduce", "width_sweep", "--preset", "huge"], "preset must be one of"),
        (["reproduce", "unstable_lr", "--preset", "huge"], "preset must be one of"),
        (["reproduce", "layerwise", "--preset", "huge"], "preset must be one of"),
        (["reproduce", "assumptions", "--preset", "huge"], "preset must be one of"),
    ],
)
def test_bad_arguments_exit_2(argv, needle, capsys):
    code, err = run(argv, capsys)
    assert code == 2
    assert needle in err
