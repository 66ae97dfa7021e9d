"""The report reads what the command line records beside the results (setup.json)."""

import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import boundgeo as bg  # noqa: E402
from boundgeo.report import render  # noqa: E402


@pytest.fixture(scope="module")
def results_dir(small_net, tmp_path_factory):
    """Normals (with the data's labels kept) and their spectrum, as the command line saves them."""
    model, x, y = small_net
    out = tmp_path_factory.mktemp("results")
    clf = bg.Classifier(model)
    pts = bg.boundary_normals(clf, (x[:40], y[:40]), out=out / "normals", progress=False, keep_misclassified=True)
    bg.spectrum(pts, kind="perturbation", baseline_draws=2).save(out / "spectrum")
    return out


def _setup(out, **fields):
    (out / "setup.json").write_text(json.dumps(fields))


def test_notes_come_first_and_the_setup_names_model_data_and_classes(results_dir):
    names = [f"digit {i}" for i in range(10)]
    _setup(results_dir, model="my.nets:make", weights="random (torchvision factory called without weights)",
           parameters=1234, num_classes=10, preset="cifar10", mean=[0.5], std=[0.25],
           description="image folder /data/x: 40 images in 10 classes", input_shape=[1, 8, 8], classes=names,
           labels_compared=True, notes={"weights": "the weights of my.nets:make are random", "labels": ""})
    md, page = render(results_dir)
    text = md.read_text()
    assert text.index("> **Note:** The weights of my.nets:make are random.") < text.index("## What was analysed")
    assert "Note:** ." not in text  # empty notes are left out
    assert "Model: my.nets:make, 1,234 parameters, 10 classes, weights random" in text
    assert "mean [0.5] and std [0.25] (preset cifar10)" in text
    assert "Data: image folder /data/x: 40 images in 10 classes; inputs of 1x8x8." in text
    assert "Classes: digit 0, digit 1" in text
    assert "<b>Note:</b> The weights of my.nets:make are random." in page.read_text()


def test_margins_are_grouped_by_the_data_classes_when_predictions_are_not_theirs(results_dir, monkeypatch):
    from boundgeo import plot

    calls = []
    original = plot.plot_margins
    monkeypatch.setattr(plot, "plot_margins", lambda pts, **kw: calls.append(kw) or original(pts, **kw))
    names = [f"digit {i}" for i in range(10)]
    _setup(results_dir, classes=names, labels_compared=True)
    render(results_dir)
    _setup(results_dir, classes=names, labels_compared=False)
    render(results_dir)
    assert calls == [{"class_names": names}, {"by": "true_label", "class_names": names}]


def test_results_without_a_setup_still_render_and_a_broken_one_is_named(results_dir):
    (results_dir / "setup.json").unlink(missing_ok=True)
    text = render(results_dir, draw=False)[0].read_text()
    assert "What was analysed" not in text and "Note" not in text and "Spectrum" in text
    (results_dir / "setup.json").write_text("{not json")
    with pytest.raises(bg.BoundgeoError, match="setup.json is not valid JSON"):
        render(results_dir, draw=False)
    (results_dir / "setup.json").unlink()


def test_the_spectrum_section_gives_the_correlation_in_one_number(results_dir):
    _setup(results_dir)
    md, _ = render(results_dir)
    spec = bg.Spectrum.load(results_dir / "spectrum")
    text = md.read_text()
    assert f"the mean of cos² over pairs of these directions is {spec.mean_squared_cosine:.3g}" in text
    assert f"against 1/d = {1 / spec.d:.3g}" in text and "have |cos| > 0.5" in text


@pytest.mark.parametrize("target, rate, expected", [
    (3, None, "."),
    (None, 0.25, "."),
    (3, 0.25, "; it sends 25.0% of the held-out inputs not predicted as 3 to 3."),
    (3, float("nan"), "; every held-out input is predicted as 3 already."),
])
def test_the_targeted_sentence_never_prints_nan(target, rate, expected):
    from boundgeo.report import _held_out_target

    uap = bg.UniversalPerturbation(perturbation=torch.zeros(4), xi=1.0, norm="l2", method="sgd", fooling_rate=0.5,
                                   eval_fooling_rate=0.5, history=[], seconds=1.0, passes=1, reached=False,
                                   target=target, target_rate=None if target is None else 0.5,
                                   eval_target_rate=rate)
    assert _held_out_target(uap) == expected
    assert "nan" not in expected
