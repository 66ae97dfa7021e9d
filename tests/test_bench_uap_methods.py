"""The published SGD-UAP update of analysis/benchmarks/bench_uap_methods.py is a fair peer: with
the published settings, boundgeo's ``method="sgd"`` computes exactly the same v."""

from __future__ import annotations

import pytest
import torch

import boundgeo as bg
from tests._scripts import load_script


def _bench():
    return load_script("analysis/benchmarks/bench_uap_methods.py")


@pytest.mark.parametrize("norm, xi", [("linf", 0.1), ("l2", 1.0)])
def test_the_published_update_is_sgd_at_the_published_settings(small_net, norm, xi):
    """Epoch e steps 0.8^e ξ (pass p of sgd: step_size · step_decay^(p−1) with step_size = 0.8 ξ),
    mini-batch 32, β = 12, the last v; the same seeded shuffles. With the labels taken as the clean
    predictions, the two must agree to float rounding."""
    bench = _bench()
    model, x, _ = small_net
    clf = bg.Classifier(model)
    x = x[:96]
    labels = clf.predict(x)
    published = bench.published_sgd_uap(model, x, labels, xi, norm, decaying=True, seed=4, epochs=3)
    ours = bg.universal_perturbation(clf, x, xi=xi, norm=norm, method="sgd", seed=4, max_passes=3, delta=1e-6,
                                     step_size=0.8 * xi, step_decay=0.8, loss_clip=12.0, batch_size=32,
                                     keep_best=False, loss="ce", progress=False).perturbation
    assert published.abs().max() > 0
    assert torch.allclose(published, ours, atol=1e-5 * xi)


def test_the_constant_schedule_differs_from_the_decaying_one(small_net):
    bench = _bench()
    model, x, _ = small_net
    x = x[:64]
    labels = bg.Classifier(model).predict(x)
    a = bench.published_sgd_uap(model, x, labels, 0.1, "linf", decaying=True, seed=0, epochs=2)
    b = bench.published_sgd_uap(model, x, labels, 0.1, "linf", decaying=False, seed=0, epochs=2)
    assert a.abs().max() <= 0.1 + 1e-7 and b.abs().max() <= 0.1 + 1e-7
    assert not torch.equal(a, b)
