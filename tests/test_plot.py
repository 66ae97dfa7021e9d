import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import boundgeo as bg  # noqa: E402
from boundgeo import plot  # noqa: E402


@pytest.fixture(scope="module")
def results(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    pts = bg.deepfool(clf, x[:120])
    spec = bg.spectrum(pts, baseline_draws=2)
    fool = bg.subspace_fooling(clf, x[120:200], spec.basis(5), radii=[0.5, 1.0], draws=2)
    examples = bg.perturbed_examples(clf, x, 0.8 * torch.ones(1, 8, 8), k=4)
    profile = bg.robustness_profile(clf, x[:60], epsilons=[0.3, 1.0, 3.0], draws=2, universal_passes=1)
    return pts, spec, fool, examples, profile


def _saved(ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    return path.stat().st_size


def test_plots_draw_headless_into_non_empty_files(results, tmp_path):
    pts, spec, fool, examples, profile = results
    ax = plot.plot_spectrum(spec)
    assert ax.get_yscale() == "log" and len(ax.lines) >= 3
    assert _saved(ax, tmp_path, "spectrum") > 5000
    ax = plot.plot_spectrum({"a": spec, "b": spec}, normalise=True)
    assert {"a", "b"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert _saved(ax, tmp_path, "two") > 5000
    ax = plot.plot_subspace_fooling({"d'=5": fool})
    assert len(ax.lines) == 2 and _saved(ax, tmp_path, "fooling") > 5000
    assert _saved(plot.plot_margins(pts), tmp_path, "margins") > 5000
    axes = plot.plot_directions(spec.basis(4, reshape=True), titles=list("abcd"))
    assert axes.size == 4 and _saved(axes.flat[0], tmp_path, "directions") > 2000
    axes = plot.plot_examples(examples)
    assert axes.shape == (2, 4) and _saved(axes[0][0], tmp_path, "examples") > 2000
    toy = bg.toys.stacked_slabs(dim=2)
    assert _saved(plot.plot_regions_2d(toy), tmp_path, "regions") > 10_000
    ax = plot.plot_profile(profile)
    assert len(ax.lines) >= 4 and _saved(ax, tmp_path, "profile") > 5000


def test_plots_draw_into_a_given_axes(results):
    _, spec, _, _, _ = results
    fig, ax = plt.subplots()
    assert plot.plot_spectrum(spec, ax=ax) is ax
    plt.close(fig)


def test_computation_never_imports_plotting():
    import subprocess
    import sys

    code = "import sys, boundgeo; assert 'matplotlib' not in sys.modules and 'seaborn' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_curvature_plots(small_net, tmp_path):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    gen = torch.Generator().manual_seed(0)
    curv = bg.boundary_curvature(clf, x[:20], k=4, lanczos_steps=12,
                                 along={"random": torch.randn(3, 64, generator=gen), "pixels": torch.eye(64)[:3]})
    ax = plot.plot_curvature(curv)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    assert _saved(ax, tmp_path, "curvature") > 5000
    ax = plot.plot_section_curvature(curv)
    assert {"random", "pixels"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert _saved(ax, tmp_path, "section") > 5000


def test_transfer_plot_annotates_every_cell_and_outlines_the_diagonal(tmp_path):
    import pandas as pd

    frame = pd.DataFrame([[0.81, 0.074], [0.2, 0.64], [0.03, 0.01]], index=["cnn", "mlp", "random"],
                         columns=["cnn", "mlp"])
    ax = plot.plot_transfer(frame, title="t")
    assert [t.get_text() for t in ax.texts] == ["81", "7", "20", "64", "3", "1"]
    outlined = sorted((p.get_x(), p.get_y()) for p in ax.patches if isinstance(p, plt.Rectangle) and not p.get_fill())
    assert outlined == [(0, 0), (1, 1)]  # cnn→cnn and mlp→mlp; random has no column
    assert _saved(ax, tmp_path, "transfer") > 5000


def test_colour_perturbations_are_shown_around_grey_with_their_scale_stated():
    import numpy as np

    v = 0.01 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    ax = plot.plot_perturbation(v)
    shown = ax.images[0].get_array()
    assert shown.shape == (32, 32, 3)  # in colour, not a channel mean
    lim = float(v.abs().max())
    np.testing.assert_allclose(shown, 0.5 + 0.5 * v.permute(1, 2, 0).numpy() / lim, rtol=1e-5)
    assert f"max|v| = {lim:.3g}" in ax.get_title() and "grey = 0" in ax.get_title()
    plt.close(ax.figure)
    grey = plot.plot_perturbation(torch.randn(1, 8, 8))
    assert grey.images[0].get_array().ndim == 2 and len(grey.figure.axes) == 2  # one channel: colour bar
    plt.close(grey.figure)
    axes = plot.plot_directions(torch.randn(4, 3, 32, 32), titles=list("abcd"))
    assert axes.flat[0].images[0].get_array().shape == (32, 32, 3)
    assert "0.5 + v / (2·max|v|)" in axes.flat[0].figure.get_suptitle()
    plt.close(axes.flat[0].figure)


def test_examples_in_colour_with_the_data_class_above_the_prediction():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 32, 32, generator=gen)
    examples = bg.PerturbedExamples(clean=clean, perturbed=(clean + 0.1).clamp(0, 1),
                                    before=torch.tensor([417, 3, 3]), after=torch.tensor([417, 5, 3]))
    axes = plot.plot_examples(examples, true_names=["cat", "dog", "dog"])
    assert axes[0][0].images[0].get_array().shape == (32, 32, 3)
    assert [a.get_title() for a in axes[0]] == ["cat\npred 417", "dog\npred 3", "dog\npred 3"]
    assert [a.get_title() for a in axes[1]] == ["pred 417", "pred 5", "pred 3"]
    assert axes[1][1].title.get_color() == "#c0392b"  # changed by the perturbation
    plt.close(axes[0][0].figure)
    axes = plot.plot_examples(examples, class_names={3: "cat", 5: "dog", 417: "tabby"})
    assert [a.get_title() for a in axes[1]] == ["tabby", "dog", "cat"]
    plt.close(axes[0][0].figure)


def test_margins_name_the_classes_and_drop_an_unreadable_legend(results):
    import dataclasses

    pts = results[0]
    ax = plot.plot_margins(pts, class_names=[f"digit {i}" for i in range(10)])
    names = {t.get_text() for t in ax.get_legend().get_texts()}
    assert names and names <= {f"digit {i}" for i in range(10)}
    assert ax.get_legend().get_title().get_text() == "predicted class"
    plt.close(ax.figure)
    many = dataclasses.replace(pts, label=torch.arange(len(pts)))  # as many classes as points
    ax = plot.plot_margins(many)
    assert ax.get_legend() is None and f"({len(pts)} classes)" in ax.get_title()
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="true_label"):
        plot.plot_margins(pts, by="true_label")  # deepfool() keeps no data labels


def test_curvature_plots_of_a_single_point_show_every_value(small_net):
    import warnings

    import numpy as np

    model, x, _ = small_net
    gen = torch.Generator().manual_seed(0)
    curv = bg.boundary_curvature(bg.Classifier(model), x[:1], k=2, lanczos_steps=6,
                                 along={"a": torch.randn(1, 64, generator=gen), "b": torch.randn(1, 64, generator=gen)})
    values = curv.along_frame().curvature.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a group outside the bins had NaN densities (0 / 0)
        ax = plot.plot_section_curvature(curv)
    low, high = ax.get_xlim()
    assert low < values.min() and values.max() < high and "outside the axis" not in ax.get_xlabel()
    heights = [p.get_height() for p in ax.patches if hasattr(p, "get_height")]
    assert all(np.isfinite(heights))
    plt.close(ax.figure)
    ax = plot.plot_curvature(curv)
    assert not ax.texts  # no value of the two left outside the axis
    plt.close(ax.figure)


# ---------------------------------------------------------------- issue 18, item 6: figures
def _profile(eps, per_image, universal, random, threshold=0.5):
    """A RobustnessProfile with chosen rates, its transitions and categories as the library computes them."""
    from boundgeo.geometry.categories import category_of, transition

    return bg.RobustnessProfile(
        epsilons=torch.tensor(eps, dtype=torch.float64), per_image_rate=torch.tensor(per_image, dtype=torch.float64),
        universal_rate=torch.tensor(universal, dtype=torch.float64),
        random_rate=torch.tensor(random, dtype=torch.float64),
        category=torch.tensor([category_of(p, u, r, threshold) for p, u, r in zip(per_image, universal, random)]),
        eps2=transition(eps, per_image, threshold), eps3=transition(eps, universal, threshold),
        eps4=transition(eps, random, threshold), threshold=threshold, norm="l2", n=100, d=784, margin_median=1.0)


def _shading(ax):
    """(start, end, colour) of the category bands, left to right."""
    from matplotlib.colors import to_hex

    spans = [p for p in ax.patches if isinstance(p, plt.Rectangle)]
    return sorted((p.get_x(), p.get_x() + p.get_width(), to_hex(p.get_facecolor())) for p in spans)


MNIST_LIKE = _profile([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
                      [0.06, 0.2, 0.45, 0.99, 1.0, 1.0, 1.0],
                      [0.0, 0.01, 0.05, 0.33, 0.88, 0.89, 0.89],
                      [0.0, 0.0, 0.0, 0.01, 0.07, 0.65, 0.83])


@pytest.mark.parametrize("log_eps", [False, True])
def test_profile_shading_changes_category_exactly_at_the_reported_transitions(log_eps):
    prof = MNIST_LIKE
    assert 2.0 < prof.eps2 < 4.0  # between two budgets, away from their midpoint
    ax = plot.plot_profile(prof, log_eps=log_eps)
    spans = _shading(ax)
    colours = [plot._CATEGORY_COLORS[c] for c in (1, 2, 3, 4)]
    assert [c for _, _, c in spans] == colours
    edges = [spans[0][0]] + [end for _, end, _ in spans]
    assert edges == pytest.approx([0.5, prof.eps2, prof.eps3, prof.eps4, 32.0], rel=1e-12)
    # and the dotted lines stand on those edges
    lines = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert lines == pytest.approx([prof.eps2, prof.eps3, prof.eps4], rel=1e-12)
    plt.close(ax.figure)


def test_profile_shading_agrees_with_the_category_at_every_budget(results):
    prof = results[4]
    ax = plot.plot_profile(prof)
    colour_of = {plot._CATEGORY_COLORS[c]: c for c in (1, 2, 3, 4)}
    for e, cat in zip(prof.epsilons.tolist(), prof.category.tolist()):
        inside = [colour_of[c] for start, end, c in _shading(ax) if start <= e <= end]
        assert cat in inside
    plt.close(ax.figure)


def test_profile_names_its_transitions_above_the_axes_where_no_curve_runs():
    fig, ax = plt.subplots(figsize=(6, 4))
    plot.plot_profile(MNIST_LIKE, ax=ax, log_eps=True)
    ax.set_title("a title set afterwards")
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    labels = [t for child in ax.child_axes for t in child.get_xticklabels() if t.get_text()]
    assert sorted(t.get_text() for t in labels) == [
        f"ε₂ = {MNIST_LIKE.eps2:.3g}", f"ε₃ = {MNIST_LIKE.eps3:.3g}", f"ε₄ = {MNIST_LIKE.eps4:.3g}"]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert all(box.y0 >= area.y1 for box in boxes)  # above the data area
    assert not [t for t in ax.texts if t.get_visible()]  # nothing written over the curves
    assert ax.title.get_window_extent(renderer).y0 >= max(box.y1 for box in boxes) - 1  # title above them
    for one in boxes:  # labels of close transitions do not overprint each other
        assert sum(one.overlaps(other) for other in boxes) == 1
    plt.close(fig)


def test_profile_labels_of_close_transitions_are_staggered():
    prof = dataclasses.replace(MNIST_LIKE, eps3=MNIST_LIKE.eps2 * 1.05, eps4=MNIST_LIKE.eps2 * 1.1)
    fig, ax = plt.subplots(figsize=(5, 4))
    plot.plot_profile(prof, ax=ax, log_eps=True, bands=False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for child in ax.child_axes for t in child.get_xticklabels()
             if t.get_text()]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_profile_says_which_transition_the_grid_does_not_reach():
    prof = _profile([0.5, 1.0, 2.0, 4.0], [0.1, 0.3, 0.7, 1.0], [0.0, 0.1, 0.2, 0.6], [0.0, 0.0, 0.05, 0.1])
    assert prof.eps4 is None and prof.eps3 is not None
    ax = plot.plot_profile(prof)
    (top,) = ax.child_axes  # one row of labels
    assert top.get_xlabel() == "ε₄ not reached on the grid (> 4)"
    assert [t.get_text() for t in top.get_xticklabels()] == [f"ε₂ = {prof.eps2:.3g}", f"ε₃ = {prof.eps3:.3g}"]
    assert all(line.get_xdata()[0] < 4.0 for line in ax.lines if line.get_linestyle() == ":")  # none at the edge
    assert _shading(ax)[-1][1] == 4.0 and _shading(ax)[-1][2] == plot._CATEGORY_COLORS[3]
    plt.close(ax.figure)
    # a rate at τ from the first budget on: the transition lies at or below it
    early = _profile([0.5, 1.0], [0.6, 1.0], [0.1, 0.2], [0.0, 0.0])
    ax = plot.plot_profile(early)
    assert "ε₂ ≤ 0.5" in [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    assert "ε₃, ε₄ not reached" in ax.child_axes[0].get_xlabel()
    plt.close(ax.figure)


def _legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_spectrum_legend_lists_only_what_can_be_seen(results):
    from matplotlib.colors import to_hex

    spec = results[1]
    ax = plot.plot_spectrum(spec)
    labels = _legend_labels(ax)
    # the baseline of n random unit vectors hardly varies between draws: no band to list
    assert not any(label.startswith("random unit vectors, 5-95%") for label in labels)
    assert any("band is narrower than this line" in label for label in labels)
    (mp,) = [line for line in ax.lines if line.get_color() == plot.COLORS["marchenko_pastur"]]
    (mean,) = [line for line in ax.lines if line.get_color() == plot.COLORS["random"]]
    assert to_hex(mp.get_color()) != to_hex(mean.get_color()) and mp.get_linestyle() != mean.get_linestyle()
    assert mean.get_linewidth() > 2 * mp.get_linewidth()  # the thin line shows inside the broad one
    assert any("Marchenko-Pastur prediction\n(lies on the random mean)" == label for label in labels)
    plt.close(ax.figure)
    # a band wide enough to see is shaded and listed; an MP line away from the mean is listed plainly
    wide = dataclasses.replace(spec, baseline_low=spec.baseline_mean * 0.5, baseline_high=spec.baseline_mean * 2,
                               marchenko_pastur=spec.marchenko_pastur * 3)
    ax = plot.plot_spectrum(wide)
    labels = _legend_labels(ax)
    assert labels[0] == "random unit vectors, 5-95% over 2 draws" and len(ax.collections) == 1
    assert "Marchenko-Pastur prediction" in labels
    plt.close(ax.figure)


def _line_colours(ax):
    """legend label → colour (hex) of the line drawn with that label."""
    from matplotlib.colors import to_hex

    return {line.get_label(): to_hex(line.get_color()) for line in ax.lines if not line.get_label().startswith("_")}


def test_role_colours_are_the_same_in_every_figure(results, small_net):
    assert {"principal", "random", "universal", "per_image"} <= set(plot.COLORS)
    assert len(set(plot.COLORS.values())) == len(plot.COLORS)
    _, _, fool, _, profile = results
    ax = plot.plot_profile(profile)
    assert _line_colours(ax) == {"per-image rate": plot.COLORS["per_image"], "universal rate": plot.COLORS["universal"],
                                 "random rate": plot.COLORS["random"], f"τ = {profile.threshold:g}": "#262626"}
    plt.close(ax.figure)
    ax = plot.plot_subspace_fooling(fool)
    colours = _line_colours(ax)
    assert colours[f"full space (d={fool.d})"] == plot.COLORS["random"]
    assert colours[f"subspace (d'={fool.k})"] == plot.COLORS["principal"]
    plt.close(ax.figure)
    # curvature along principal and random directions, listed in either order
    from matplotlib.colors import to_hex

    model, x, _ = small_net
    gen = torch.Generator().manual_seed(0)
    for names in (("principal directions", "random directions"), ("random", "top-3 principal"), ("random", "pixels")):
        along = {name: torch.randn(3, 64, generator=gen) for name in names}
        curv = bg.boundary_curvature(bg.Classifier(model), x[:6], k=2, lanczos_steps=6, along=along)
        ax = plot.plot_section_curvature(curv)
        legend = {t.get_text(): to_hex(h.get_edgecolor()) for t, h in
                  zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
        for name in names:  # a role's colour, or one that no role holds
            expected = plot.role_color(name)
            assert legend[name] == expected if expected is not None else legend[name] not in plot.COLORS.values()
        means = [to_hex(line.get_color()) for line in ax.lines if line.get_linestyle() == "--"]
        assert means == [legend[name] for name in names]
        plt.close(ax.figure)
    assert plot.role_color("pixels") is None


def test_subspace_fooling_says_what_its_shaded_bands_are(results):
    import numpy as np

    fool = results[2]  # 2 draws
    ax = plot.plot_subspace_fooling(fool)
    labels = _legend_labels(ax)
    assert labels[-1] == "shaded: ±1 s.d. of the rate over 2 draws\n(one vector shared by all inputs per draw)"
    # the bands are mean ± 1 s.d. of the per-draw rates
    rates = fool.subspace_rates.double().numpy()
    expected_high = np.clip(fool.subspace_rate.double().numpy() + rates.std(axis=1), 0, 1)
    tops = [np.asarray(c.get_paths()[0].vertices)[:, 1].max() for c in ax.collections]
    assert any(np.isclose(top, expected_high.max()) for top in tops)
    plt.close(ax.figure)
    # one draw: no spread, so no band and nothing about one in the legend
    single = dataclasses.replace(fool, subspace_rates=fool.subspace_rates[:, :1], full_rates=fool.full_rates[:, :1],
                                 subspace_rate=fool.subspace_rates[:, 0], full_rate=fool.full_rates[:, 0])
    ax = plot.plot_subspace_fooling(single)
    assert not ax.collections and not any("shaded" in label for label in _legend_labels(ax))
    plt.close(ax.figure)


def test_subspace_margins_plot_draws_medians_and_marks_subspaces_with_none_found(tmp_path):
    import numpy as np

    margin = torch.tensor([[1.0, 4.0, float("inf")], [2.0, 6.0, float("inf")], [3.0, 8.0, 5.0]])
    result = bg.SubspaceMargins(margin=margin, converged=torch.isfinite(margin), subspaces=("low", "mid", "high"),
                                dims=torch.tensor([4, 4, 4]), label=torch.zeros(3, dtype=torch.long), d=16)
    ax = plot.plot_subspace_margins(result, reference=0.5)
    median = ax.lines[0]
    assert list(median.get_xdata()) == [0, 1] and list(median.get_ydata()) == [2.0, 6.0]  # inf is not drawn
    markers = [line for line in ax.lines if line.get_marker() == "^" and len(line.get_xdata())]
    assert [float(line.get_xdata()[0]) for line in markers] == [2.0]  # the subspace where most found none
    labels = _legend_labels(ax)
    assert "no margin within max_iter" in labels and "full space (DeepFool)" in labels
    assert [t.get_text() for t in ax.get_xticklabels()] == ["low\n(4)", "mid\n(4)", "high\n(4)"]
    assert ax.get_yscale() == "log" and _saved(ax, tmp_path, "margins") > 5000
    ax = plot.plot_subspace_margins({"a": result, "b": result}, log=False)
    assert np.allclose(ax.lines[0].get_ydata(), ax.lines[1].get_ydata()) and ax.get_yscale() == "linear"
    plt.close(ax.figure)
    other = dataclasses.replace(result, subspaces=("x", "y", "z"))
    with pytest.raises(ValueError, match="different subspaces"):
        plot.plot_subspace_margins({"a": result, "b": other})
