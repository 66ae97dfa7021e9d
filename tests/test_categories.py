import pytest
import torch

import boundgeo as bg
from boundgeo.geometry.categories import category_of, transition


@pytest.mark.parametrize(
    "rates, expected",
    [
        ((0.1, 0.0, 0.0), 1),
        ((0.49, 0.3, 0.2), 1),
        ((0.5, 0.3, 0.2), 2),
        ((0.9, 0.5, 0.2), 3),
        ((1.0, 1.0, 0.5), 4),
        ((1.0, 0.2, 0.7), 4),  # random ≥ τ decides first, whatever the others say
    ],
)
def test_category_logic_on_hand_made_rates(rates, expected):
    assert category_of(*rates, threshold=0.5) == expected


def test_transition_interpolates_linearly():
    eps = [1.0, 2.0, 3.0, 4.0]
    assert transition(eps, [0.0, 0.2, 0.6, 1.0], 0.5) == pytest.approx(2.75)
    assert transition(eps, [0.0, 0.5, 0.6, 1.0], 0.5) == pytest.approx(2.0)
    assert transition(eps, [0.7, 0.8, 0.9, 1.0], 0.5) == 1.0  # at or below the first budget
    assert transition(eps, [0.0, 0.1, 0.2, 0.3], 0.5) is None


@pytest.mark.parametrize("dim", [2, 100])
@pytest.mark.parametrize("build", bg.toys.ALL, ids=lambda b: b.__name__)
def test_each_toy_lands_in_its_own_category(build, dim):
    toy = build(dim=dim)
    found = bg.categorize(toy.classifier, toy.x, eps=toy.eps)
    assert found.value == toy.category, str(found)
    assert found.name == bg.geometry.categories.NAMES[toy.category]
    assert found.formula.startswith(bg.geometry.categories.FORMULAS[toy.category])
    assert "evidence" in found.note and "not a proof" in found.note


@pytest.mark.parametrize("dim, n", [(2, 50), (3, 100), (100, 100)])
def test_scattered_normals_keeps_its_inputs_apart_for_any_dim_and_n(dim, n):
    toy = bg.toys.scattered_normals(dim=dim, n=n)
    assert toy.x.shape == (n, dim)
    gaps = torch.cdist(toy.x, toy.x) + 1e9 * torch.eye(n)
    assert gaps.min() >= 2.5 - 1e-5  # each plane's class-1 region lies within 0.95 of its input
    pts = bg.deepfool(toy.classifier, toy.x)
    assert pts.converged.all()
    torch.testing.assert_close(pts.margin, torch.full((n,), toy.margin), rtol=0.05, atol=1e-4)
    assert bg.categorize(toy.classifier, toy.x, eps=toy.eps).value == 2


def test_rates_nest_and_profiles_are_deterministic(small_net, tmp_path):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    eps = [0.1, 0.3, 0.6, 1.0, 2.0, 4.0]
    a = bg.robustness_profile(clf, x[:120], epsilons=eps, draws=4, universal_passes=2, seed=3)
    b = bg.robustness_profile(clf, x[:120], epsilons=eps, draws=4, universal_passes=2, seed=3)
    assert (a.per_image_rate >= a.universal_rate).all() and (a.universal_rate >= a.random_rate).all()
    for name in ("per_image_rate", "universal_rate", "random_rate", "category"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.category[1:] >= a.category[:-1]).all(), a.category  # larger budgets, weaker category
    assert a.eps2 is not None and a.eps2 <= (a.eps3 or float("inf")) <= (a.eps4 or float("inf"))
    loaded = bg.RobustnessProfile.load(a.save(tmp_path / "profile"))
    assert torch.equal(loaded.category, a.category) and loaded.eps2 == a.eps2
    assert len(a.to_frame()) == 3 * len(eps)
    assert "not a proof" in a.summary() and "ε₂" in a.summary()
    assert a.category_at(0.35) == int(a.category[1])


def test_category_round_trip(tmp_path):
    toy = bg.toys.stacked_slabs(dim=2)
    cat = bg.categorize(toy.classifier, toy.x, eps=toy.eps)
    loaded = bg.Category.load(cat.save(tmp_path / "cat"))
    import dataclasses

    assert dataclasses.asdict(loaded) == dataclasses.asdict(cat) and "category 3" in str(cat)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epsilons=[]), "epsilons"),
        (dict(epsilons=[-1.0]), "epsilons"),
        (dict(epsilons=[1.0], norm="l1"), "norm"),
        (dict(epsilons=[1.0], threshold=0.0), "threshold"),
        (dict(epsilons=[1.0], fit_fraction=1.0), "fit_fraction"),
        (dict(epsilons="abc"), r"epsilons\[0\] must be a finite real number, got 'abc'"),
        (dict(epsilons=[1.0, float("nan")]), r"epsilons\[1\] must be a finite"),
        (dict(epsilons=[1.0], draws=2.5), "draws must be a whole number"),
        (dict(epsilons=[1.0], seed=-1), "seed must be between"),
        (dict(epsilons=[1.0], seed=1.5), "seed must be a whole number"),
        (dict(epsilons=[1.0], refine=True, pgd_steps=0), "pgd_steps must be >= 1, got 0"),
        (dict(epsilons=[1.0], refine=True, pgd_steps=-3), "pgd_steps must be >= 1, got -3"),
        (dict(epsilons=[1.0], batch_size=0), "batch_size must be >= 1"),
        (dict(epsilons=[1.0], universal_method="pgd"), "universal_method must be one of"),
        (dict(epsilons=[1.0], universal_passes=0), "universal_passes must be >= 1"),
        (dict(epsilons=[1.0], threshold=float("nan")), "threshold must be a finite"),
    ],
)
def test_bad_input_raises(small_net, kwargs, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.robustness_profile(bg.Classifier(model), x[:20], **kwargs)


def test_pgd_refinement_only_adds_witnesses(small_net):
    from boundgeo.geometry.categories import pgd_fooled

    model, x, _ = small_net
    clf = bg.Classifier(model)
    eps = [0.2, 0.4, 0.8]
    plain = bg.robustness_profile(clf, x[:100], epsilons=eps, draws=3, universal_passes=1, seed=1)
    refined = bg.robustness_profile(clf, x[:100], epsilons=eps, draws=3, universal_passes=1, seed=1,
                                    refine=True, pgd_steps=10)
    assert (refined.per_image_rate >= plain.per_image_rate).all()
    assert torch.equal(refined.universal_rate, plain.universal_rate)
    # PGD is an independent attack: it fools the inputs DeepFool puts well inside the ball, and
    # nothing at a budget far below every margin
    clean = clf.predict(x[:100])
    margins = bg.deepfool(clf, x[:100]).margin
    hits = pgd_fooled(clf, x[:100], clean, 0.8, steps=20)
    inside = margins < 0.6
    assert inside.sum() > 20 and hits[inside].float().mean() > 0.9
    assert not pgd_fooled(clf, x[:100], clean, 1e-4, steps=5).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(eps=[1, 2]), r"eps must be a finite real number, got \[1, 2\]"),
     (dict(eps=0.0), r"eps must be in \(0"),
     (dict(eps=1.0, threshold=2.0), r"threshold must be in \(0, 1\]"),
     (dict(eps=1.0, draws=0), "draws must be >= 1")],
)
def test_categorize_bad_settings_raise(kwargs, match):
    toy = bg.toys.wide_margins(dim=2)
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.categorize(toy.classifier, toy.x, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(steps=0), "steps must be >= 1, got 0"),  # a ZeroDivisionError before
     (dict(steps=-3), "steps must be >= 1"),  # no attack at all before, and every input unfooled
     (dict(step_size=0.0), r"step_size must be in \(0"),
     (dict(batch_size=0), "batch_size must be >= 1")],
)
def test_pgd_bad_settings_raise(kwargs, match):
    from boundgeo.geometry.categories import pgd_fooled

    toy = bg.toys.wide_margins(dim=2)
    clf = toy.classifier
    with pytest.raises(bg.BoundgeoError, match=match):
        pgd_fooled(clf, toy.x, clf.predict(toy.x), 0.5, **kwargs)


def test_profile_wraps_a_bare_module_with_a_warning():
    toy = bg.toys.wide_margins(dim=2, n=40)
    with pytest.warns(UserWarning, match="bare _Halfspace"):
        with pytest.raises(bg.BoundgeoError, match="outside the bounds"):  # the toy lives outside [0, 1]
            bg.robustness_profile(toy.model, toy.x, epsilons=[0.5])


def test_profile_batch_size_bounds_every_pass_and_not_the_result(request):
    # batch_size must bound every forward/backward pass of the profile, the universal witnesses'
    # included (they ran 64-input gradients and 512-input checks whatever batch_size said, 7-8 GB
    # at 224x224); the profile itself must not change
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).eval()
    clf = bg.Classifier(model)
    x = torch.rand(60, 1, 4, 4)
    settings = dict(epsilons=[0.2, 0.5, 1.0], draws=3, universal_passes=2, seed=1)
    plain = bg.robustness_profile(clf, x, **settings)
    seen = request.getfixturevalue("forward_sizes")  # counted from here on
    small = bg.robustness_profile(clf, x, batch_size=4, **settings)
    assert max(seen) <= 4, max(seen)
    for field in ("per_image_rate", "universal_rate", "random_rate", "category"):
        torch.testing.assert_close(getattr(small, field), getattr(plain, field))
