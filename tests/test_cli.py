"""The command line: one validation pass refuses every bad flag before any compute (exit 2, one line
naming the flag); a run writes its folder atomically; divergence exits 3 with partial records."""

import json

import numpy as np
import pytest

import companion.__main__ as cli
from companion.__main__ import main
from companion.registry import EXPERIMENTS

TINY = ["--d", "8", "--P", "2", "--m", "4"]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the run itself starts; fix the available memory at 8 GiB."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the run started: the refusal came after the compute")

    monkeypatch.setattr(cli, "_run", forbidden)
    monkeypatch.setattr(cli, "available_memory", lambda: 8 << 30)
    return forbidden


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def _bad_simulate(tmp):
    a_file = tmp / "a_file"
    a_file.write_text("x")
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    out = ["--out", str(tmp / "o")]
    return [
        (["--d", "0", *out], "--d must be >= 1"),
        (["--d", "-5", *out], "--d must be >= 1"),
        (["--m", "0", *out], "--m must be >= 1"),
        (["--P", "0", *out], "--P must be >= 1"),
        (["--d", "8", "--P", "16", *out], "--P must be >= 1 and <= 8"),
        (["--beta", "-1", *out], "--beta must be"),
        (["--beta", "nan", *out], "--beta must be"),
        (["--beta", "inf", *out], "--beta must be"),
        (["--activation", "gelu", *out], "--activation must be"),
        (["--activation", "h0", *out], "--activation h<k> needs 1 <= k <= 60"),
        (["--activation", "h61", *out], "--activation h<k> needs 1 <= k <= 60"),
        (["--activation", "h-1", *out], "--activation must be"),
        (["--init-norm-sq", "0", *out], "--init-norm-sq must be"),
        (["--init-norm-sq", "-1", *out], "--init-norm-sq must be"),
        (["--init-norm-sq", "nan", *out], "--init-norm-sq must be"),
        (["--init-norm-sq", "1e39", *out], "--init-norm-sq must lie in"),
        (["--init-norm-sq", "1e-45", *out], "--init-norm-sq must lie in"),
        (["--lr", "-0.1", *out], "--lr must be finite and > 0"),
        (["--lr", "0", *out], "--lr must be finite and > 0"),
        (["--lr", "nan", *out], "--lr must be finite and > 0"),
        (["--lr", "inf", *out], "--lr must be finite and > 0"),
        (["--batch", "0", *out], "--batch must be >= 1"),
        (["--method", "gd", "--batch", "2", *out], "--batch applies to --method sgd only"),
        (["--steps", "0", *out], "--steps must be >= 1"),
        (["--steps", "-3", *out], "--steps must be >= 1"),
        (["--steps", str(2**62 + 1), *out], "--steps must be >= 1 and <= "),
        (["--horizon", "0", *out], "--horizon must be finite and > 0"),
        (["--horizon", "-1", *out], "--horizon must be finite and > 0"),
        (["--horizon", "inf", *out], "--horizon must be finite and > 0"),
        (["--horizon", "nan", *out], "--horizon must be finite and > 0"),
        (["--horizon", "1e300", *out], "--horizon 1e+300 at --lr"),
        (["--method", "gd", "--horizon", "1e-9", *out], "--horizon must be >= --lr"),
        (["--method", "flow", "--horizon", "inf", *out], "--horizon must be finite"),
        (["--records", "0", *out], "--records must be >= 1"),
        (["--records", "-2", "--method", "gd", *out], "--records must be >= 1"),
        (["--method", "flow", "--records", "1", *out], "--records must be >= 2 for --method flow"),
        (["--seed", "-1", *out], "--seed must be >= 0"),
        (["--seed", str(2**63), *out], "--seed must be >= 0 and <= 9223372036854775807"),
        (["--seed", str(2**64), *out], "--seed must be >= 0 and <= 9223372036854775807"),
        (["--steps", "10", "--horizon", "5", *out], "give --steps or --horizon, not both"),
        (["--method", "flow", "--lr", "0.1", *out], "--method flow is the adaptive solver"),
        (["--method", "flow", "--steps", "10", *out], "--method flow is the adaptive solver"),
        (["--out", ""], "--out must name a folder"),
        (["--out", "  "], "--out must name a folder"),
        (["--out", "."], "--out must name a new folder"),
        (["--out", str(a_file)], "--out must be a folder"),
        (["--out", str(a_file / "sub")], "is a file, so nothing can be made under it"),
        (["--out", str(busy)], "already holds other files"),
        (["--d", "60000", "--m", "60000", *out], "of memory"),
        (["--method", "gd", "--d", "60000", "--m", "60000", "--steps", "1", *out], "of memory"),
        (["--batch", "1000000000", "--steps", "10", *out], "of memory"),
        (["--method", "flow", "--records", "1000000000", *out], "of memory"),
    ]


def test_every_bad_simulate_flag_is_refused_before_compute(tmp_path, capsys, no_compute):
    cases = _bad_simulate(tmp_path)
    for argv, needle in cases:
        code, err = run(["simulate", *argv], capsys)
        assert code == 2, (argv, err)
        assert needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, (argv, err)  # one line, no traceback
    assert not (tmp_path / "o").exists()
    assert len(cases) >= 50


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["simulate", "--method", "adam", "--out", "x"], "invalid choice"),
        (["simulate", "--d", "abc", "--out", "x"], "--d: invalid int value"),
        (["simulate", "--beta", "0.8.1", "--out", "x"], "--beta: invalid float value"),
        (["simulate", "--d", "8"], "--out"),
    ],
)
def test_argparse_refusals_exit_2(argv, needle, capsys):
    code, err = run(argv, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_bad_reproduce_arguments_exit_2_before_compute(tmp_path, capsys, monkeypatch):
    for experiment in EXPERIMENTS.values():  # no runner may start
        monkeypatch.setattr(type(experiment), "run", lambda *a, **k: pytest.fail("the experiment started"))
    a_file = tmp_path / "f"
    a_file.write_text("x")
    cases = [
        (["reproduce", "nothing"], "unknown experiment"),
        (["reproduce"], "give an experiment"),
        *[(["reproduce", name, "--preset", "huge"], "--preset must be one of") for name in EXPERIMENTS],
        (["reproduce", "width_sweep", "--preset", "test", "--out", str(tmp_path)], "--out must be a file"),
        (["reproduce", "width_sweep", "--preset", "test", "--out", str(a_file / "x.json")], "is a file"),
        (["reproduce", "width_sweep", "--preset", "test", "--out", ""], "--out must name a file"),
    ]
    for argv, needle in cases:
        code, err = run(argv, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_reproduce_list_and_help_name_every_registered_experiment(capsys):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert name in listed
        assert "test" in experiment.preset_names()  # every experiment has a cheap preset
        for preset in experiment.preset_names():
            assert experiment.check_preset(preset) == preset and preset in listed
        assert callable(__import__("companion.registry").registry._resolve(experiment.runner))
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert "--list" in capsys.readouterr().out


def test_reproduce_out_is_written_atomically(tmp_path, capsys, monkeypatch):
    experiment = EXPERIMENTS["width_sweep"]
    monkeypatch.setattr(type(experiment), "run", lambda self, preset, progress=False: {"x": [1, 2]})
    out = tmp_path / "deep" / "summary.json"
    assert main(["reproduce", "width_sweep", "--preset", "test", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"experiment": "width_sweep", "preset": "test", "x": [1, 2]}
    assert sorted(p.name for p in out.parent.iterdir()) == ["summary.json"]  # no temporary left


def test_simulate_gd_writes_summary(tmp_path):
    out = tmp_path / "run"
    assert (
        main(["simulate", "--method", "gd", "--d", "16", "--P", "2", "--m", "4", "--horizon", "60", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["escape_times"]) == 2 and summary["final_loss"] < 0.5 and summary["partial"] is False
    assert (out / "arrays.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the temporary sibling is gone


def test_one_record_still_runs_every_step(tmp_path):
    """--records 1 used to run a single step whatever --steps said."""
    out = tmp_path / "r"
    assert (
        main(
            ["simulate", "--method", "gd", *TINY, "--lr", "0.05", "--steps", "40", "--records", "1", "--out", str(out)]
        )
        == 0
    )
    times = np.load(out / "arrays.npz")["times"]
    assert times[-1] == pytest.approx(40 * 0.05) and times[0] == 0.0
    assert json.loads((out / "summary.json").read_text())["final_time"] == pytest.approx(2.0)


@pytest.mark.filterwarnings("ignore:make_teacher. activation")
@pytest.mark.parametrize("activation", ["relu", "h2"])
def test_prediction_that_does_not_apply_is_said_not_refused(activation, tmp_path, capsys):
    out = tmp_path / activation
    assert (
        main(["simulate", "--method", "gd", *TINY, "--activation", activation, "--steps", "20", "--out", str(out)]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert "does not apply" in summary["greedy_prediction"] and summary["greedy_match_fraction"] is None


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys, no_compute):
    out = tmp_path / "never"
    assert main(["simulate", "--method", "sgd", *TINY, "--steps", str(10**18), "--dry-run", "--out", str(out)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["steps"] == 10**18 and plan["records"] >= 100
    assert "years" in plan["time_estimate"] and plan["memory_estimate"].endswith("B")
    assert not out.exists()


def test_progress_shows_the_estimate(tmp_path, capsys):
    assert main(["simulate", "--method", "gd", *TINY, "--steps", "5", "--progress", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "plan: 5 steps" in err and "memory about" in err and "available" in err


def test_divergence_exits_3_with_partial_records(tmp_path, capsys):
    out = tmp_path / "div"
    code = main(
        ["simulate", "--method", "sgd", *TINY, "--lr", "2.0", "--steps", "400", "--no-cache", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "diverged (step" in err and "lr 2" in err and "stable range" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["diverged"]["step"] >= 1
    arrays = np.load(out / "arrays.npz")
    assert arrays["times"].size == summary["records_written"] >= 1 and arrays["times"][0] == 0.0


def test_full_disk_leaves_the_previous_run_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["simulate", "--method", "gd", *TINY, "--steps", "10", "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(handle, **arrays):
        handle.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    assert main([*argv[:-2], "--steps", "20", "--out", str(out)]) == 4
    assert "No space left" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # one complete (older) run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unwritable_cache_is_said_at_the_start_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("COMPANION_CACHE", str(blocker / "cache"))
    out = tmp_path / "sgd"
    assert main(["simulate", "--method", "sgd", *TINY, "--steps", "50", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "running without the results cache" in captured.err and (out / "summary.json").exists()
