import numpy as np
import pytest
import torch
from torch import nn

import boundgeo as bg
from boundgeo.geometry.subspace import halfspace_fooling_probability


def _binary_affine(d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen)
    model = nn.Linear(d, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(d), w]))
        model.bias.copy_(torch.tensor([0.0, 0.1]))
    x = 2 * torch.rand(400, d, generator=gen) - 1
    margin = (x @ w + 0.1).abs() / w.norm()
    return bg.Classifier(model.eval(), bounds=(-1000, 1000)), x, margin, w / w.norm()


def test_full_space_rate_matches_the_closed_form():
    d = 30
    clf, x, margin, _ = _binary_affine(d)
    radii = [1.0, 3.0, 6.0]
    result = bg.subspace_fooling(clf, x, torch.eye(d)[:2], radii=radii, draws=60, independent=True)
    expected = [halfspace_fooling_probability(margin.numpy(), r, d).mean() for r in radii]
    np.testing.assert_allclose(result.full_rate.numpy(), expected, atol=0.015)
    assert expected[0] < expected[1] < expected[2] < 0.5


def test_normal_subspace_fools_at_the_margin_whatever_the_dimension():
    d = 200
    clf, x, margin, normal = _binary_affine(d, seed=1)
    radius = float(margin.median())
    inside = bg.subspace_fooling(clf, x, normal[None], radii=[radius], draws=40, independent=True)
    # ±normal with probability ½ each: half of the inputs within the radius are fooled
    expected = 0.5 * float((margin <= radius).float().mean())
    assert float(inside.subspace_rate[0]) == pytest.approx(expected, abs=0.03)
    assert float(inside.full_rate[0]) < 0.02  # in R^200 a random direction barely moves


def test_closed_form_edges():
    assert halfspace_fooling_probability(0.0, 1.0, 10) == pytest.approx(0.5)
    assert halfspace_fooling_probability(1.0, 1.0, 10) == 0.0
    # d = 3: ⟨u, n⟩ is uniform on [-1, 1] (Archimedes), so P(t >= a) = (1 - a) / 2
    assert halfspace_fooling_probability(0.4, 1.0, 3) == pytest.approx(0.3)
    assert halfspace_fooling_probability(-0.4, 1.0, 3) == pytest.approx(0.7)  # past the boundary


@pytest.mark.parametrize("margin, radius, message", [
    (0.5, -1.0, "radius"), (0.5, 0.0, "radius"), (0.5, float("nan"), "radius"), (0.5, [1.0, -2.0], "radius"),
    (float("nan"), 1.0, "margin"), (float("inf"), 1.0, "margin"),
])
def test_closed_form_refuses_what_has_no_meaning(margin, radius, message):
    with pytest.raises(bg.BoundgeoError, match=message):
        halfspace_fooling_probability(margin, radius, 10)


def test_deterministic_and_tidy(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    basis = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)))[0].T
    a = bg.subspace_fooling(clf, x[:100], basis, radii=[0.5, 2.0], draws=3, seed=1)
    b = bg.subspace_fooling(clf, x[:100], basis.reshape(5, 1, 8, 8), radii=[0.5, 2.0], draws=3, seed=1)
    assert torch.equal(a.subspace_rates, b.subspace_rates) and torch.equal(a.full_rates, b.full_rates)
    frame = a.to_frame()
    assert len(frame) == 2 * 2 * 3 and set(frame.space) == {"subspace", "full"}
    assert a.k == 5 and a.d == 64 and a.n == 100


def test_basis_checks(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model)
    skewed = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="orthonormalised"):
        bg.subspace_fooling(clf, x[:10], skewed, radii=[1.0], draws=1)
    with pytest.raises(bg.BoundgeoError, match="rank-deficient"):
        bg.subspace_fooling(clf, x[:10], torch.stack([skewed[0], 2 * skewed[0]]), radii=[1.0])
    with pytest.raises(bg.BoundgeoError, match="NaN"):
        bg.subspace_fooling(clf, x[:10], torch.full((2, 64), float("nan")), radii=[1.0])
    with pytest.raises(bg.BoundgeoError, match="one input has 64"):
        bg.subspace_fooling(clf, x[:10], torch.eye(10)[:2], radii=[1.0])
    with pytest.raises(bg.BoundgeoError, match="radii"):
        bg.subspace_fooling(clf, x[:10], torch.eye(64)[:2], radii=[0.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(radii="abc"), r"radii\[0\] must be a finite real number, got 'abc'"),
     (dict(radii=[1.0, float("inf")]), r"radii\[1\] must be a finite"),
     (dict(radii=[]), "radii must hold at least one positive number"),
     (dict(radii=[1.0], draws=2.5), "draws must be a whole number"),
     (dict(radii=[1.0], seed=-1), "seed must be between"),
     (dict(radii=[1.0], batch_size=0), "batch_size must be >= 1"),
     (dict(radii=[1.0], independent="yes"), "independent must be one of"),
     (dict(radii=[1.0], norm="l3"), "norm must be one of")],
)
def test_bad_settings_raise(kwargs, match):
    clf, x, _, _ = _binary_affine(8)
    with pytest.raises(bg.BoundgeoError, match=match):
        bg.subspace_fooling(clf, x[:10], torch.eye(8)[:2], **kwargs)


def test_radii_accept_a_number_an_array_or_a_tensor():
    clf, x, _, _ = _binary_affine(8)
    basis = torch.eye(8)[:2]
    one = bg.subspace_fooling(clf, x[:20], basis, radii=0.5, draws=2)
    arr = bg.subspace_fooling(clf, x[:20], basis, radii=np.array([0.5]), draws=2)
    ten = bg.subspace_fooling(clf, x[:20], basis, radii=torch.tensor([0.5]), draws=2)
    assert torch.equal(one.full_rates, arr.full_rates) and torch.equal(one.full_rates, ten.full_rates)


def test_a_bare_module_is_wrapped_with_a_warning():
    clf, x, _, _ = _binary_affine(8)
    with pytest.warns(UserWarning, match="bare Linear"):
        result = bg.subspace_fooling(clf.model, x[:10].clamp(0, 1), torch.eye(8)[:2], radii=[0.5], draws=1)
    assert result.n == 10


def test_closed_form_needs_two_dimensions():
    with pytest.raises(bg.BoundgeoError, match="d must be >= 2"):
        halfspace_fooling_probability(0.1, 1.0, 1)


# ------------------------------------------------------------------------------ adversarial dimension
def test_gradient_aligned_directions_are_orthonormal_at_cosine_one_over_root_k():
    g = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in (1, 3, 16, 50):
        u = bg.geometry.subspace.gradient_aligned_directions(g, k, seed=2, index=5)
        assert u.shape == (k, 50)
        torch.testing.assert_close(u @ u.T, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
        torch.testing.assert_close(u @ (g / g.norm()), torch.full((k,), k**-0.5, dtype=torch.float64),
                                   atol=1e-10, rtol=0)
    # nested: the completion of a larger k starts with the smaller one's columns
    small = bg.geometry.subspace._completion(g / g.norm(), 4, 2, 5)
    large = bg.geometry.subspace._completion(g / g.norm(), 9, 2, 5)
    torch.testing.assert_close(small, large[:, :4], atol=1e-12, rtol=0)
    with pytest.raises(bg.BoundgeoError, match="not zero"):
        bg.geometry.subspace.gradient_aligned_directions(torch.zeros(5), 2)


@pytest.mark.parametrize("eps", [0.5, 1.3, 2.9, 6.0])
def test_a_flat_boundary_gives_the_largest_k_below_eps_over_rho_squared(eps):
    """Binary affine model: the gradient is the boundary's normal, so a direction of the k-th
    family crosses exactly when ε/√k > ρ; every direction of a family behaves alike."""
    from tests.conftest import Affine

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(2, 30, generator=gen)
    clf = bg.Classifier(Affine(w, torch.zeros(2)).eval(), bounds=(-1e3, 1e3))
    x = torch.randn(12, 30, generator=gen)
    logits = x @ w.T
    rho = (logits[:, 0] - logits[:, 1]).abs() / (w[0] - w[1]).norm()
    found = bg.adversarial_dimension(clf, x, [eps], max_k=30, batch_size=5)
    ks = found.ks.tolist()
    assert ks == [1, 2, 4, 8, 16, 30]
    for i in range(len(x)):
        crossing = [k for k in ks if eps / k**0.5 > float(rho[i]) * (1 + 1e-4)]
        missing = [k for k in ks if eps / k**0.5 < float(rho[i]) * (1 - 1e-4)]
        if len(crossing) + len(missing) < len(ks):
            continue  # too close to call in float32
        assert int(found.dimension[i, 0]) == (max(crossing) if crossing else 0), (i, float(rho[i]))
        for c, k in enumerate(ks):  # a family fools whole or not at all
            assert int(found.counts[i, 0, c]) in (0, k)


def test_adversarial_dimension_is_seeded_batch_independent_and_saved(small_net, tmp_path):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval())
    one = bg.adversarial_dimension(clf, x[:9], [1.0, 3.0], max_k=16, batch_size=2, seed=4)
    two = bg.adversarial_dimension(clf, x[:9], [1.0, 3.0], max_k=16, batch_size=9, seed=4)
    assert torch.equal(one.counts, two.counts) and torch.equal(one.dimension, one.counts.max(2).values)
    assert (one.dimension[:, 1] >= 0).all() and (one.dimension <= 16).all()
    assert one.median().shape == (2,)
    frame = one.to_frame()
    assert list(frame.columns) == ["index", "eps", "dimension"] and len(frame) == 18
    one.save(tmp_path / "dim")
    again = bg.AdversarialDimension.load(tmp_path / "dim")
    assert torch.equal(again.counts, one.counts) and torch.equal(again.ks, one.ks)
    with pytest.raises(bg.BoundgeoError, match="max_k"):
        bg.adversarial_dimension(clf, x[:2], [1.0], max_k=65)
    with pytest.raises(bg.BoundgeoError, match="epsilons"):
        bg.adversarial_dimension(clf, x[:2], [-1.0])


class _Gated(nn.Module):
    """Linear in relu(x − ½): an input below ½ everywhere has a zero gradient."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(3, d, generator=torch.Generator().manual_seed(0)))
            self.linear.bias.copy_(torch.tensor([0.0, 0.1, -0.1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(x.flatten(1) - 0.5))


@pytest.mark.parametrize("which", ["mlp", "gated"])
def test_adversarial_dimension_does_not_depend_on_batch_size_or_chunks(which, small_net, request, monkeypatch):
    import boundgeo.geometry.subspace as subspace

    if which == "mlp":
        model, x, _ = small_net
        clf, x = bg.Classifier(model.eval()), x[:13]
    else:
        x = torch.rand(13, 64, generator=torch.Generator().manual_seed(1))
        x[[1, 4, 9]] *= 0.4  # zero gradient: no direction to align with
        clf = bg.Classifier(_Gated(64).eval(), bounds=(0, 1))
    settings = dict(epsilons=[0.5, 2.0, 5.0], max_k=12, seed=3)  # ks 1, 2, 4, 8, 12: 27 directions
    whole = bg.adversarial_dimension(clf, x, batch_size=1000, **settings)
    seen = request.getfixturevalue("forward_sizes")  # counted from here on
    again = bg.adversarial_dimension(clf, x, batch_size=1000, **settings)
    # one gradient forward, then the steps of all inputs together: not one forward per input
    rows = int((~whole.no_gradient).sum()) * 3 * 27
    assert seen == [13] + [1000] * (rows // 1000) + [rows % 1000]
    for batch_size in (1, 7):
        seen.clear()
        found = bg.adversarial_dimension(clf, x, batch_size=batch_size, **settings)
        assert max(seen) <= batch_size
        for name in ("counts", "dimension", "no_gradient", "label"):
            assert torch.equal(getattr(found, name), getattr(whole, name)), (batch_size, name)
    monkeypatch.setattr(subspace, "_STEP_BYTES", 1)  # one input per chunk
    one = bg.adversarial_dimension(clf, x, batch_size=64, **settings)
    assert torch.equal(one.counts, whole.counts) and torch.equal(again.counts, whole.counts)
    if which == "gated":
        assert whole.no_gradient.nonzero().squeeze(1).tolist() == [1, 4, 9]
        assert (whole.counts[[1, 4, 9]] == 0).all() and (whole.dimension[~whole.no_gradient] > 0).any()
    else:
        assert not whole.no_gradient.any() and (whole.dimension > 0).any()


def test_adversarial_dimension_takes_the_largest_seed():
    clf, x, _, _ = _binary_affine(8)
    found = bg.adversarial_dimension(clf, x[:3], [1.0], max_k=4, seed=2**63 - 1)
    assert found.counts.shape == (3, 1, 3)
