"""The geometry-only universal perturbations: method="singular" (Khrulkov & Oseledets 2018) and
method="spectral" (the top principal directions of the normals)."""

import math

import pytest
import torch
from torch import nn

import boundgeo as bg
from boundgeo._perturb import best_other, sent_to
from boundgeo.attacks.singular import PowerIteration, layer_function
from boundgeo.attacks.universal import FOCUS


def _affine(classes: int, seed: int = 0) -> tuple[bg.Classifier, torch.Tensor, nn.Linear]:
    torch.manual_seed(seed)
    linear = nn.Linear(16, classes)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = torch.rand(60, 1, 4, 4)
    return bg.Classifier(model), x, linear


def test_singular_vector_of_an_affine_model_is_its_top_right_singular_vector():
    clf, x, linear = _affine(5)
    top = torch.linalg.svd(linear.weight.detach().double())[2][0]  # A = [W; …; W]: same right vectors
    found = bg.universal_perturbation(clf, x, xi=1.0, norm="l2", method="singular", max_passes=300,
                                      delta=1e-9, keep_best=False, progress=False)
    assert found.settings["p"] == 2 and found.settings["q"] == 2
    v = found.perturbation.reshape(-1).double()
    assert math.isclose(float(v.norm()), 1.0, rel_tol=1e-5)
    assert abs(float(v @ top)) > 1 - 1e-6
    assert found.history[-1]["moved"] < 1e-6


def test_power_iteration_climbs_to_a_fixed_point_on_the_cube():
    # p = ∞, q = 10: ‖A v‖_q^q is convex, and each iterate maximises its linearisation over the
    # cube, so the values never fall; at the end v = sign(Aᵀ ψ_q(A v)), a corner of the cube
    torch.manual_seed(3)
    linear = nn.Linear(6, 4)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), linear).eval())
    x = torch.rand(5, 1, 2, 3)
    power = PowerIteration(layer_function(clf, None), x, p=math.inf, q=10.0, seed=0, batch_size=2)
    w = linear.weight.detach().double()

    def value(v):
        return float(torch.linalg.vector_norm((w @ v.reshape(-1).double()).repeat(5), ord=10))

    values = [value(power.v)]
    for _ in range(50):
        moved = power.step()
        values.append(value(power.v))
        if moved == 0:
            break
    assert moved == 0
    assert all(b >= a * (1 - 1e-9) for a, b in zip(values, values[1:])), values
    v = power.v.reshape(-1).double()
    assert set(v.abs().tolist()) == {1.0}
    assert torch.equal(v, (w.T @ (w @ v).pow(9)).sign())  # the fixed point: q − 1 = 9, odd


def test_spectral_on_two_classes_is_the_normal_of_the_boundary():
    clf, x, linear = _affine(2)
    normal = (linear.weight[1] - linear.weight[0]).detach().double()
    found = bg.universal_perturbation(clf, x, xi=0.5, norm="l2", method="spectral", progress=False)
    v = found.perturbation.reshape(-1).double()
    assert found.passes == 1 and found.settings["components"] == 10
    assert abs(float(v @ normal) / float(v.norm() * normal.norm())) > 1 - 1e-6
    # ℓ∞: the corner of the cube farthest along the normal, either sign
    corner = bg.universal_perturbation(clf, x, xi=0.1, norm="linf", method="spectral", progress=False)
    assert torch.equal(corner.perturbation.reshape(-1).abs(), torch.full((16,), 0.1))
    assert abs(float(corner.perturbation.reshape(-1).sign().double() @ normal.sign())) == 16


@pytest.mark.parametrize("method", ["singular", "spectral"])
def test_geometry_methods_are_seeded_and_reproducible(method):
    x, _ = bg.load_dataset("digits")
    clf = bg.Classifier(bg.zoo.pretrained_digits_cnn().model)
    kwargs = dict(xi=0.15, norm="linf", method=method, max_passes=4, progress=False)
    first = bg.universal_perturbation(clf, x[:40], seed=1, **kwargs)
    again = bg.universal_perturbation(clf, x[:40], seed=1, **kwargs)
    assert torch.equal(first.perturbation, again.perturbation)
    assert first.fooling_rate == again.fooling_rate and 0 <= first.fooling_rate <= 1
    assert torch.isfinite(first.perturbation).all() and float(first.perturbation.abs().max()) <= 0.15 + 1e-7


def test_singular_at_a_hidden_layer_and_both_product_routes_agree(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3)).eval()
    clf = bg.Classifier(model)
    x = torch.rand(30, 1, 4, 4)
    kwargs = dict(xi=1.0, norm="l2", method="singular", max_passes=5, delta=1e-9, progress=False, seed=2)
    hidden = bg.universal_perturbation(clf, x, layer="2", **kwargs)
    logits = bg.universal_perturbation(clf, x, **kwargs)
    assert hidden.settings["layer"] == "2" and hidden.settings["jacobian_products"] == "torch.func"
    assert not torch.allclose(hidden.perturbation.abs(), logits.perturbation.abs())

    def refuse(*args, **kwargs):
        raise NotImplementedError("no forward-mode AD for this model")

    monkeypatch.setattr(torch.func, "jvp", refuse)
    fallback = bg.universal_perturbation(clf, x, layer="2", **kwargs)
    assert fallback.settings["jacobian_products"] == "autograd"
    torch.testing.assert_close(fallback.perturbation, hidden.perturbation, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, message", [
    (dict(layer="no.such.layer"), r"layer must name a module of the model.*its modules: 0, 1"),
    (dict(layer=3), "layer must be a module name"),
    (dict(p=1.0), r"p must be in \(1"),
    (dict(p=float("nan")), "p must be a finite real"),
    (dict(q=0.5), r"q must be in \[1"),
    (dict(components=0), "components must be"),
])
def test_bad_geometry_settings_are_refused(change, message):
    clf, x, _ = _affine(3)
    method = "spectral" if "components" in change else "singular"
    with pytest.raises(bg.BoundgeoError, match=message):
        bg.universal_perturbation(clf, x, xi=1.0, norm="l2", method=method, progress=False, **change)


def test_targeted_sgd_sends_most_inputs_to_the_target(tmp_path):
    torch.manual_seed(1)
    linear = nn.Linear(16, 5)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), linear).eval())
    x, held = torch.rand(200, 1, 4, 4), torch.rand(200, 1, 4, 4)
    clean = clf.predict(x)
    kwargs = dict(xi=2.0, norm="l2", method="sgd", max_passes=10, eval_data=held, progress=False, seed=0)
    plain = bg.universal_perturbation(clf, x, **kwargs)
    assert plain.target is None and plain.target_rate is None
    # the class the untargeted perturbation sends fewest inputs to
    reached = torch.bincount(clf.predict(clf.clip(x + plain.perturbation)), minlength=5)
    target = int(reached.argmin())
    others = clean != target
    sent = bg.universal_perturbation(clf, x, target=target, **kwargs)
    assert sent.target == target and sent.target_rate >= 0.9 and sent.eval_target_rate >= 0.9
    after = clf.predict(clf.clip(x + sent.perturbation))
    assert math.isclose(sent.target_rate, float((after[others] == target).double().mean()), rel_tol=1e-12)
    assert math.isclose(sent.fooling_rate, float((after != clean).double().mean()), rel_tol=1e-12)
    assert float(sent.perturbation.norm()) <= 2.0 * (1 + 1e-6)
    assert int(reached[target]) < 0.1 * len(x)
    # the held-out rates, both from one forward pass, are those of the returned v
    held_clean = clf.predict(held)
    held_after = clf.predict(clf.clip(held + sent.perturbation))
    assert sent.eval_fooling_rate == bg.fooling_rate(clf, held, sent.perturbation)
    assert math.isclose(sent.eval_target_rate, float((held_after[held_clean != target] == target).double().mean()),
                        rel_tol=1e-12)
    # saved and read back with its target fields
    again = bg.UniversalPerturbation.load(sent.save(tmp_path / "targeted"))
    assert (again.target, again.target_rate, again.eval_target_rate) == (target, sent.target_rate,
                                                                          sent.eval_target_rate)



@pytest.mark.parametrize("change, message", [
    (dict(target=5), r"target must be a class of the model, 0 to 4, got 5"),
    (dict(target=-1), "target must be"),
    (dict(target=1.5), "target must be a whole number"),
    (dict(target=1, method="batched"), r"target= is implemented for method='sgd' and 'singular', not 'batched'"),
    (dict(target=1, method="spectral"), r"target= is implemented for method='sgd' and 'singular', not 'spectral'"),
    (dict(target=1, method="singular", layer="1"), r"target= with method='singular' .* layer must be None"),
    (dict(loss="hinge"), r"loss must be one of"),
    (dict(loss="margin", method="singular"), r"loss='margin' is a setting of method='sgd', not of 'singular'"),
    (dict(loss="ce", method="batched"), r"loss='ce' is a setting of method='sgd', not of 'batched'"),
])
def test_bad_targets_are_refused(change, message):
    torch.manual_seed(1)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval())
    kwargs = dict(xi=1.0, norm="l2", method="sgd", max_passes=1, progress=False) | change
    with pytest.raises(bg.BoundgeoError, match=message):
        bg.universal_perturbation(clf, torch.rand(10, 1, 4, 4), **kwargs)


def test_running_scores_cost_no_forward_pass_over_the_fit_set(request):
    torch.manual_seed(2)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval())
    x = torch.rand(96, 1, 4, 4)
    kwargs = dict(xi=0.5, norm="l2", method="sgd", max_passes=3, batch_size=32, delta=1e-9, progress=False)
    seen = request.getfixturevalue("forward_sizes")
    running = bg.universal_perturbation(clf, x, **kwargs)
    rows = sum(seen)
    seen.clear()
    exact = bg.universal_perturbation(clf, x, score="exact", **kwargs)
    # the same steps (the score only decides which v is kept and when to stop)
    assert [h["updates"] for h in running.history] == [h["updates"] for h in exact.history]
    # running: the clean predictions, 3 passes of gradient forwards and the returned v's check;
    # exact: one more forward over the fit set after every pass
    assert rows == 96 + 3 * 96 + 96
    assert sum(seen) == rows + 3 * 96 - 96
    last = clf.predict(clf.clip(x + running.perturbation))
    assert math.isclose(running.fooling_rate, float((last != clf.predict(x)).double().mean()), rel_tol=1e-12)


def test_a_hidden_layer_ends_the_forward_pass_there():
    """The layers after the chosen one never run inside the power method's products."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    clf = bg.Classifier(model)
    x = torch.rand(5, 1, 4, 4)
    clf.forward(x)
    calls = []
    model[3].register_forward_hook(lambda *_: calls.append(1))
    f = layer_function(clf, "2")
    assert torch.equal(f(x), model[2](model[1](model[0](x))))
    PowerIteration(f, x, p=2.0, q=2.0, seed=0, batch_size=5).step()
    assert calls == []
    clf.forward(x)  # the hook is gone and the model runs whole again
    assert calls == [1]


def test_sent_to_counts_changed_classes_or_arrivals_in_the_target():
    pred, clean = torch.tensor([0, 1, 2, 2, 1]), torch.tensor([0, 2, 2, 1, 1])
    assert sent_to(pred, clean, None).tolist() == [False, True, False, True, False]
    # an input already in the target is never counted as sent there
    assert sent_to(pred, clean, 2).tolist() == [False, False, False, True, False]


def test_targeted_singular_on_two_affine_classes_is_the_difference_of_their_weights():
    # every row of the targeted Jacobian is ∇(f_1 − f_0) = w_1 − w_0, so the singular vector is
    # its direction, and the sign that sends inputs to class 1 is +
    torch.manual_seed(4)
    linear = nn.Linear(16, 2)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), linear).eval())
    x = torch.rand(80, 1, 4, 4)
    with torch.no_grad():  # the boundary through the median input: half the inputs on each side
        linear.bias[1] -= (clf.model(x)[:, 1] - clf.model(x)[:, 0]).median()
    clean = clf.predict(x)
    assert 0 < int((clean == 1).sum()) < len(x)
    toward = (linear.weight[1] - linear.weight[0]).detach().double()
    for norm, xi in (("l2", 3.0), ("linf", 0.5)):
        found = bg.universal_perturbation(clf, x, xi=xi, norm=norm, method="singular", target=1, max_passes=50,
                                          delta=1e-9, keep_best=False, progress=False)
        v = found.perturbation.reshape(-1).double()
        expected = toward / toward.norm() * xi if norm == "l2" else xi * toward.sign()
        torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)
        after = clf.predict(clf.clip(x + found.perturbation))
        assert math.isclose(found.target_rate, float((after[clean != 1] == 1).double().mean()), rel_tol=1e-12)
        assert found.target_rate > 0.5


def _tanh_mlp(seed: int = 0) -> tuple[bg.Classifier, torch.Tensor, torch.Tensor]:
    """A tanh MLP on [0, 1]^16 whose five classes each hold 14-27% of the inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 5)).eval()
    with torch.no_grad():  # centred on the middle of the box, and steep enough to be nonlinear there
        model[1].weight.mul_(3)
        model[1].bias.copy_(-0.5 * model[1].weight.sum(1))
        model[3].weight.mul_(3)
    return bg.Classifier(model), torch.rand(300, 1, 4, 4), torch.rand(300, 1, 4, 4)


TOY = dict(xi=2.0, norm="l2", max_passes=10, progress=False, seed=0)


@pytest.mark.parametrize("method, changes", [("singular", {}), ("sgd", dict(loss="margin")), ("sgd", dict(loss="ce")),
                                             ("sgd", {})])
def test_targeted_perturbations_reach_every_class_of_a_nonlinear_toy(method, changes):
    clf, x, held = _tanh_mlp()
    assert torch.bincount(clf.predict(x), minlength=5).min() >= 30
    rates = []
    for target in range(5):
        found = bg.universal_perturbation(clf, x, method=method, target=target, eval_data=held, **TOY, **changes)
        assert found.target == target and 0 <= found.eval_target_rate <= 1
        assert float(found.perturbation.norm()) <= TOY["xi"] * (1 + 1e-6)
        rates.append(found.eval_target_rate)
    assert min(rates) >= 0.7 and sum(rates) / len(rates) >= 0.9, rates


@pytest.mark.parametrize("loss", ["margin", "focal_margin"])
@pytest.mark.parametrize("target", [None, 1])
def test_one_margin_step_on_two_affine_classes_follows_the_difference_of_their_weights(target, loss):
    # the margin's gradient is w_k − w_y at every input, whatever its logits (the cross-entropy's
    # is weighted by the probabilities): one full-batch ℓ2 step of size ξ from v = 0 is
    # ξ (w_1 − w_0)/‖w_1 − w_0‖, signed by which class the inputs pushed out of hold more; the
    # focal margin weighs each input by (1 − p_clean)^γ (targeted p_c^γ), which moves only the sign
    torch.manual_seed(5)
    linear = nn.Linear(16, 2)
    clf = bg.Classifier(nn.Sequential(nn.Flatten(), linear).eval())
    x = 0.25 + 0.5 * torch.rand(64, 1, 4, 4)
    clean = clf.predict(x)
    toward = (linear.weight[1] - linear.weight[0]).detach()
    p = torch.softmax(clf.forward(x).detach(), 1)
    if loss == "margin":
        weight = torch.ones(len(x))
    else:
        weight = (1 - p.gather(1, clean[:, None])[:, 0]) ** FOCUS if target is None else p[:, 1] ** FOCUS
    sign = torch.where(clean == 0, 1.0, -1.0)
    pushed = float((weight * sign).sum()) if target is None else 1.0
    assert abs(pushed) > 1e-3
    found = bg.universal_perturbation(clf, x, xi=0.1, norm="l2", method="sgd", loss=loss, target=target,
                                      max_passes=1, batch_size=64, step_size=0.1, loss_clip=1e6,
                                      keep_best=False, delta=1e-9, progress=False)
    expected = 0.1 * toward / toward.norm() * (1 if pushed > 0 else -1)
    torch.testing.assert_close(found.perturbation.reshape(-1), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss", ["margin", "focal_margin"])
def test_the_untargeted_margin_losses_are_working_attacks_and_are_recorded(loss):
    clf, x, held = _tanh_mlp()
    found = bg.universal_perturbation(clf, x, method="sgd", loss=loss, eval_data=held, **TOY)
    assert found.settings["loss"] == loss
    assert found.eval_fooling_rate == bg.fooling_rate(clf, held, found.perturbation)
    random = torch.randn(x.shape[1:])
    assert found.eval_fooling_rate > bg.fooling_rate(clf, held, random / random.norm() * TOY["xi"]) + 0.2


@pytest.mark.parametrize("changes", [dict(method="singular", target=3), dict(method="sgd", target=3, loss="margin"),
                                     dict(method="sgd", loss="margin"), dict(method="sgd", loss="focal_margin")])
def test_targeted_and_margin_runs_are_seeded_and_reproducible(changes):
    x, _ = bg.load_dataset("digits")
    clf = bg.Classifier(bg.zoo.pretrained_digits_cnn().model)
    kwargs = dict(xi=0.15, norm="linf", max_passes=4, progress=False, **changes)
    first = bg.universal_perturbation(clf, x[:60], seed=1, **kwargs)
    again = bg.universal_perturbation(clf, x[:60], seed=1, **kwargs)
    assert torch.equal(first.perturbation, again.perturbation)
    assert (first.fooling_rate, first.target_rate) == (again.fooling_rate, again.target_rate)
    assert torch.isfinite(first.perturbation).all() and float(first.perturbation.abs().max()) <= 0.15 + 1e-7
    if "target" in changes:
        assert 0 <= first.target_rate <= 1
    if changes["method"] == "sgd":  # a different seed shuffles the mini-batches differently
        other = bg.universal_perturbation(clf, x[:60], seed=2, **kwargs)
        assert not torch.equal(first.perturbation, other.perturbation)


def test_best_other_is_the_largest_logit_of_another_class_with_ties_and_many_classes():
    torch.manual_seed(0)
    logits = torch.randn(200, 1000).round(decimals=1).requires_grad_(True)  # rounding makes ties
    logits.data[:5, :2] = 9.0  # two classes tie for the top
    cls = torch.cat([logits.detach().argmax(1)[:100], torch.randint(0, 1000, (100,))])
    expected = logits.detach().masked_fill(torch.nn.functional.one_hot(cls, 1000).bool(), -math.inf).amax(1)
    found = best_other(logits, cls)
    assert torch.equal(found.detach(), expected)
    (grad,) = torch.autograd.grad(found.sum(), logits)
    assert torch.equal(grad.sum(1), torch.ones(200)) and (grad.gather(1, cls[:, None]) == 0).all()


def test_sgd_defaults_to_the_focal_margin_and_other_methods_record_no_loss():
    clf, x, _ = _tanh_mlp()
    kwargs = dict(xi=1.0, norm="l2", max_passes=2, progress=False)
    assert bg.universal_perturbation(clf, x[:64], method="sgd", **kwargs).settings["loss"] == "focal_margin"
    assert "loss" not in bg.universal_perturbation(clf, x[:64], method="singular", **kwargs).settings


class _SharedReLU(nn.Module):
    """A residual block that calls one ReLU twice, as torchvision's BasicBlock does."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.relu(self.linear(x)) + x)


def test_a_layer_that_runs_twice_in_one_forward_is_refused_not_cut_at_its_first_call():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), _SharedReLU(), nn.Linear(16, 3)).eval()
    clf = bg.Classifier(model)
    x = torch.rand(8, 1, 4, 4)
    with pytest.raises(bg.BoundgeoError, match=r"runs 2 times.*such as the block that holds it, '1'"):
        bg.universal_perturbation(clf, x, xi=1.0, method="singular", layer="1.relu", max_passes=2, progress=False)
    with pytest.raises(bg.BoundgeoError, match="runs 2 times"):
        layer_function(clf, "1.relu", probe=x)
    found = bg.universal_perturbation(clf, x, xi=1.0, method="singular", layer="1", max_passes=2, progress=False)
    assert torch.isfinite(found.perturbation).all()
    assert torch.equal(layer_function(clf, "1", probe=x)(x), model[1](model[0](x)))
