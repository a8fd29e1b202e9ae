"""Interactive figures: the data they show is the package's, and the HTML is stable and offline."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import companion as cm  # noqa: E402
from companion import interactive as ia  # noqa: E402
from companion.scaling import tail_beyond, time_exponent  # noqa: E402


def test_h4_closed_form_matches_the_integrated_single_neuron_ode():
    s0, a = np.array([0.01, 0.03]), np.array([1.0, 0.5])
    h4 = cm.make_teacher(8, 1, coefficients=[1.0], activation="h4").activation
    for threshold in (0.1, 0.5, 0.9):
        numeric = cm.single_neuron_crossing_time(s0, a, h4, threshold)
        np.testing.assert_allclose(ia.h4_single_neuron_time(threshold, s0, a), numeric, rtol=2e-3)
    with pytest.raises(ValueError, match="s and s0"):
        ia.h4_single_neuron_time(1.0, 0.1)


def test_sharpening_window_is_about_13_s0_and_halves_with_each_doubling_of_d():
    grid = ia.sharpening_grid([256, 512, 1024, 2048], m=64)
    windows = np.array([grid[d][2] for d in sorted(grid)])
    s0 = np.log(64) / np.array([256, 512, 1024, 2048])
    np.testing.assert_allclose(windows / s0, 13.3, rtol=0.08)
    np.testing.assert_allclose(windows[1:] / windows[:-1], 0.5, atol=0.03)
    x, s, _ = grid[256]
    assert np.all(np.diff(x) > 0) and np.all(np.diff(s) > 0)
    assert np.interp(0.5, s, x) == pytest.approx(1.0, abs=1e-3)  # time is in units of the escape time
    with pytest.raises(ValueError, match="ds"):
        ia.sharpening_grid([8], m=64)


def test_staircase_grid_follows_the_time_exponent_and_validates():
    grid = ia.staircase_grid([0.8], [1024])
    t, loss, ref, first = grid[(0.8, 1024)]
    assert np.all(np.diff(first) > 0) and loss[np.searchsorted(t, first[0]) - 1] == pytest.approx(0.5)
    assert np.all(np.diff(loss) <= 0) and loss[0] == pytest.approx(0.5)
    inside = (t > 5) & (t < 200)
    # With the tail an infinite teacher would still owe (chapter 6), the slope is the law's.
    slope = np.polyfit(np.log(t[inside]), np.log(loss[inside] + tail_beyond(1024, 0.8)), 1)[0]
    assert slope == pytest.approx(time_exponent(0.8), abs=0.02)
    assert np.all(ref[t > 10] < ref[0])  # the reference is the decaying power law
    with pytest.raises(ValueError, match="betas"):
        ia.staircase_grid([0.4], [16])
    with pytest.raises(ValueError, match="Ps"):
        ia.staircase_grid([0.8], [1])


def _ids(html):
    return set(re.findall(r'id="([^"]+)"', html))


def test_staircase_figure_shows_one_curve_per_slider_position_and_is_reproducible():
    grid = ia.staircase_grid([0.7, 0.9], [16, 64], points=50)
    figure = ia.staircase_figure(grid, start=(0.9, 64))
    assert [s.name for s in figure.sliders] == ["beta", "P"]
    for key, flags in figure.visibility.items():
        assert sum(flags) == 3, key
    assert len({tuple(f) for f in figure.visibility.values()}) == 4  # every position shows different curves
    html = figure.to_html()
    assert html == ia.staircase_figure(grid, start=(0.9, 64)).to_html()  # no random ids
    assert _ids(html) == {"companion-staircase", "companion-staircase-plot"}
    assert 'data-state="1,1"' in html and html.count('type="range"') == 2
    assert "cdn.plot.ly" not in html and "<script src" not in html  # Plotly comes from the book's static files
    with pytest.raises(ValueError, match="start"):
        ia.staircase_figure(grid, start=(0.8, 16))


def test_bundle_carries_html_for_the_page_and_a_still_png_for_pdf_and_nbval():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [2, 1])
    figure = ia.sharpening_figure(ia.sharpening_grid([256, 512], m=64), still=fig)
    bundle = figure._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert bundle["image/png"].startswith("iVBOR")  # base64 of the PNG signature
    assert "d = 256" in bundle["text/plain"]
    assert not plt.get_fignums()  # the still was closed: it is not displayed a second time


def test_frontier_figure_groups_widths_toggles_seeds_and_overlays_predictions():
    t = np.logspace(0, 3, 40)
    widths, S = [8, 16, 32], 2
    loss = np.stack([[0.5 * (1 + m * t / 100) ** -0.4 for m in widths] for _ in range(S)])
    grid = np.logspace(1, 4, 30)
    figure = ia.frontier_figure(
        t,
        loss,
        widths,
        [0, 1],
        offset=0.01,
        predicted=loss * 0.9,
        envelope=(grid, 0.3 * grid**-0.2),
        predicted_envelope=(grid, 0.3 * grid**-0.23, "theory"),
    )
    data = figure.figure.data
    assert len(data) == S * len(widths) * 2 + 2
    assert {d.legendgroup for d in data[:-2]} == {"m8", "m16", "m32"}
    assert sum(bool(d.showlegend) for d in data[:-2]) == len(widths)  # one legend entry per width
    assert np.allclose(data[0].x, widths[0] * t, rtol=1e-3) and np.allclose(data[0].y, loss[0, 0] + 0.01, rtol=1e-3)
    assert "predicted" in data[1].name and data[1].line.dash == "dash"
    buttons = figure.figure.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all seeds", "seed 0", "seed 1"]
    seed1 = buttons[2].args[0]["visible"]
    assert seed1[:6] == [False] * 6 and all(seed1[6:])  # seed 1's curves, and both frontiers
    assert "compute %{x:.3g}" in data[0].hovertemplate
    with pytest.raises(ValueError, match="loss must have shape"):
        ia.frontier_figure(t, loss[:, :2], widths)
    single = ia.frontier_figure(t, loss[0], widths)
    assert len(single.figure.data) == len(widths) and not single.figure.layout.updatemenus
