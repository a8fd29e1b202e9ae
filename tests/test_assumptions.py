"""companion.assumptions: the chapter "Where the assumptions break", run at its ``test`` preset.

The four experiments run once per module (about a minute of CPU, cached in a temporary folder); the
summary functions the chapter prints are checked on them, and the pure helpers on cases with known
answers.
"""

import math

import numpy as np
import pytest

import companion as cm
from companion import assumptions as ab
from companion.cache import Cache
from companion.scaling import tail_beyond
from companion.sgd import stable_lr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("assumptions-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPANION_CACHE", str(path))  # reproduce_assumptions uses the default cache
        yield path


@pytest.fixture(scope="module")
def preset():
    return ab.get_preset("test")


@pytest.fixture(scope="module")
def activations(preset):
    return {label: cm.get_activation(spec) for label, spec in preset.activations}


@pytest.fixture(scope="module")
def act_runs(preset, store):
    return ab.activation_experiment(preset, cache=store)


@pytest.fixture(scope="module")
def corr_runs(preset, store):
    return ab.correlated_experiment(preset, cache=store)


@pytest.fixture(scope="module")
def opt_runs(preset, store):
    return ab.optimizer_experiment(preset, cache=store)


@pytest.fixture(scope="module")
def noise_runs(preset, store):
    return ab.label_noise_experiment(preset, cache=store)


# ------------------------------------------------------------------------------------------------
# Flow records and their cache
# ------------------------------------------------------------------------------------------------


def test_flow_record_round_trips_through_its_own_cache_namespace(tmp_path):
    spec = ab.FlowSpec(cm.ModelConfig(d=8, P=2, m=4), horizon=20.0, records=20)
    first = ab.run_flow_spec(spec, cache=tmp_path)
    second = ab.run_flow_spec(spec, cache=tmp_path)
    assert isinstance(second, ab.FlowRecord) and isinstance(second.second_moment, float)
    for name in ab.FlowRecord._fields:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    store = Cache(tmp_path, namespace="assumptions_flow", version=ab.VERSION)
    assert store.load(spec) is not None
    assert Cache(tmp_path, namespace="assumptions_flow", version="optim-1").load(spec) is None
    trajectory = second.as_trajectory()
    assert trajectory.overlaps.shape == (20, 4, 2)
    np.testing.assert_array_equal(trajectory.initial_norms_sq, second.norms_sq[0])


def test_a_record_without_overlaps_says_so():
    spec = ab.FlowSpec(cm.ModelConfig(d=8, P=2, m=4), horizon=5.0, records=8, full=False)
    record = ab.run_flow_spec(spec, cache=False)
    assert record.overlaps is None and "overlaps" not in record.arrays()
    with pytest.raises(ValueError, match="full=False"):
        record.as_trajectory()
    with pytest.raises(ValueError, match="full=False"):
        ab.first_feature(record, cm.power_law_coefficients(2, 0.8), 0.0)


def test_flow_spec_validates_before_running():
    with pytest.raises(ValueError, match="horizon"):
        ab.FlowSpec(cm.ModelConfig(d=8, P=2, m=4), horizon=-1.0)


def test_flow_spec_teacher_is_correlated_on_request():
    spec = ab.FlowSpec(cm.ModelConfig(d=8, P=3, m=4), horizon=5.0, correlation=0.4)
    directions = np.asarray(spec.teacher().directions, dtype=np.float64)
    gram = directions @ directions.T
    np.testing.assert_allclose(gram, 0.6 * np.eye(3) + 0.4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Pure helpers with known answers
# ------------------------------------------------------------------------------------------------


def test_normalized_activation_is_centred_and_unit():
    act = ab.normalized_activation("relu", "relu")
    c = np.asarray(act.coefficients)
    assert act.name == "relu" and c[0] == 0.0
    assert np.sum(c**2) == pytest.approx(1.0, abs=1e-12)
    kept = ab.normalized_activation((1.0, 0.0, 3.0), centre=False)
    np.testing.assert_allclose(kept.coefficients, np.array([1.0, 0.0, 3.0]) / math.sqrt(10.0))


def test_single_neuron_times_k2_is_logistic():
    # (h2+h4)/sqrt2 at small overlaps: kappa'(c) = c + 2c^3, so t(s) = log-time; check t(s0) = 0
    # and monotone in the level; levels below s0 give 0
    act = cm.get_activation((0.0, 0.0, 2**-0.5, 0.0, 2**-0.5))
    t = ab.single_neuron_times(np.array([0.01, 0.2]), act, levels=(0.1, 0.5, 0.9))
    assert t[1, 0] == 0.0  # 0.2 starts above 0.1
    assert np.all(np.diff(t[0]) > 0) and np.all(t[:, 1:] > 0)
    # k* = 2: dc/dt ~ c near 0, so a t(0.1) from s0 = 0.01 is log(sqrt(0.1/0.01)) up to O(c^2) terms
    assert t[0, 0] == pytest.approx(0.5 * math.log(10.0), rel=0.1)


def test_loss_levels_and_exponent_window():
    a = cm.power_law_coefficients(8, 0.8)
    high, low = ab.loss_levels(a, first=2, last=6, second_moment=2.0)
    assert high == pytest.approx(float(np.sum(a[2:] ** 2)))
    assert low == pytest.approx(float(np.sum(a[6:] ** 2)))
    assert ab.loss_levels(a)[1] == pytest.approx(0.5 * float(np.sum(a[4:] ** 2)))  # last = P/2
    t = np.geomspace(0.1, 1e4, 200)
    flat = np.full_like(t, 0.4)
    with pytest.raises(ValueError, match="never falls"):
        ab.loss_exponent(t, flat, a, 0.8, first=2, last=6)


def test_loss_exponent_recovers_a_planted_power_law():
    a = cm.power_law_coefficients(16, 0.8)
    tail = tail_beyond(16, 0.8)
    t = np.geomspace(0.1, 1e6, 400)
    loss = 0.3 * t**-0.75 - tail  # loss + tail is an exact power law
    fit = ab.loss_exponent(t, loss, a, 0.8, first=2, last=12)
    assert fit.slope == pytest.approx(-0.75, abs=1e-6)


def test_common_direction_and_unlearned_loss():
    P, rho = 4, 0.3
    # a vector equal to u has overlaps <u, v_p> = sqrt((1 + (P-1) rho)/P) with every direction
    c = np.full(P, math.sqrt((1 + (P - 1) * rho) / P))
    assert ab.common_direction_overlaps(c, rho) == pytest.approx(1.0)
    a = np.array([0.6, 0.5, 0.4, 0.3])
    overlaps = np.zeros((2, P))
    overlaps[0, 0], overlaps[1, 2] = 0.9, 0.5  # direction 0 learned; 2 at v^2 = 0.25 < 0.5
    owed = ab.unlearned_loss(overlaps, a, second_moment=2.0)
    assert owed == pytest.approx(a[1] ** 2 + a[2] ** 2 + a[3] ** 2)


def test_noise_floor_for_h4_is_eta_sigma2_d_sum_a_over_b():
    teacher = cm.make_teacher(32, 8, beta=0.8, dtype="float64")
    got = ab.noise_floor(0.01, 16, 0.5, teacher)
    assert got == pytest.approx(0.01 * 0.25 * 32 * float(np.sum(teacher.coefficients)) / 16, rel=1e-9)
    assert ab.noise_floor(0.01, 16, 0.0, teacher) == 0.0


def test_top_feature_and_first_feature_types():
    a = cm.power_law_coefficients(4, 0.8)
    h4 = cm.get_activation("h4")
    top = ab.top_feature(a, 0.0, h4)
    assert isinstance(top, ab.TopFeature)
    assert top.v1 == pytest.approx(1.0, abs=1e-9) and top.gain == pytest.approx(1.0)
    # a single direction is its own common direction: there is no merge to find
    assert math.isnan(ab.merge_correlation(np.array([1.0]), h4))
    # a record in which no neuron ever holds a1/2 has no first feature
    R, m, P = 3, 2, 4
    quiet = ab.FlowRecord(
        np.arange(1.0, R + 1),
        np.full(R, 0.5),
        np.full((R, m), 1e-3, np.float32),
        np.zeros((m, P)),
        np.full(P, -1),
        np.full(P, np.inf),
        np.full((R, P), np.nan, np.float32),
        1.0,
        np.zeros((R, m, P), np.float32),
    )
    none = ab.first_feature(quiet, a, 0.0)
    assert none.time == math.inf and math.isnan(none.v1) and math.isnan(none.u)


def test_presets_and_their_errors():
    with pytest.raises(ValueError, match="preset must be one of"):
        ab.get_preset("huge")
    p = ab.get_preset("test", noise_levels=(0.0,))
    assert p.noise_levels == (0.0,) and ab.PRESETS["test"].noise_levels != (0.0,)
    configs = ab.optimizer_configs(p)
    assert set(configs) == {run[0] for run in p.optim_runs}
    sgd = configs[p.optim_runs[0][0]][0]
    assert sgd.lr == pytest.approx(stable_lr(p.optim_model.d, p.optim_runs[0][2]))
    assert sgd.steps * sgd.batch == p.optim_samples
    noise = ab.label_noise_configs(p)
    assert list(noise) == [0.0] and noise[0.0].lr * noise[0.0].steps == pytest.approx(p.noise_horizon, rel=1e-2)


# ------------------------------------------------------------------------------------------------
# The experiments at the test preset and the chapter's summaries
# ------------------------------------------------------------------------------------------------


def test_activation_experiment_and_windows(act_runs, activations, preset):
    assert set(act_runs.windows) == set(activations)
    for label in activations:
        assert sorted(act_runs.windows[label]) == sorted(preset.window_dims)
        assert len(act_runs.laws[label]) == len(preset.law_seeds)
    window = ab.window_summary(act_runs, activations)
    assert set(window) == {(label, d) for label in activations for d in preset.window_dims}
    for w in window.values():
        assert isinstance(w, ab.WindowStats)
        assert 0 < w.q25 <= w.median <= w.q75 and w.theory > 0
    # the chapter's finding at the test preset: h4's window is sharper than the k* = 2 and ReLU ones
    d = preset.window_dims[-1]
    assert window["h4", d].median < window["(h2+h4)/√2", d].median < window["relu", d].median


def test_escape_ratios(act_runs, activations, preset):
    ratio = ab.escape_ratio_summary(act_runs, activations, preset)
    assert set(ratio) == set(activations)
    P = preset.window_model.P
    for r in ratio.values():
        assert 0 < r.directions <= P and r.q25 <= r.median <= r.q75
    # the leading-order blow-up time of h4 is close (escapes come a little later, not earlier)
    assert 1.0 <= ratio["h4"].median < 2.0
    # at another d the ratios are computed from that d's records
    other = ab.escape_ratio_summary(act_runs, activations, preset, d=preset.window_dims[0])
    assert other["h4"] != ratio["h4"]


def test_law_summary(act_runs, preset):
    law = ab.law_summary(act_runs, preset, first=1)
    assert set(law) == set(act_runs.laws)
    for stats in law.values():
        assert stats.exponent < 0 and stats.exponent_spread == 0.0  # one seed
        assert 0 < stats.escaped <= preset.law_model.P
    # with P = 8 fewer than 6 directions lie in the window, so there is no escape-time law to fit
    assert all(math.isnan(s.gamma) and math.isnan(s.implied) for s in law.values())


def test_correlated_summary(corr_runs, preset):
    assert sorted(corr_runs.runs) == sorted(preset.correlations)
    summary = ab.correlated_summary(corr_runs, preset)
    a = cm.power_law_coefficients(preset.correlated_model.P, preset.correlated_model.beta)
    assert summary.rho_star == pytest.approx(ab.merge_correlation(a, cm.get_activation("h4")))
    for rho, c in summary.by_correlation.items():
        assert 0 <= c.match <= 1 and c.time_ratio > 0 and c.final_loss < 1e-3
        assert c.top == ab.top_feature(a, rho, cm.get_activation("h4"))
        first = [ab.first_feature(r, a, rho) for r in corr_runs.runs[rho]]
        assert c.first_v1 == pytest.approx(np.mean([f.v1 for f in first]))
    # orthonormal: the first feature is one teacher direction (so <u, .>^2 = 1/P); at rho = 0.5 it
    # leans towards the common direction u, as the best-fit criterion says
    zero, half = summary.by_correlation[0.0], summary.by_correlation[0.5]
    assert ab.first_feature(corr_runs.runs[0.0][0], a, 0.0).best > 0.9
    assert zero.first_u == pytest.approx(1 / preset.correlated_model.P, abs=0.05)
    assert half.first_u > 2 * zero.first_u and half.top.u > zero.top.u


def test_optimizer_summary(opt_runs, preset):
    stats = ab.optimizer_summary(opt_runs, preset, first=1, last=2)
    assert list(stats) == [run[0] for run in preset.optim_runs]
    for label, o in stats.items():
        assert o.lr == opt_runs.configs[label][0].lr
        assert o.reach_min <= o.reach <= o.reach_max
        assert o.floor >= -1e-6
        for r in opt_runs.runs[label]:
            assert r.samples[-1] == preset.optim_samples
    sgd = stats[preset.optim_runs[0][0]]
    assert np.isfinite(sgd.reach) and sgd.reach < preset.optim_samples and sgd.exponent < 0


def test_end_loss_is_the_median_over_seeds_of_each_runs_late_median(opt_runs, preset):
    a = ab.power_law_coefficients(preset.optim_model.P, preset.optim_model.beta)
    runs = opt_runs.runs[preset.optim_runs[0][0]]
    per_run = [np.median((r.loss - ab.unlearned_loss(r.overlaps, a))[-7:]) for r in runs]
    assert ab.end_loss(runs, a, late=7) == pytest.approx(float(np.median(per_run)), rel=1e-12)
    assert ab.optimizer_summary(opt_runs, preset, first=1, last=2)[preset.optim_runs[0][0]].floor == ab.end_loss(
        runs, a
    )


def test_label_noise_summary(noise_runs, preset):
    floors = ab.label_noise_summary(noise_runs, preset, first=1, last=2)
    assert list(floors) == list(preset.noise_levels)
    control = floors[0.0]
    assert control.predicted == 0.0 and control.excess == 0.0  # paired with itself
    noisy = floors[max(preset.noise_levels)]
    assert noisy.predicted > 0 and noisy.beyond.shape == noise_runs.runs[0.0].loss.shape
    assert noisy.fit.window == control.fit.window  # the window is the noiseless run's, for every level
    without_control = ab.LabelNoiseRuns({0.5: noise_runs.runs[0.5]}, {0.5: noise_runs.configs[0.5]})
    with pytest.raises(ValueError, match="must include 0.0"):
        ab.label_noise_summary(without_control, preset)


def test_reproduce_assumptions_summarizes_every_experiment(act_runs, corr_runs, opt_runs, noise_runs, preset):
    summary = ab.reproduce_assumptions("test")  # every run is already in the module's cache
    assert set(summary) == {"activations", "correlated", "optimizers", "label_noise"}
    assert set(summary["activations"]) == set(act_runs.laws)
    assert set(summary["correlated"]) == {str(rho) for rho in preset.correlations}
    h4 = summary["activations"]["h4"]
    assert set(h4["window"]) == set(preset.window_dims)
    assert summary["label_noise"]["0.0"]["final_loss"] == noise_runs.runs[0.0].loss[:, -1].tolist()


def test_escape_ratio_summary_names_a_bad_dimension(preset):
    with pytest.raises(ValueError, match="d must be one of"):
        ab.escape_ratio_summary(ab.ActivationRuns({}, {}), {}, preset, d=7)
