"""Principal curvatures of the boundary against closed forms: quadrics, spheres, hyperplanes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg


class Quadric(nn.Module):
    """Two classes with F = f_1 − f_0 = ½ xᵀAx + bᵀx + c: the Hessian is A everywhere."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, c: float) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        f = 0.5 * ((x @ self.a) * x).sum(1) + x @ self.b + self.c
        return torch.stack([torch.zeros_like(f), f], 1)


class Ball(nn.Module):
    """Class 0 inside the ball |x − c| < R, class 1 outside: every principal curvature is 1/R."""

    def __init__(self, center: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.register_buffer("center", center)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x.flatten(1) - self.center).norm(dim=1) - self.radius
        return torch.stack([torch.zeros_like(f), f], 1)


def _quadric(d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=gen)
    a, b = (m + m.T) / 2, torch.randn(d, generator=gen)
    clf = bg.Classifier(Quadric(a, b, -3.0).eval(), bounds=(-20, 20))
    x = 0.3 * torch.randn(5, d, generator=gen)
    return clf, x, a, b


def _shape_operator(a: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    a, b, z = a.double(), b.double(), z.double()
    grad = a @ z + b
    normal = grad / grad.norm()
    proj = torch.eye(len(z), dtype=torch.float64) - torch.outer(normal, normal)
    return proj @ a @ proj / grad.norm()


@pytest.mark.parametrize("method", ["finite_difference", "autograd"])
def test_quadric_curvatures_match_the_shape_operator(method):
    clf, x, a, b = _quadric()
    curv = bg.boundary_curvature(clf, x, k=5, method=method)
    assert curv.valid.all() and curv.on_boundary.all()
    for i in range(len(x)):
        z = curv.point[i]
        f = clf.logits(z[None])[0]
        assert abs(float(f[1] - f[0])) < 1e-5  # the point is on the boundary
        shape_op = _shape_operator(a, b, z)
        eig, vec = torch.linalg.eigh(shape_op)
        order = eig.abs().argsort(descending=True)[:5]
        np.testing.assert_allclose(curv.curvature[i].numpy(), eig[order].numpy(), atol=2e-4, rtol=1e-3)
        # each direction is an eigenvector: |cos| with the true one ≈ 1 (eigenvalues are distinct)
        cos = (curv.direction[i].double() @ vec[:, order]).diagonal().abs()
        assert cos.min() > 0.999
    assert curv.residual.max() < 1e-3


def test_ball_is_positively_curved_with_curvature_one_over_radius():
    # x inside the ball (its region is convex around it): moving tangentially leaves the ball,
    # i.e. crosses into the other class, which is what a positive curvature means here
    d, radius = 10, 2.0
    clf = bg.Classifier(Ball(torch.zeros(d), radius).eval(), bounds=(-9, 9))
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(1))
    x = 0.5 * x / x.norm(dim=1, keepdim=True)
    for method, tol in [("finite_difference", 2e-3), ("autograd", 1e-4)]:
        curv = bg.boundary_curvature(clf, x, k=3, method=method)
        np.testing.assert_allclose(curv.curvature.numpy(), 1 / radius, atol=tol)
        np.testing.assert_allclose(curv.point.norm(dim=1).numpy(), radius, atol=1e-4)


def test_ball_seen_from_outside_is_negatively_curved():
    d, radius = 8, 1.5

    class Outside(Ball):
        def forward(self, x):
            return super().forward(x).flip(1)  # class 0 outside, class 1 inside

    clf = bg.Classifier(Outside(torch.zeros(d), radius).eval(), bounds=(-9, 9))
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(2))
    x = 3.0 * x / x.norm(dim=1, keepdim=True)
    # finite differences at h = 0.1·‖r‖ see the sphere with a relative error O((h/R)²) ...
    coarse = bg.boundary_curvature(clf, x, k=2)
    np.testing.assert_allclose(coarse.curvature.numpy(), -1 / radius, rtol=1e-2)
    # ... which shrinks with the step
    fine = bg.boundary_curvature(clf, x, k=2, relative_step=0.02)
    np.testing.assert_allclose(fine.curvature.numpy(), -1 / radius, rtol=1e-3)
    assert (fine.curvature + 1 / radius).abs().max() < (coarse.curvature + 1 / radius).abs().max()


def test_affine_boundary_is_flat_and_directions_are_tangent(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-50, 50))
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    pts = bg.deepfool(clf, x, clip=False)
    curv = bg.boundary_curvature(clf, pts, inputs=x, k=4)
    assert curv.valid.all()
    assert curv.curvature.abs().max() < 1e-3
    normals = pts.normal.reshape(6, 1, -1)
    dirs = curv.direction.reshape(6, 4, -1)
    assert (dirs * normals).sum(2).abs().max() < 1e-4  # tangent to the boundary
    np.testing.assert_allclose(dirs.norm(dim=2).numpy(), 1.0, atol=1e-5)
    gram = dirs @ dirs.transpose(1, 2)
    np.testing.assert_allclose(gram.numpy(), np.broadcast_to(np.eye(4), gram.shape), atol=1e-4)


def test_points_or_data_give_the_same_result_and_seed_is_reproducible(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    data = x[:12]
    from_data = bg.boundary_curvature(clf, data, k=3, seed=4)
    pts = bg.deepfool(clf, data)
    from_points = bg.boundary_curvature(clf, pts, inputs=data, k=3, seed=4)
    torch.testing.assert_close(from_data.curvature, from_points.curvature, equal_nan=True)
    again = bg.boundary_curvature(clf, data, k=3, seed=4)
    torch.testing.assert_close(from_data.direction, again.direction)


def test_points_from_a_subset_take_their_rows_from_the_whole_data(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    pts = bg.boundary_normals(clf, x[:40], n=8, seed=0, progress=False)
    curv = bg.boundary_curvature(clf, pts, inputs=x[:40], k=2)
    direct = bg.boundary_curvature(clf, x[:40][pts.index], k=2)
    # the same boundary points (the random start vectors follow the index, which differs)
    torch.testing.assert_close(curv.point, direct.point, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(curv.gradient_norm, direct.gradient_norm, atol=1e-4, rtol=1e-3)
    assert torch.equal(curv.index, pts.index)


def test_a_points_result_does_not_depend_on_batch_size_or_the_other_points():
    # a smooth model (finite differences on a ReLU net flip at kinks with float rounding), and
    # few Lanczos steps, so that the start vector matters
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 3)).double().eval()
    clf = bg.Classifier(net, bounds=(-5, 5))
    x = torch.randn(12, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pts = bg.deepfool(clf, x, clip=False)
    settings = dict(inputs=x, k=3, seed=2, lanczos_steps=6)
    whole = bg.boundary_curvature(clf, pts, **settings)
    assert whole.valid.sum() >= 10
    small_batches = bg.boundary_curvature(clf, pts, batch_size=5, **settings)
    torch.testing.assert_close(whole.curvature, small_batches.curvature, equal_nan=True)
    part = bg.boundary_curvature(clf, pts.select([3, 7, 8]), **settings)
    torch.testing.assert_close(part.curvature, whole.curvature[[3, 7, 8]], equal_nan=True)
    other_seed = bg.boundary_curvature(clf, pts, **{**settings, "seed": 3})
    assert not torch.allclose(other_seed.curvature, whole.curvature, equal_nan=True)  # the seed matters here


def test_residual_is_measured_not_taken_from_lanczos(small_net):
    # on a ReLU network finite differences are not linear; the reported residual must say so
    # rather than read ~0 from a Krylov space that restarted
    model, x, _ = small_net
    curv = bg.boundary_curvature(bg.Classifier(model.eval()), x[:10], k=3)
    ok = curv.valid
    assert (curv.residual[ok] > 1e-3 * curv.curvature[ok].abs()).float().mean() > 0.5


def test_float64_models_work():
    clf, x, a, b = _quadric()
    clf64 = bg.Classifier(Quadric(a.double(), b.double(), -3.0).eval(), bounds=(-20, 20))
    curv = bg.boundary_curvature(clf64, x.double(), k=3)
    assert curv.curvature.dtype == torch.float64
    ref = bg.boundary_curvature(clf, x, k=3)
    torch.testing.assert_close(curv.curvature.float(), ref.curvature, atol=1e-3, rtol=1e-3)


def test_works_inside_no_grad():
    clf, x, _, _ = _quadric()
    with torch.no_grad():
        curv = bg.boundary_curvature(clf, x, k=2)
    assert curv.valid.all()


def test_relu_network_has_curvature_only_by_finite_differences(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    fd = bg.boundary_curvature(clf, x[:8], k=3)
    assert fd.valid.any() and fd.curvature[fd.valid].abs().max() > 0
    with pytest.warns(UserWarning, match="piecewise linear"):
        exact = bg.boundary_curvature(clf, x[:8], k=3, method="autograd")
    assert exact.curvature[exact.valid].abs().max() == 0


def test_smooth_model_does_not_warn():
    clf, x, _, _ = _quadric()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.boundary_curvature(clf, x, k=2, method="autograd")


def test_unconverged_points_are_nan_and_left_out_of_frames_and_directions():
    clf, x, _, _ = _quadric()
    pts = bg.deepfool(clf, x)
    broken = bg.BoundaryPoints(**{**{f: getattr(pts, f) for f in (
        "perturbation", "normal", "margin", "label", "target", "iterations", "status", "index")},
        "converged": torch.tensor([True, False, True, True, False])})
    curv = bg.boundary_curvature(clf, broken, inputs=x, k=2)
    assert curv.valid.tolist() == [True, False, True, True, False]
    assert torch.isnan(curv.curvature[~curv.valid]).all()
    assert torch.isfinite(curv.curvature[curv.valid]).all()
    frame = curv.to_frame()
    assert len(frame) == 3 * 2 and set(frame["index"]) == {0, 2, 3}
    assert curv.directions().shape == (6, 6)
    assert len(curv.directions(positive=True)) + len(curv.directions(positive=False)) == 6


def test_save_load_round_trip(tmp_path):
    clf, x, _, _ = _quadric()
    curv = bg.boundary_curvature(clf, x, k=3, along={"first": torch.eye(6)[:2], "last": torch.eye(6)[5]})
    curv.save(tmp_path / "curv")
    back = bg.Curvature.load(tmp_path / "curv")
    torch.testing.assert_close(back.curvature, curv.curvature)
    torch.testing.assert_close(back.direction, curv.direction)
    torch.testing.assert_close(back.along, curv.along)
    assert back.along_names == ("first", "first", "last") == curv.along_names
    assert back.method == curv.method and back.settings == curv.settings
    frame = back.along_frame()
    assert list(frame.columns) == ["index", "group", "direction", "curvature"]
    assert len(frame) == 5 * 3 and frame.groupby("group").size().to_dict() == {"first": 10, "last": 5}


def test_caller_data_unchanged():
    clf, x, _, _ = _quadric()
    before = x.clone()
    bg.boundary_curvature(clf, x, k=2)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"method": "lanczos"}, "method must be"),
        ({"step": -1.0}, "step must be"),
        ({"relative_step": 0.0}, "relative_step"),
        ({"lanczos_steps": 0}, "lanczos_steps"),
        ({"k": 2.5}, "k must be a whole number"),
        ({"step": float("nan")}, "step must be a finite"),
        ({"relative_step": float("inf")}, "relative_step must be a finite"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"seed": -1}, "seed must be between"),
        ({"seed": 2.5}, "seed must be a whole number"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    clf, x, _, _ = _quadric()
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.boundary_curvature(clf, x, **kwargs)


def test_boundary_points_need_their_inputs():
    clf, x, _, _ = _quadric()
    pts = bg.deepfool(clf, x)
    with pytest.raises(bg.BoundgeoError, match="inputs="):
        bg.boundary_curvature(clf, pts)
    with pytest.raises(bg.BoundgeoError, match="inputs has 3 rows"):
        bg.boundary_curvature(clf, pts, inputs=x[:3])
    with pytest.raises(bg.BoundgeoError, match="only apply when points is data"):
        bg.boundary_curvature(clf, pts, inputs=x, overshoot=0.1)


def test_curvature_along_given_directions_is_the_normal_section():
    clf, x, a, b = _quadric()
    along = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    curv = bg.boundary_curvature(clf, x, k=2, along=along)
    assert curv.along.shape == (5, 4)
    for i in range(len(x)):
        z = curv.point[i].double()
        shape_op = _shape_operator(a, b, z)
        grad = a.double() @ z + b.double()
        normal = grad / grad.norm()
        for j, u in enumerate(along.double()):
            t = u - (u @ normal) * normal
            expected = float(t @ shape_op @ t / (t @ t))
            assert abs(float(curv.along[i, j]) - expected) < 1e-3 * max(1.0, abs(expected))
    back = bg.boundary_curvature(clf, x, k=2)
    assert back.along is None
    with pytest.raises(bg.BoundgeoError, match="pass along="):
        back.along_frame()


def test_along_must_match_the_input_dimension():
    clf, x, _, _ = _quadric()
    with pytest.raises(bg.BoundgeoError, match="along must be"):
        bg.boundary_curvature(clf, x, along=torch.ones(2, 5))


def test_points_with_the_wrong_inputs_are_left_out_with_a_warning(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    pts = bg.deepfool(clf, x[:20])
    right = bg.boundary_curvature(clf, pts, inputs=x[:20], k=2, lanczos_steps=6)
    assert right.valid.sum() == pts.converged.sum()
    with pytest.warns(UserWarning, match="not between x"):
        wrong = bg.boundary_curvature(clf, pts, inputs=x[20:40], k=2, lanczos_steps=6)  # other images
    assert wrong.valid.sum() < right.valid.sum()
    assert torch.isnan(wrong.curvature[~wrong.valid]).all()


def test_the_largest_seed_works():
    clf, x, _, _ = _quadric()
    bg.boundary_curvature(clf, x[:1], k=1, seed=2**63 - 1)  # overflowed manual_seed before


def test_non_finite_curvatures_raise(monkeypatch):
    """A NaN curvature at a valid point is an error, not a measurement."""
    import boundgeo.geometry.curvature as curvature

    clf, x, _, _ = _quadric()
    real = curvature._apply_each
    monkeypatch.setattr(curvature, "_apply_each", lambda apply, vectors: real(apply, vectors) * float("nan"))
    with pytest.raises(bg.BoundgeoError, match=r"NaN or Inf curvatures at 5 boundary points"):
        bg.boundary_curvature(clf, x, k=2)


def test_a_bare_module_is_wrapped_with_a_warning():
    ball = Ball(torch.full((4,), 0.5), 0.3).eval()  # the boundary lies inside [0, 1]^4
    x = 0.5 + 0.1 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="bare Ball"):
        curv = bg.boundary_curvature(ball, x, k=2)
    assert curv.valid.all()
    torch.testing.assert_close(curv.curvature, torch.full((6, 2), 1 / 0.3), rtol=0.05, atol=0.0)


def test_no_converged_point_warns_instead_of_crashing():
    """A boundary outside the box: DeepFool converges nowhere (a RuntimeError in reshape before)."""
    model = nn.Linear(3, 2).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.0, -5.0]))
    clf = bg.Classifier(model)
    with pytest.warns(UserWarning, match="no boundary point for any of the 4 inputs"):
        curv = bg.boundary_curvature(clf, torch.rand(4, 3), k=1, max_iter=3)
    assert not curv.valid.any() and torch.isnan(curv.curvature).all()


# ------------------------------------------------------------------------------ fooling along curved directions
def test_tangent_steps_inside_a_ball_fool_exactly_beyond_the_chord():
    """x inside a ball of radius R around c: every tangent direction u at the boundary point is
    orthogonal to x − c, so ‖x ± εu − c‖² = ‖x − c‖² + ε², crossing exactly at ε = √(R² − ‖x − c‖²)."""
    gen = torch.Generator().manual_seed(3)
    d, radius = 8, 2.0
    center = torch.zeros(d)
    clf = bg.Classifier(Ball(center, radius).eval(), bounds=(-10, 10))
    x = torch.randn(6, d, generator=gen)
    x = x / x.norm(dim=1, keepdim=True) * torch.linspace(0.4, 1.6, 6)[:, None]
    curv = bg.boundary_curvature(clf, x, k=3, method="autograd")
    chord = (radius**2 - x.norm(dim=1) ** 2).sqrt()
    eps = torch.tensor([0.5, 1.0, 1.5, 1.9])
    found = bg.curvature_fooling(clf, curv, x, eps, random=5, seed=1, batch_size=4)
    assert found.valid.all()
    expected = (eps[None, :] > chord[:, None]).double()  # (n, E)
    close = ((eps[None, :] - chord[:, None]).abs() < 1e-3)
    for g in range(3):
        torch.testing.assert_close(found.hits[:, g][~close], expected[~close])
    assert found.groups == bg.geometry.curvature.FOOLING_GROUPS
    torch.testing.assert_close(found.curvature[:, :2], torch.full((6, 2), 1 / radius, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    frame = found.to_frame()
    assert list(frame.columns) == ["group", "eps", "fooling_rate"] and len(frame) == 12


def test_tangent_steps_never_cross_a_flat_boundary(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-1e3, 1e3))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(4))
    curv = bg.boundary_curvature(clf, x, k=2, clip=False)
    found = bg.curvature_fooling(clf, curv, x, [0.1, 1.0, 10.0], random=4)
    # five classes: a step can still reach a third class's face, but never the face of the pair
    # itself; with two classes nothing is crossed at all
    assert found.rate.shape == (3, 3)
    from tests.conftest import Affine

    two = bg.Classifier(Affine(affine_model.linear.weight[:2].detach(), torch.zeros(2)).eval(), bounds=(-1e3, 1e3))
    curv2 = bg.boundary_curvature(two, x, k=2, clip=False)
    found2 = bg.curvature_fooling(two, curv2, x, [0.1, 1.0, 10.0], random=4)
    assert torch.equal(found2.rate, torch.zeros(3, 3, dtype=torch.float64))


def test_curvature_fooling_checks_its_arguments(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-100, 100))
    x = torch.randn(3, 16)
    curv = bg.boundary_curvature(clf, x, k=2, clip=False)
    with pytest.raises(bg.BoundgeoError, match="curvature must be a Curvature"):
        bg.curvature_fooling(clf, "curv", x, [1.0])
    with pytest.raises(bg.BoundgeoError, match="inputs has 2 rows"):
        bg.curvature_fooling(clf, curv, x[:2], [1.0])
    with pytest.raises(bg.BoundgeoError, match="random"):
        bg.curvature_fooling(clf, curv, x, [1.0], random=0)


def test_curvature_fooling_does_not_depend_on_batch_size_or_chunks(small_net, request, monkeypatch):
    import dataclasses

    import boundgeo.geometry.curvature as curvature

    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    curv = bg.boundary_curvature(clf, x[:12], k=3)
    valid = curv.valid.clone()
    valid[[2, 7]] = False  # points without a boundary point stay NaN
    curv = dataclasses.replace(curv, valid=valid)
    settings = dict(epsilons=[0.5, 2.0, 6.0], random=5, seed=2)
    whole = curvature.curvature_fooling(clf, curv, x[:12], batch_size=1000, **settings)
    seen = request.getfixturevalue("forward_sizes")  # counted from here on
    for batch_size in (1, 5, 1000):
        seen.clear()
        found = bg.curvature_fooling(clf, curv, x[:12], batch_size=batch_size, **settings)
        assert max(seen) <= batch_size
        for name in ("hits", "rate", "curvature", "valid"):
            assert torch.equal(getattr(found, name).nan_to_num(-1), getattr(whole, name).nan_to_num(-1)), name
    # one gradient forward, then the steps of all points together: not one forward per point
    rows = int(valid.sum()) * 3 * 2 * (2 + 5)
    assert seen == [int(valid.sum())] + [1000] * (rows // 1000) + [rows % 1000]
    monkeypatch.setattr(curvature, "_STEP_BYTES", 1)  # one point per chunk
    one = bg.curvature_fooling(clf, curv, x[:12], batch_size=64, **settings)
    assert torch.equal(one.hits.nan_to_num(-1), whole.hits.nan_to_num(-1))
    assert whole.hits[~valid].isnan().all() and not whole.hits[valid].isnan().any()
    assert (whole.hits[valid] > 0).any()


def test_curvature_fooling_takes_the_largest_seed(affine_model):
    clf = bg.Classifier(affine_model.eval(), bounds=(-100, 100))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    curv = bg.boundary_curvature(clf, x, k=2, clip=False)
    assert bg.curvature_fooling(clf, curv, x, [1.0], random=2, seed=2**63 - 1).hits.shape == (3, 3, 1)
