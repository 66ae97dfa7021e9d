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
