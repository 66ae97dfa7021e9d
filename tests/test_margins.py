"""Margins inside subspaces and the DCT bases: closed forms on affine models, scipy's DCT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import boundgeo as bg
from boundgeo.attacks.boundary import _STEP_SLACK
from tests.conftest import Affine

OVERSHOOT = 0.02


def _affine(c: int = 5, d: int = 16, seed: int = 0) -> tuple[bg.Classifier, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(c, d, generator=gen), 0.1 * torch.randn(c, generator=gen)
    return bg.Classifier(Affine(weight, bias).eval(), bounds=(-100, 100)), weight, bias


def _orthonormal(k: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0].T.float()


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("k", [1, 3, 16])
def test_affine_margin_along_a_subspace_is_the_gap_over_the_projected_gradient(k):
    clf, weight, bias = _affine()
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    basis = _orthonormal(k, 16, seed=k)
    found = bg.subspace_margins(clf, x, {"S": basis}, overshoot=OVERSHOOT)
    logits = x @ weight.T + bias
    label = logits.argmax(1)
    projected = (weight - weight[label][:, None]) @ basis.T @ basis  # (n, C, d): P_S (w_k - w_l)
    gap = (logits - logits.gather(1, label[:, None])).abs()
    ratio = gap / projected.norm(dim=2).clamp_min(1e-30)
    ratio[torch.arange(len(x)), label] = float("inf")
    expected = (1 + OVERSHOOT) * (ratio.min(1).values + _STEP_SLACK)
    assert found.converged.all()
    torch.testing.assert_close(found.margin[:, 0], expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(found.label, label)


def test_the_whole_space_gives_deepfools_margins():
    clf, _, _ = _affine()
    x = torch.randn(30, 16, generator=torch.Generator().manual_seed(2))
    found = bg.subspace_margins(clf, x, {"all": torch.eye(16)}, overshoot=OVERSHOOT)
    plain = bg.deepfool(clf, x, overshoot=OVERSHOOT, clip=False, nearest=None)
    torch.testing.assert_close(found.margin[:, 0], plain.margin, rtol=1e-5, atol=1e-6)


def test_the_perturbation_stays_inside_the_subspace_on_a_network(small_net):
    model, x, _ = small_net
    clf = bg.Classifier(model.eval(), bounds=(-50, 50))  # the unclipped iterate may leave [0, 1]
    basis = bg.dct_basis((8, 8), band=(0, 4)).reshape(16, 64)
    pts = bg.deepfool(clf, x[:50], clip=False, subspace=basis, max_iter=100)
    r = pts.perturbation.reshape(50, 64)
    inside = r @ basis.T @ basis
    assert pts.converged.float().mean() > 0.9  # a nonlinear model needs several steps
    torch.testing.assert_close(inside, r, rtol=0, atol=1e-5)
    assert bool((clf.predict(x[:50] + pts.perturbation) != pts.label)[pts.converged].all())


def test_a_subspace_orthogonal_to_the_boundary_finds_no_margin():
    clf, weight, _ = _affine(c=2)
    normal = (weight[1] - weight[0]) / (weight[1] - weight[0]).norm()
    basis = _orthonormal(4, 16, seed=3)
    basis = basis - (basis @ normal)[:, None] * normal  # orthogonal to w_1 - w_0
    basis = torch.linalg.qr(basis.T.double())[0].T.float()
    found = bg.subspace_margins(clf, torch.randn(10, 16), {"blind": basis, "all": torch.eye(16)})
    assert not found.converged[:, 0].any() and torch.isinf(found.margin[:, 0]).all()
    assert found.converged[:, 1].all()
    assert found.found() == {"blind": 0.0, "all": 1.0}
    assert found.median()["blind"] == float("inf")


def test_frame_summary_and_save_load(tmp_path):
    clf, _, _ = _affine()
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(4))
    found = bg.subspace_margins(clf, x, {"a": _orthonormal(2, 16, 0), "b": _orthonormal(8, 16, 1)})
    frame = found.to_frame()
    assert list(frame.columns[:4]) == ["index", "subspace", "dim", "margin"] and "converged" in frame
    assert len(frame) == 24 and set(frame.subspace) == {"a", "b"}
    assert frame[frame.subspace == "b"].margin.tolist() == found.margin[:, 1].tolist()
    summary = found.summary_frame()
    assert summary.dim.tolist() == [2, 8]
    assert (summary.q25 <= summary["median"]).all() and (summary["median"] <= summary.q75).all()
    assert summary["median"].tolist() == pytest.approx([found.median()["a"], found.median()["b"]])
    found.save(tmp_path / "m")
    again = bg.SubspaceMargins.load(tmp_path / "m")
    assert torch.equal(again.margin, found.margin) and again.subspaces == found.subspaces


# ------------------------------------------------------------------------------ DCT
@pytest.mark.parametrize("shape", [(8, 8), (3, 6, 10)])
def test_dct_rings_are_orthonormal_and_partition_the_space(shape):
    bands = bg.dct_bands(shape, 3, kind="ring")
    rows = torch.cat([b.reshape(len(b), -1).double() for b in bands.values()])
    d = int(np.prod(shape))
    assert rows.shape == (d, d)
    torch.testing.assert_close(rows @ rows.T, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)


def test_dct_rows_are_scipys_transform():
    from scipy.fft import dctn

    image = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    basis = bg.dct_basis((2, 8, 8), band=(2, 5), dtype=torch.float64)
    assert basis.shape == (9 * 2, 2, 8, 8)
    coefficients = basis.reshape(len(basis), -1) @ image.reshape(-1)
    spectrum = dctn(image.numpy(), axes=(1, 2), norm="ortho")
    expected = [spectrum[c, u, v] for u in range(2, 5) for v in range(2, 5) for c in range(2)]
    np.testing.assert_allclose(coefficients.numpy(), expected, atol=1e-12)


def test_dct_block_bands_are_the_diagonal_blocks():
    bands = bg.dct_bands((1, 28, 28), 4)
    assert list(bands) == ["0-4", "4-8", "8-12", "12-16", "16-20", "20-24", "24-28"]
    assert all(b.shape == (16, 1, 28, 28) for b in bands.values())
    assert bg.dct_basis((28, 28), (26, 40)).shape == (4, 28, 28)  # clipped to the spectrum


def test_dct_bands_of_a_wide_spectrum():
    # 3 x 8 x 12: diagonal blocks end with the shorter side, rings with the longer, and the
    # rings still partition the space
    blocks = bg.dct_bands((3, 8, 12), 4)
    assert list(blocks) == ["0-4", "4-8"]
    rings = bg.dct_bands((3, 8, 12), 4, kind="ring", dtype=torch.float64)
    assert list(rings) == ["0-4", "4-8", "8-12"]
    stacked = torch.cat([b.reshape(len(b), -1) for b in rings.values()])
    torch.testing.assert_close(stacked @ stacked.T, torch.eye(3 * 8 * 12, dtype=torch.float64), atol=1e-10, rtol=0)
    assert list(bg.dct_bands((3, 8, 12), 2, count=4)) == ["0-2", "2-4", "4-6", "6-8"]
    with pytest.raises(bg.BoundgeoError, match="kind must be"):
        bg.dct_bands((8, 8), 2, kind="disc")


def test_dct_bands_can_sample_the_spectrum():
    # count bands start evenly, narrower than the gap between them (the CLI's dense-row cap)
    bands = bg.dct_bands((3, 32, 32), 2, count=4)
    assert list(bands) == ["0-2", "8-10", "16-18", "24-26"]
    torch.testing.assert_close(bands["8-10"], bg.dct_basis((3, 32, 32), (8, 10)))
    assert list(bg.dct_bands((1, 8, 8), 2, count=4)) == list(bg.dct_bands((1, 8, 8), 2))
    with pytest.raises(bg.BoundgeoError, match="count must be"):
        bg.dct_bands((1, 8, 8), 2, count=9)


@pytest.mark.parametrize("band, message", [((3, 3), "0 <= lo < hi"), ((-1, 2), "0 <= lo < hi"),
                                           ((0.5, 2), "whole"), ("ab", "band must be"),
                                           ((40, 50), "holds no frequency")])
def test_bad_bands_are_refused(band, message):
    with pytest.raises(bg.BoundgeoError, match=message):
        bg.dct_basis((28, 28), band)


def test_bad_bases_are_refused_naming_them():
    clf, _, _ = _affine()
    x = torch.randn(4, 16)
    with pytest.raises(bg.BoundgeoError, match=r"bases\['skew'\] is not orthonormal"):
        bg.subspace_margins(clf, x, {"skew": torch.ones(2, 16)})
    with pytest.raises(bg.BoundgeoError, match=r"bases\['wide'\] has shape \(2, 15\)"):
        bg.subspace_margins(clf, x, {"wide": torch.zeros(2, 15)})
    with pytest.raises(bg.BoundgeoError, match=r"bases\['nan'\] contains NaN"):
        bg.subspace_margins(clf, x, {"nan": torch.full((1, 16), float("nan"))})
    with pytest.raises(bg.BoundgeoError, match="non-empty mapping"):
        bg.subspace_margins(clf, x, {})
    with pytest.raises(bg.BoundgeoError, match="clip=False"):
        bg.deepfool(clf, x, subspace=torch.eye(16))
