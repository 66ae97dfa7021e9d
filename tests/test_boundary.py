import copy

import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg
import boundgeo.attacks.boundary as boundary


def _affine_closed_form(model, x, q):
    """min_k |f_k - f_l| / ‖w_k - w_l‖_q, its class, and the unit ℓ2 normal (w_k - w_l)/‖·‖."""
    w, b = model.linear.weight.double(), model.linear.bias.double()
    f = x.flatten(1).double() @ w.T + b
    label = f.argmax(1)
    dist = torch.full_like(f, float("inf"))
    for i in range(len(x)):
        for k in range(f.shape[1]):
            if k != label[i]:
                diff = w[k] - w[label[i]]
                dist[i, k] = (f[i, k] - f[i, label[i]]).abs() / diff.norm(p=q)
    target = dist.argmin(1)
    normals = torch.stack([(w[t] - w[l]) / (w[t] - w[l]).norm() for t, l in zip(target, label)])
    return dist.min(1).values, target, label, normals


@pytest.mark.parametrize("norm, q", [("l2", 2), ("linf", 1)])
def test_affine_is_exact_in_one_step(affine_model, norm, q):
    clf = bg.Classifier(affine_model.eval(), bounds=(-100, 100))
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    pts = bg.deepfool(clf, x, norm=norm, clip=False, overshoot=0.02, candidates=None)
    dist, target, label, normals = _affine_closed_form(affine_model, x, q)
    assert pts.converged.all() and (pts.iterations == 1).all()
    assert torch.equal(pts.label, label) and torch.equal(pts.target, target)
    # ‖r‖ = (1 + η)(|f'| / ‖w'‖_q + slack): the closed form up to the overshoot and the 1e-4 slack
    torch.testing.assert_close(pts.margin.double(), 1.02 * (dist + 1e-4), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pts.normal.double(), normals, rtol=0, atol=1e-5)
    if norm == "l2":  # the ℓ2 step is along the normal
        torch.testing.assert_close(pts.directions("perturbation").double(), normals, rtol=0, atol=1e-5)
    else:  # the ℓ∞ step is a signed corner of the cube: every coordinate moves by the margin
        torch.testing.assert_close(pts.perturbation.abs().double(),
                                   pts.margin.double()[:, None].expand(-1, 16), rtol=1e-5, atol=1e-7)


def test_affine_normals_have_rank_at_most_c_minus_1(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-100, 100))
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(2))
    sv = torch.linalg.svdvals(bg.deepfool(clf, x, clip=False).directions("normal").double())
    assert sv[4:].max() < 1e-5 * sv[0]  # C = 5 classes


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_trained_net_points_cross_and_stay_in_bounds(small_net, norm):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    pts = bg.deepfool(clf, x[:150], norm=norm)
    ok = pts.converged
    assert ok.float().mean() > 0.95
    adv = x[:150] + pts.perturbation
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(clf.predict(adv)[ok], pts.target[ok])
    assert (pts.target[ok] != pts.label[ok]).all()
    assert torch.equal(pts.label, clf.predict(x[:150]))
    torch.testing.assert_close(pts.normal[ok].flatten(1).norm(dim=1), torch.ones(int(ok.sum())))
    flat = pts.perturbation.flatten(1)
    expected = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)
    torch.testing.assert_close(pts.margin, expected)


def test_normals_agree_with_finite_differences(small_net):
    model, x, _ = small_net
    pts = bg.deepfool(bg.Classifier(model), x[:10])
    double = copy.deepcopy(model).double()
    h = 1e-6
    for i in range(10):
        z = (x[i] + pts.perturbation[i]).double().reshape(1, -1)
        t, l = int(pts.target[i]), int(pts.label[i])
        eye = torch.eye(z.shape[1], dtype=torch.float64)
        with torch.no_grad():
            plus, minus = double(z + h * eye), double(z - h * eye)
        fd = ((plus[:, t] - plus[:, l]) - (minus[:, t] - minus[:, l])) / (2 * h)
        cos = torch.dot(fd / fd.norm(), pts.normal[i].double().flatten())
        assert cos > 0.999, (i, float(cos))


def test_batched_equals_one_at_a_time(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    whole = bg.deepfool(clf, x[:24], batch_size=24)
    single = bg.deepfool(clf, x[:24], batch_size=1)
    odd = bg.deepfool(clf, x[:24], batch_size=5)
    for other in (single, odd):
        assert torch.equal(other.target, whole.target)
        assert torch.equal(other.iterations, whole.iterations)
        torch.testing.assert_close(other.perturbation, whole.perturbation, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(other.normal, whole.normal, rtol=1e-4, atol=1e-5)


def test_nearest_candidates_keep_the_margins(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    full = bg.deepfool(clf, x[:200])
    few = bg.deepfool(clf, x[:200], nearest=3)
    assert abs(float(few.margin.median() / full.margin.median()) - 1) < 0.01


def test_not_converged_is_reported(small_net):
    model, x, _ = small_net
    pts = bg.deepfool(bg.Classifier(model), x[:100], max_iter=1)
    stuck = ~pts.converged
    assert stuck.any(), "one clipped step should leave some inputs on their side"
    assert (pts.status[stuck] == boundary.NOT_CONVERGED).all()
    assert (pts.normal[stuck] == 0).all()
    assert len(pts.directions("normal")) == int(pts.converged.sum())
    assert set(pts.to_frame().status) <= {"converged", "not_converged"}


def test_zero_gradient_is_reported_not_divided_by():
    class Flat(nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 0.0, -1.0]]).expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :3]

    pts = bg.deepfool(bg.Classifier(Flat().eval()), torch.rand(4, 5))
    assert (pts.status == boundary.ZERO_GRADIENT).all() and not pts.converged.any()
    assert torch.isfinite(pts.perturbation).all() and (pts.perturbation == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="l1"), "norm must be"),
        (dict(overshoot=-0.1), r"overshoot must be in \[0"),
        (dict(max_iter=0), "max_iter"),
        (dict(max_iter=2.5), "max_iter must be a whole number"),
        (dict(candidates=1), "candidates must be >= 2"),
        (dict(batch_size=0), "batch_size"),
        (dict(nearest=0), "nearest must be >= 1"),
    ],
)
def test_bad_settings_raise(small_net, kwargs, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.deepfool(bg.Classifier(model), x[:3], **kwargs)
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.boundary_normals(bg.Classifier(model), x[:3], progress=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shard_size=0), "shard_size must be >= 1"),  # once silently the batch size
        (dict(shard_size=1.5), "shard_size must be a whole number"),
        (dict(seed=-1), "seed must be between 0"),
        (dict(seed=0.5), "seed must be a whole number"),
        (dict(n=2.5), "n must be a whole number"),
        (dict(n=0), "n must be between 1 and 3"),
        (dict(dtype=torch.float64), "dtype .* must be torch.float32 or torch.float16"),
        (dict(dtype="float16"), "dtype"),
        (dict(dtype=[torch.float16]), "dtype"),
        (dict(max_steps=3), "unknown deepfool arguments"),
    ],
)
def test_bad_collection_settings_raise(small_net, kwargs, match):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.boundary_normals(bg.Classifier(model), x[:3], progress=False, **kwargs)


def test_out_must_not_be_a_file(small_net, tmp_path):
    model, x, _ = small_net
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(bg.BoundgeoError, match="existing file"):
        bg.boundary_normals(bg.Classifier(model), x[:3], out=tmp_path / "taken", progress=False)
    assert (tmp_path / "taken").read_text() == "a file"


class _Saturating(nn.Module):
    """f = (min(relu(x₀), 1), 1/2): crossing at x₀ = 1/2, and flat beyond x₀ = 1."""

    def forward(self, x):
        first = x[:, :1].clamp(0, 1)
        return torch.cat([first, torch.full_like(first, 0.5)], dim=1)


def test_a_crossed_point_without_gradient_is_flagged_zero_normal(tmp_path):
    clf = bg.Classifier(_Saturating().eval(), bounds=(-5, 5), num_classes=2)
    x = torch.tensor([[0.1, 0.0], [0.3, 0.0]])
    # overshoot 2 lands the first input at x₀ ≈ 1.3, where the logits are flat; the second
    # stops at x₀ ≈ 0.9, where the gradient is still there
    pts = bg.deepfool(clf, x, overshoot=2.0, clip=False)
    assert pts.converged.all()
    assert pts.status.tolist() == [boundary.ZERO_NORMAL, boundary.CONVERGED]
    assert not pts.normal[0].any() and torch.equal(pts.normal[1], torch.tensor([1.0, 0.0]))
    assert pts.to_frame().status.tolist() == ["zero_normal", "converged"]
    assert len(pts.directions("normal")) == 1
    # stored with the flag, the directory gives the same rows as the points in memory
    stored = bg.boundary_normals(clf, x, out=tmp_path / "run", overshoot=2.0, clip=False, progress=False)
    assert stored.status.tolist() == pts.status.tolist()
    assert bg.spectrum(tmp_path / "run", baseline_draws=0).n == bg.spectrum(pts, baseline_draws=0).n == 1


def test_empty_input_raises(small_net):
    model, x, _ = small_net
    with pytest.raises(bg.BoundgeoError, match=r"\(0, 1, 8, 8\)"):
        bg.deepfool(bg.Classifier(model), x[:0])
    with pytest.raises(bg.BoundgeoError, match="n must be between"):
        bg.boundary_normals(bg.Classifier(model), x[:5], n=6, progress=False)


def test_save_load_round_trip(tmp_path, small_net):
    model, x, y = small_net
    pts = bg.boundary_normals(bg.Classifier(model), (x[:40], y[:40]), progress=False)
    loaded = bg.BoundaryPoints.load(pts.save(tmp_path / "points"))
    for name in ("perturbation", "normal", "margin", "label", "target", "iterations",
                 "converged", "status", "index", "true_label"):
        assert torch.equal(getattr(loaded, name), getattr(pts, name)), name
    assert loaded.settings == pts.settings and loaded.norm == pts.norm
    frame = pts.to_frame()
    assert len(frame) == len(pts) and {"margin", "label", "target", "true_label"} <= set(frame)


def test_collection_skips_misclassified_and_keeps_indices(small_net):
    model, x, y = small_net
    clf = bg.Classifier(model)
    wrong = (clf.predict(x) != y).nonzero().squeeze(1)
    assert len(wrong) > 0
    pts = bg.boundary_normals(clf, (x, y), batch_size=64, progress=False)
    assert pts.settings["skipped_misclassified"] == len(wrong)
    assert len(pts) == len(x) - len(wrong) and not np.isin(pts.index, wrong).any()
    kept = bg.boundary_normals(clf, (x, y), keep_misclassified=True, progress=False)
    assert len(kept) == len(x) and kept.settings["skipped_misclassified"] == 0
    # with n=, only the misclassified inputs met before the n-th kept one are counted
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    first = bg.boundary_normals(clf, (x, y), n=40, shard_size=500, seed=0, progress=False)
    right = (clf.predict(x) == y)[order]
    last = int(right.nonzero().squeeze(1)[39])
    assert first.settings["skipped_misclassified"] == int((~right[: last + 1]).sum())
    # index points into data: recomputing at those inputs gives the same points
    direct = bg.deepfool(clf, x[pts.index[:30]])
    torch.testing.assert_close(direct.perturbation, pts.perturbation[:30], rtol=1e-4, atol=1e-6)


def test_n_is_reproducible_under_a_seed(small_net):
    model, x, y = small_net
    clf = bg.Classifier(model)
    dataset = torch.utils.data.TensorDataset(x, y)
    a = bg.boundary_normals(clf, dataset, n=50, seed=3, shard_size=16, progress=False)
    b = bg.boundary_normals(clf, torch.utils.data.DataLoader(dataset, batch_size=9), n=50, seed=3,
                            progress=False)
    c = bg.boundary_normals(clf, dataset, n=50, seed=4, progress=False)
    assert len(a) == 50 and torch.equal(a.index, b.index) and not torch.equal(a.index, c.index)
    assert (clf.predict(x[a.index]) == y[a.index]).all()


def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path, small_net, monkeypatch):
    model, x, y = small_net
    clf = bg.Classifier(model)
    kwargs = dict(n=100, shard_size=16, batch_size=8, seed=5, progress=False)
    reference = bg.boundary_normals(clf, (x, y), out=tmp_path / "ref", **kwargs)

    real, calls = boundary.deepfool, []

    def dies_after_three_shards(*args, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(boundary, "deepfool", dies_after_three_shards)
    with pytest.raises(KeyboardInterrupt):
        bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **kwargs)
    assert sorted(p.name for p in (tmp_path / "run" / "shards").glob("*.json")) == [
        "00000.json", "00001.json", "00002.json"]
    monkeypatch.setattr(boundary, "deepfool", real)
    resumed = bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **kwargs)
    for name in ("perturbation", "normal", "margin", "label", "target", "index", "true_label"):
        assert torch.equal(getattr(resumed, name), getattr(reference, name)), name
    assert isinstance(resumed.perturbation, torch.Tensor)
    assert bg.BoundaryPoints.load(tmp_path / "run").margin.shape == (100,)
    assert sum(len(s) for s in boundary.iter_shards(tmp_path / "run")) >= 100
    with pytest.raises(bg.BoundgeoError, match="other settings"):
        bg.boundary_normals(clf, (x, y), out=tmp_path / "run", **{**kwargs, "seed": 6})




@pytest.mark.peers
def test_median_norm_matches_foolbox(small_net):
    fb = pytest.importorskip("foolbox")
    model, x, y = small_net
    clf = bg.Classifier(model)
    x, y = x[:200], y[:200]
    right = clf.predict(x) == y
    x, y = x[right], y[right]
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    _, adv, success = attack(fmodel, x, y, epsilons=None)
    fb_norms = (adv - x).flatten(1).norm(dim=1)[success]
    ours = bg.deepfool(clf, x)
    assert ours.converged.float().mean() >= success.float().mean()
    ratio = float(ours.margin.median() / fb_norms.median())
    assert ratio < 1.01, ratio


def test_select_takes_points_by_position_or_mask(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-50, 50))
    pts = bg.deepfool(clf, torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), clip=False)
    some = pts.select(torch.tensor([4, 1]))
    assert some.index.tolist() == [4, 1] and torch.equal(some.normal, pts.normal[[4, 1]])
    mask = torch.tensor([True, False, True, False, False, True])
    assert pts.select(mask).index.tolist() == [0, 2, 5]
    with pytest.raises(bg.BoundgeoError, match="6 points"):
        pts.select([7])
    with pytest.raises(bg.BoundgeoError, match="does not fit"):
        pts.select(torch.ones(3, dtype=torch.bool))
    # a mask given as a list or numpy array is a mask, not the positions 1, 0, 1, ...
    assert pts.select(mask.tolist()).index.tolist() == [0, 2, 5]
    assert pts.select(mask.numpy()).index.tolist() == [0, 2, 5]
    with pytest.raises(bg.BoundgeoError, match="integer positions"):
        pts.select([1.7, 0.2])


@pytest.mark.parametrize("call", ["deepfool", "boundary_normals"])
def test_a_bare_module_is_wrapped_with_a_warning(call):
    # the other entry points wrapped a bare nn.Module; these two ended in an AttributeError
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(6, 1, 4, 4)
    with pytest.warns(UserWarning, match="bare Sequential"):
        pts = bg.deepfool(model, x) if call == "deepfool" else bg.boundary_normals(model, x, progress=False)
    expected = bg.deepfool(bg.Classifier(model), x)
    torch.testing.assert_close(pts.margin.cpu(), expected.margin.cpu())
    with pytest.raises(bg.BoundgeoError, match="clf"):
        bg.deepfool("model", x) if call == "deepfool" else bg.boundary_normals("model", x, progress=False)
