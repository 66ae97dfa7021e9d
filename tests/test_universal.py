import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg
from boundgeo.attacks.universal import project


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_projection(norm):
    gen = torch.Generator().manual_seed(0)
    for scale in (0.01, 1.0, 100.0):
        v = scale * torch.randn(3, 5, 5, generator=gen)
        p = project(v, 0.7, norm)
        size = float(p.norm()) if norm == "l2" else float(p.abs().max())
        assert size <= 0.7 + 1e-6
        torch.testing.assert_close(project(p, 0.7, norm), p)  # idempotent
        if norm == "linf":
            torch.testing.assert_close(p, v.clamp(-0.7, 0.7))
        else:  # exactly v · min(1, ξ/‖v‖)
            torch.testing.assert_close(p, v * min(1.0, 0.7 / float(v.norm())))
        inside = v * (0.5 / float(v.norm() if norm == "l2" else v.abs().max()))
        assert torch.equal(project(inside, 0.7, norm), inside)  # unchanged inside the ball
    assert torch.equal(project(torch.zeros(4), 1.0, "l2"), torch.zeros(4))


def _binary_affine(d=20, n=300, seed=0):
    """f = [0, w·x + b]: every input in class 1, at margins spread over [0.1, 2.1] (ℓ2)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen)
    model = nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(d), w]))
        model.bias.zero_()
    base = torch.randn(n, d, generator=gen)
    base -= (base @ w)[:, None] * w / w.dot(w)              # onto the boundary
    margin = 0.1 + 2.0 * torch.rand(n, generator=gen)
    x = base + margin[:, None] * w / w.norm()                # then out along the normal
    return bg.Classifier(model.eval(), bounds=(-100, 100)), x, w


@pytest.mark.parametrize("method", ["deepfool", "batched", "sgd"])
@pytest.mark.parametrize("norm, xi", [("l2", 1.0), ("linf", 0.3)])
def test_affine_binary_aligns_with_the_normal_and_fools_the_predicted_share(method, norm, xi):
    clf, x, w = _binary_affine()
    uap = bg.universal_perturbation(clf, x, xi=xi, norm=norm, method=method, delta=0.05,
                                    max_passes=4, progress=False)
    v = uap.perturbation
    target = -w / w.norm() if norm == "l2" else -w.sign() / w.numel() ** 0.5
    cosine = float(torch.dot(v, target) / v.norm())
    assert cosine > 0.99, cosine
    # the geometry: v = -ξ ŵ crosses where the ℓ2 margin is below ξ; v = -ξ sign(w) where
    # |w·x| < ξ ‖w‖₁, i.e. where the ℓ∞ margin |w·x| / ‖w‖₁ is below ξ
    score = x @ w
    dual = w.norm() if norm == "l2" else w.abs().sum()
    predicted = float((score / dual < xi).double().mean())
    assert uap.fooling_rate == pytest.approx(predicted, abs=0.01)
    assert 0.2 < predicted < 0.95 and not uap.reached and uap.passes == 4


@pytest.mark.parametrize("method", ["deepfool", "batched", "sgd"])
def test_same_seed_same_v_and_data_untouched(small_net, method):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    data = x[:80].clone()
    settings = dict(xi=1.0, norm="l2", max_passes=2, method=method, batch_size=16, progress=False)
    a = bg.universal_perturbation(clf, data, **settings)
    b = bg.universal_perturbation(clf, data, **settings)
    c = bg.universal_perturbation(clf, data, seed=1, **settings)
    assert torch.equal(a.perturbation, b.perturbation)
    assert not torch.equal(a.perturbation, c.perturbation)
    assert torch.equal(data, x[:80])


def test_stopping_rule_is_honoured(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    easy = bg.universal_perturbation(clf, x[:80], xi=20.0, norm="l2", delta=0.9, max_passes=5,
                                     method="sgd", progress=False, score="exact")
    assert easy.reached and easy.passes == 1 and easy.fooling_rate >= 0.1
    # the running score sees each input at the v before its own step: it lags by up to a pass
    running = bg.universal_perturbation(clf, x[:80], xi=20.0, norm="l2", delta=0.9, max_passes=5,
                                        method="sgd", progress=False)
    assert running.reached and running.passes <= 2 and running.fooling_rate >= 0.1
    assert running.history[-1]["score"] == "running" and running.settings["score"] == "running"
    hard = bg.universal_perturbation(clf, x[:80], xi=0.05, norm="l2", delta=0.01, max_passes=3,
                                     progress=False)
    assert not hard.reached and hard.passes == 3 and len(hard.to_frame()) == 3
    assert set(hard.to_frame()) >= {"pass", "fooling_rate", "norm", "seconds", "gradient_evaluations"}
    assert all(row["norm"] <= 0.05 + 1e-6 for row in hard.history)


def _tanh_mlp(seed: int) -> tuple[bg.Classifier, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return bg.Classifier(model.eval(), bounds=(-5, 5)), torch.randn(64, 10, generator=g).clamp(-5, 5)


# cases where sgd's running score once decided alone: it stopped on a v below 1 − δ (seed 0, ξ 1,
# δ 0.5) or kept a v worse than the last one (seed 0, ξ 1.5; seed 1, ξ 2)
@pytest.mark.parametrize("seed, xi, delta", [(0, 1.0, 0.5), (0, 1.5, 0.3), (0, 1.5, 1e-6), (1, 2.0, 0.3),
                                             (1, 2.0, 1e-6), (2, 1.0, 0.5), (3, 1.5, 0.3)])
def test_sgd_running_score_never_stops_below_one_minus_delta_nor_keeps_a_worse_v(seed, xi, delta):
    """The running score mixes the v's of a pass: what it decides is checked on the v itself."""
    clf, x = _tanh_mlp(seed)
    kw = dict(xi=xi, norm="l2", method="sgd", delta=delta, max_passes=5, progress=False, seed=seed)
    best = bg.universal_perturbation(clf, x, keep_best=True, **kw)
    last = bg.universal_perturbation(clf, x, keep_best=False, **kw)
    assert best.fooling_rate == bg.fooling_rate(clf, x, best.perturbation)
    assert not best.reached or best.fooling_rate >= 1 - delta
    assert best.fooling_rate >= last.fooling_rate  # the same passes; the last v is a candidate
    for row in best.history:
        assert row["score"] == "running" and 0 <= row["fooling_rate"] <= 1
        if "exact_fooling_rate" in row:  # counted where the running score reached 1 − δ
            assert row["fooling_rate"] >= 1 - delta
    if best.reached:
        assert best.history[-1]["exact_fooling_rate"] == best.fooling_rate


def test_a_targeted_history_names_the_share_sent_to_the_target():
    clf, x = _tanh_mlp(0)
    found = bg.universal_perturbation(clf, x, xi=2.0, norm="l2", method="sgd", target=2, max_passes=2,
                                      progress=False, delta=1e-6)
    assert all("target_rate" in row and "fooling_rate" not in row for row in found.history)
    assert found.target_rate is not None and 0 <= found.target_rate <= 1


def test_fooling_rate_matches_a_hand_computation(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    v = 0.4 * torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_hand = (model((x + v).clamp(0, 1)).argmax(1) != model(x).argmax(1)).double().mean()
    assert bg.fooling_rate(clf, x, v) == pytest.approx(float(by_hand))
    assert bg.fooling_rate(clf, x, torch.zeros(1, 8, 8)) == 0.0


def test_eval_data_save_load_and_transfer(small_net, tmp_path):
    model, x, y = small_net
    clf = bg.Classifier(model)
    uap = bg.universal_perturbation(clf, (x[:100], y[:100]), xi=2.0, norm="l2", method="batched",
                                    max_passes=2, eval_data=x[100:200], progress=False)
    assert uap.eval_fooling_rate == pytest.approx(bg.fooling_rate(clf, x[100:200], uap))
    loaded = bg.UniversalPerturbation.load(uap.save(tmp_path / "uap"))
    assert torch.equal(loaded.perturbation, uap.perturbation) and loaded.history == uap.history
    assert loaded.eval_fooling_rate == uap.eval_fooling_rate
    other = bg.Classifier(bg.zoo.train("affine", *bg.load_dataset("digits", split="train"), epochs=3).model)
    frame = bg.transfer_matrix({"mlp": clf, "affine": other}, {"mlp": uap, "zero": torch.zeros(1, 8, 8)},
                               x[100:200])
    assert frame.shape == (2, 2) and frame.loc["zero"].eq(0).all()
    assert frame.loc["mlp", "mlp"] == pytest.approx(uap.eval_fooling_rate)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(xi=0.0), r"xi must be in \(0, inf"),
        (dict(xi=-1.0), r"xi must be in \(0, inf"),
        (dict(xi=float("inf"), norm="l2"), "xi must be a finite real number"),
        (dict(xi=1.0, norm="l2", method="sgd", step_size=float("nan")), "step_size must be a finite real number, got nan"),
        (dict(xi=1.0, norm="l2", method="sgd", step_size=float("inf")), "step_size must be a finite"),
        (dict(xi=1.0, method="sgd", step_size=0.0), r"step_size must be in \(0, inf"),
        (dict(xi=1.0, method="sgd", step_size=-0.1), r"step_size must be in \(0, inf"),
        (dict(xi=1.0, method="sgd", loss_clip=0.0), r"loss_clip must be in \(0, inf"),
        (dict(xi=1.0, method="sgd", loss_clip=float("nan")), "loss_clip must be a finite"),
        (dict(xi=1.0, method="sgd", step_decay=0.0), r"step_decay must be in \(0, 1\]"),
        (dict(xi=1.0, method="sgd", step_decay=1.5), r"step_decay must be in \(0, 1\]"),
        (dict(xi=1.0, method="sgd", step_decay=float("nan")), "step_decay must be a finite"),
        (dict(xi=1.0, method="sgd", momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(xi=1.0, method="sgd", momentum=-0.1), r"momentum must be in \[0, 1\)"),
        (dict(xi=1.0, overshoot=float("inf")), "overshoot must be a finite"),
        (dict(xi=1.0, overshoot=-0.1), r"overshoot must be in \[0, inf"),
        (dict(xi=1.0, method="batched", batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(xi=1.0, method="sgd", batch_size=2.5), "batch_size must be a whole number"),
        (dict(xi=1.0, max_iter=0), "max_iter must be >= 1"),
        (dict(xi=1.0, candidates=1), "candidates must be >= 2"),
        (dict(xi=1.0, seed=-1), "seed must be between 0 and"),
        (dict(xi=1.0, seed=2.5), "seed must be a whole number"),
        (dict(xi=1.0, seed=2**63), "seed must be between 0 and"),
        (dict(xi=1.0, delta=float("nan")), "delta must be a finite"),
        (dict(xi=1.0, max_passes=2.5), "max_passes must be a whole number"),
        (dict(xi=1.0, keep_best="yes"), "keep_best must be one of"),
        (dict(xi=1.0, delta=0.0), r"delta must be in \(0, 1\)"),
        (dict(xi=1.0, delta=1.0), r"delta must be in \(0, 1\)"),
        (dict(xi=1.0, method="gd"), "method must be one of"),
        (dict(xi=1.0, norm="l1"), "norm must be"),
        (dict(xi=1.0, max_passes=0), "max_passes"),
    ],
)
def test_bad_input_raises(small_net, kwargs, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.universal_perturbation(bg.Classifier(model), x[:5], progress=False, **kwargs)


def test_fooling_rate_rejects_a_wrong_shape(small_net):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=r"shape \(64,\)"):
        bg.fooling_rate(bg.Classifier(model), x, torch.zeros(64))
    with pytest.raises(bg.BoundgeoError, match=r"\(3, 1, 8, 8\) fits inputs of shape \(24, 1, 8, 8\) neither"):
        bg.fooling_rate(bg.Classifier(model), x[:24], torch.zeros(3, 1, 8, 8))


def test_fooling_rate_takes_one_perturbation_per_input(small_net):
    """Row i of v is added to input i: DeepFool's own perturbations fool every converged input."""
    model, x, _ = small_net
    clf = bg.Classifier(model)
    x = x[:24]
    pts = bg.deepfool(clf, x)
    assert bg.fooling_rate(clf, x, pts.perturbation) == pytest.approx(float(pts.converged.double().mean()))
    v = 0.5 * torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        by_hand = (model((x + v).clamp(0, 1)).argmax(1) != model(x).argmax(1)).double().mean()
    assert bg.fooling_rate(clf, x, v, batch_size=5) == pytest.approx(float(by_hand))
    ex = bg.perturbed_examples(clf, x, v, k=4, seed=0)
    pick = torch.randperm(24, generator=torch.Generator().manual_seed(0))[:4]
    torch.testing.assert_close(ex.perturbed, (x[pick] + v[pick]).clamp(0, 1))
    frame = bg.transfer_matrix({"mlp": clf}, {"deepfool": pts.perturbation}, x)
    assert frame.loc["deepfool", "mlp"] == pytest.approx(float(pts.converged.double().mean()))


def test_a_perturbation_that_leaves_the_ball_raises(small_net, monkeypatch):
    """A broken projection (or a NaN step) is caught after the pass, not returned with a rate."""
    import boundgeo.attacks.universal as universal

    model, x, _ = small_net
    monkeypatch.setattr(universal, "project", lambda v, xi, norm: v)  # no projection at all
    with pytest.raises(bg.BoundgeoError, match=r"method='sgd', norm='l2', xi=0.1.*after pass 1"):
        bg.universal_perturbation(bg.Classifier(model), x[:40], xi=0.1, norm="l2", method="sgd",
                                  step_size=0.05, batch_size=8, max_passes=1, progress=False)
    monkeypatch.setattr(universal, "project", lambda v, xi, norm: v * float("nan"))
    with pytest.raises(bg.BoundgeoError, match=r"method='sgd', norm='linf'.*nan.*not finite"):
        bg.universal_perturbation(bg.Classifier(model), x[:40], xi=0.1, norm="linf", method="sgd",
                                  batch_size=40, max_passes=1, progress=False)  # one step, then the check


def test_l2_projection_stays_inside_the_ball_in_high_dimension():
    """Summed in float32, the norm of a 10^6-dim vector is off by ~1e-5 and v left the ball."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        v = 50 * torch.randn(1_000_000, generator=gen)
        p = project(v, 1.7, "l2")
        assert float(p.double().norm()) <= 1.7 * (1 + 1e-6)


def test_a_bare_module_is_wrapped_with_a_warning(small_net):
    model, x, _ = small_net
    with pytest.warns(UserWarning, match=r"bare Sequential.*bounds \(0, 1\)"):
        rate = bg.fooling_rate(model, x[:10], torch.zeros(1, 8, 8))
    assert rate == 0.0
    with pytest.warns(UserWarning, match="bare Sequential"):
        uap = bg.universal_perturbation(model, x[:20], xi=0.5, norm="l2", method="sgd", max_passes=1,
                                        progress=False)
    assert uap.passes == 1
    with pytest.warns(UserWarning, match=r"classifiers\['raw'\] is a bare"):
        bg.transfer_matrix({"raw": model}, {"zero": torch.zeros(1, 8, 8)}, x[:10])
    with pytest.raises(bg.BoundgeoError, match="clf must be a boundgeo.Classifier"):
        bg.fooling_rate("model", x[:10], torch.zeros(1, 8, 8))


@pytest.mark.parametrize("kwargs, match", [(dict(k=2.5), "k must be a whole number"), (dict(k=0), "k must be >= 1"),
                                           (dict(seed=-3), "seed must be between")])
def test_perturbed_examples_bad_settings(small_net, kwargs, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.perturbed_examples(bg.Classifier(model), x, torch.zeros(1, 8, 8), **kwargs)


def test_perturbed_examples(small_net, tmp_path):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    v = 0.6 * torch.ones(1, 8, 8)
    ex = bg.perturbed_examples(clf, x, v, k=5, seed=2)
    assert ex.clean.shape == (5, 1, 8, 8) and float(ex.perturbed.max()) <= 1.0
    assert torch.equal(ex.before, clf.predict(ex.clean)) and torch.equal(ex.after, clf.predict(ex.perturbed))
    torch.testing.assert_close(ex.perturbed, (ex.clean + v).clamp(0, 1))
    loaded = bg.PerturbedExamples.load(ex.save(tmp_path / "ex"))
    assert torch.equal(loaded.after, ex.after) and len(ex.to_frame()) == 5


@pytest.mark.parametrize("method", ["deepfool", "batched", "sgd"])
@pytest.mark.parametrize("norm, xi", [("l2", 1.0), ("linf", 0.15)])
def test_history_counts_the_work_and_measures_v_in_its_norm(small_net, method, norm, xi):
    model, x, _ = small_net
    uap = bg.universal_perturbation(bg.Classifier(model), x[:60], xi=xi, norm=norm, max_passes=2, method=method,
                                    batch_size=16, keep_best=False, progress=False)
    v = uap.perturbation
    assert uap.history[-1]["norm"] == pytest.approx(float(v.norm() if norm == "l2" else v.abs().max()), rel=1e-5)
    for row in uap.history:
        assert row["gradient_evaluations"] > 0 and row["updates"] > 0 and row["seconds"] > 0


def test_algorithm1_steps_only_unfooled_inputs_and_at_x_plus_v(small_net, monkeypatch):
    """Every DeepFool call of Algorithm 1 starts at clip(x + v) for an input that v does not fool."""
    import boundgeo.attacks.universal as universal

    model, x, _ = small_net
    clf = bg.Classifier(model)
    data = x[:50]
    clean = clf.predict(data)
    calls, state = [], {"v": torch.zeros_like(data[0])}
    real_step, real_project = universal._deepfool_step, universal.project

    def spy(clf_, points, df_kwargs, counter):  # records the point and the v it was taken at
        calls.append((points.clone(), state["v"].clone()))
        return real_step(clf_, points, df_kwargs, counter)

    def tracking_project(v, xi, norm):  # every update of v goes through the projection
        state["v"] = real_project(v, xi, norm)
        return state["v"]

    monkeypatch.setattr(universal, "_deepfool_step", spy)
    monkeypatch.setattr(universal, "project", tracking_project)
    bg.universal_perturbation(clf, data, xi=1.0, norm="l2", max_passes=1, keep_best=False, progress=False)
    assert len(calls) > 5
    for point, v in calls:
        # the point is clip(x_i + v) for some x_i whose prediction v has not changed yet
        matches = (clf.clip(data + v) - point).flatten(1).abs().amax(1) < 1e-6
        assert matches.any()
        i = int(matches.nonzero()[0])
        assert int(clf.predict(point)[0]) == int(clean[i])


@pytest.mark.parametrize("method", ["deepfool", "batched", "sgd"])
def test_given_orders_replace_the_seeded_shuffles(small_net, method):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    data = x[:60]
    settings = dict(xi=1.0, norm="l2", max_passes=2, method=method, batch_size=16, progress=False, keep_best=False)
    seeded = bg.universal_perturbation(clf, data, seed=3, **settings)
    generator = torch.Generator().manual_seed(3)  # the shuffles that seed=3 draws, pass by pass
    orders = [torch.randperm(60, generator=generator).tolist() for _ in range(2)]
    replayed = bg.universal_perturbation(clf, data, seed=0, orders=orders, **settings)
    assert torch.equal(replayed.perturbation, seeded.perturbation)
    assert replayed.settings["orders"] == "given" and seeded.settings["orders"] == "seeded"
    backwards = [list(range(59, -1, -1))] * 2
    other = bg.universal_perturbation(clf, data, orders=np.array(backwards), **settings)
    assert not torch.equal(other.perturbation, seeded.perturbation)


def test_algorithm1_visits_the_inputs_in_the_given_order(small_net, monkeypatch):
    import boundgeo.attacks.universal as universal

    model, x, _ = small_net
    clf = bg.Classifier(model)
    data = x[:30]
    visited = []
    real_step = universal._deepfool_step

    def spy(clf_, points, df_kwargs, counter):
        visited.append(int(((data - points).flatten(1).abs().amax(1)).argmin()))  # v = 0 before the first step
        return real_step(clf_, points, df_kwargs, counter)

    monkeypatch.setattr(universal, "_deepfool_step", spy)
    order = [17, *[i for i in range(30) if i != 17]]
    bg.universal_perturbation(clf, data, xi=1.0, norm="l2", max_passes=1, orders=[order], progress=False)
    assert visited[0] == 17


@pytest.mark.parametrize(
    "orders, match",
    [([list(range(20))], "fewer than max_passes=2"),
     ([list(range(20)), [0] * 20], r"orders\[1\] is not a permutation"),
     ([list(range(19)), list(range(20))], r"orders\[0\] is not a permutation"),
     ([["a"] * 20, list(range(20))], r"orders\[0\] must be integer positions"),
     ([[float(i) + 0.5 for i in range(20)], list(range(20))], r"orders\[0\] must be integer positions")],
)
def test_bad_orders_raise(small_net, orders, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.universal_perturbation(bg.Classifier(model), x[:20], xi=1.0, max_passes=2, orders=orders, progress=False)


@pytest.mark.parametrize("method", ["sgd", "batched", "deepfool"])
def test_max_batch_splits_the_work_not_the_algorithm(small_net, method, request):
    # max_batch bounds the inputs of one forward or backward pass (memory at 224x224); the
    # perturbation must be the one found without it, and no pass may see more inputs
    model, x, _ = small_net
    clf = bg.Classifier(model)
    kwargs = dict(xi=2.0, norm="l2", method=method, max_passes=2, batch_size=40, seed=3, progress=False)
    plain = bg.universal_perturbation(clf, x[:120], **kwargs)
    seen = request.getfixturevalue("forward_sizes")  # counted from here on
    split = bg.universal_perturbation(clf, x[:120], max_batch=7, **kwargs)
    assert max(seen) <= 7, max(seen)
    torch.testing.assert_close(split.perturbation, plain.perturbation, atol=1e-5, rtol=0)
    assert split.fooling_rate == plain.fooling_rate
    assert split.settings["max_batch"] == 7 and plain.settings["max_batch"] is None
    with pytest.raises(bg.BoundgeoError, match="max_batch"):
        bg.universal_perturbation(clf, x[:20], max_batch=0, **kwargs)


def test_sgd_step_decays_per_pass_and_momentum_is_a_running_sum(small_net, monkeypatch):
    """Pass p steps by step_size · step_decay^(p−1); with momentum the step follows μ g + ∇/mean|∇|,
    carried from pass to pass."""
    import boundgeo.attacks.universal as uni

    seen = []
    real = uni._pass_sgd

    def spy(*args, **kwargs):
        seen.append((args[9], args[14] if len(args) > 14 else kwargs.get("momentum"),
                     None if (len(args) <= 15 or args[15] is None) else args[15].clone()))
        out = real(*args, **kwargs)
        seen[-1] += (out[1].clone(),)
        return out

    monkeypatch.setattr(uni, "_pass_sgd", spy)
    model, x, _ = small_net
    uap = bg.universal_perturbation(bg.Classifier(model), x[:40], xi=0.3, method="sgd", max_passes=3, delta=1e-6,
                                    progress=False, step_size=0.2, step_decay=0.5, momentum=0.5, batch_size=40)
    assert [s[0] for s in seen] == pytest.approx([0.2, 0.1, 0.05])
    assert all(s[1] == 0.5 for s in seen)
    assert seen[0][2] is None and torch.equal(seen[1][2], seen[0][3]) and torch.equal(seen[2][2], seen[1][3])
    assert uap.settings["step_decay"] == 0.5 and uap.settings["momentum"] == 0.5
    # one mini-batch per pass: the velocity after pass p is μ · (velocity before) + scaled gradient
    assert not torch.equal(seen[1][3], 0.5 * seen[0][3])


def test_sgd_momentum_zero_is_the_plain_minibatch_step(small_net):
    """momentum=0 gives the same v as the update without any velocity (the published one)."""
    model, x, _ = small_net
    x = x[:64]
    clf = bg.Classifier(model)
    kw = dict(xi=0.3, method="sgd", max_passes=2, delta=1e-6, progress=False, batch_size=16, seed=3, keep_best=False,
              loss="ce")
    a = bg.universal_perturbation(clf, x, momentum=0.0, **kw).perturbation
    clean = clf.predict(x)
    v = torch.zeros(x.shape[1:])
    gen = torch.Generator().manual_seed(3)
    for p in range(2):
        order = torch.randperm(64, generator=gen)
        for s in range(0, 64, 16):
            i = order[s:s + 16]
            v = v.detach().requires_grad_(True)
            logits = clf.forward(clf.clip(x[i] + v))
            loss = torch.nn.functional.cross_entropy(logits, clean[i], reduction="none").clamp(max=8.0).sum() / 16
            g, = torch.autograd.grad(loss, v)
            with torch.no_grad():
                v = (v + 0.8 * 0.3 * 0.8 ** p * g.sign()).clamp(-0.3, 0.3)  # the default schedule
    assert torch.allclose(a, v, atol=1e-6)


def test_the_gradient_methods_work_inside_no_grad(small_net):
    """A notebook cell under torch.no_grad() (or a pipeline's evaluation loop) still gets results."""
    model, x, _ = small_net
    clf = bg.Classifier(model)
    with torch.no_grad():
        pts = bg.deepfool(clf, x[:8], progress=False)
        uap = bg.universal_perturbation(clf, x[:16], xi=1.0, method="sgd", max_passes=1, progress=False)
    assert bool(pts.converged.all()) and torch.isfinite(uap.perturbation).all()
    assert torch.equal(pts.perturbation, bg.deepfool(clf, x[:8], progress=False).perturbation)
