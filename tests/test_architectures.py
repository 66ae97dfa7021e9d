"""The paper's ImageNet architectures (torchvision, random weights) through boundgeo's DeepFool.

The networks are built exactly as analysis/benchmarks/bench_imagenet_scale.py builds them (seeded
random weights, batch-norm statistics calibrated on other inputs), at the smallest input each
accepts; the slow test runs one at 3x224x224 with the normals on disk and a streamed spectrum.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import boundgeo as bg

from ._scripts import load_script

bench = load_script("analysis/benchmarks/bench_imagenet_scale.py")

# the smallest square input each network accepts (alexnet's three 3x3/2 poolings need 63)
SMALLEST = {"alexnet": 63, "googlenet": 32, "resnet152": 32, "vgg16": 32, "vgg19": 32}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread. On the shared 2-core machine two threads that wait on each other made
    these networks 8-15 times slower (resnet152's DeepFool at 32x32: 164 s against 11 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Photograph-like inputs in [0, 1]: 8x8 noise upsampled to size x size."""
    coarse = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def check_boundary_points(clf: bg.Classifier, x: torch.Tensor, pts: bg.BoundaryPoints) -> None:
    """Every input crossed, x + r is classified as the target, normals are unit and finite."""
    r = torch.as_tensor(pts.perturbation).float()
    normals = torch.as_tensor(pts.normal).float().flatten(1)
    assert bool(torch.as_tensor(pts.converged).all()), pts.to_frame()
    assert torch.isfinite(r).all() and torch.isfinite(normals).all()
    target = torch.as_tensor(pts.target)
    assert torch.equal(clf.predict(x + r), target)
    assert (target != torch.as_tensor(pts.label)).all()
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(len(x)), atol=1e-4, rtol=0)
    margins = torch.as_tensor(pts.margin).float()
    assert (margins > 0).all() and (margins < r.flatten(1).shape[1] ** 0.5).all()


def test_the_benchmark_covers_the_papers_networks():
    assert set(SMALLEST) == set(bench.ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(bench.ARCHITECTURES))
def test_deepfool_on_each_architecture_at_its_smallest_input(name):
    size = SMALLEST[name]
    model = bench.build_model(name, smooth_images(4, size, seed=1))
    clf = bench.classifier(model)
    x = smooth_images(2, size, seed=0)
    pts = bg.deepfool(clf, x, overshoot=0.02, max_iter=50, candidates=10, batch_size=2)
    check_boundary_points(clf, x, pts)


def test_batchnorm_calibration_changes_statistics_only():
    model = bench.build_model("googlenet", None)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    x = smooth_images(4, 32, seed=1)
    with torch.no_grad():
        before = model((x - 0.45) / 0.225)
    layers = bench.calibrate_batchnorm(model, x)
    assert layers == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    assert not model.training and not any(m.training for m in model.modules())
    for key, value in model.named_parameters():
        assert torch.equal(value, weights[key]), key
    with torch.no_grad():
        after = model((x - 0.45) / 0.225)
    # uncalibrated, the random googlenet barely tells its inputs apart; calibrated, it does
    assert float(after.std(0).mean()) > 100 * float(before.std(0).mean())


def test_the_same_seed_builds_the_same_network():
    first, second = bench.build_model("resnet152", None), bench.build_model("resnet152", None)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key


@pytest.mark.slow
def test_full_size_normals_on_disk_and_streamed_spectrum(tmp_path):
    model = bench.build_model("alexnet", None)  # no batch norm: nothing to calibrate
    clf = bench.classifier(model)
    x = smooth_images(2, bench.SIZE, seed=0)
    pts = bg.boundary_normals(clf, x, out=tmp_path / "normals", batch_size=2, progress=False)
    check_boundary_points(clf, x, pts)
    assert (tmp_path / "normals" / "points" / "normal.npy").stat().st_size >= 2 * bench.D * 4
    spec = bg.spectrum(tmp_path / "normals", route="stream", baseline_draws=1)
    assert spec.route == "stream" and (spec.n, spec.d) == (2, bench.D)
    rows = torch.as_tensor(pts.normal).double().flatten(1)
    expected = torch.linalg.svdvals(rows / rows.norm(dim=1, keepdim=True))
    torch.testing.assert_close(spec.singular_values.double(), expected, atol=1e-6, rtol=0)
    assert abs(float((spec.singular_values ** 2).sum()) - 2) < 1e-6  # unit rows: sum of squares = n
