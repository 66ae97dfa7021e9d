"""The helpers of analysis/benchmarks/bench_deepfool.py that choose each library's setting and check
its success: a wrong choice or a lenient check would make every ratio in the DeepFool table wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests._scripts import load_script


def _bench():
    return load_script("analysis/benchmarks/bench_deepfool.py")


def test_the_fastest_setting_times_each_given_setting_at_its_threads_and_restores_them():
    bench = _bench()
    before = torch.get_num_threads()
    seen = []
    seconds = {32: 2.0, 100: 0.5, 200: 3.0}

    def seconds_at(batch: int) -> float:
        seen.append((torch.get_num_threads(), batch))
        return seconds[batch]

    best, rows = bench._fastest_setting(seconds_at, [(1, 32), (1, 100), (2, 200)])
    assert seen == [(1, 32), (1, 100), (2, 200)]
    assert best == {"threads": 1, "batch_size": 100, "seconds": 0.5}
    assert [r["batch_size"] for r in rows] == [32, 100, 200]
    assert torch.get_num_threads() == before


def test_the_fastest_setting_restores_the_threads_when_a_run_fails():
    bench = _bench()
    before = torch.get_num_threads()

    def failing(batch: int) -> float:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        bench._fastest_setting(failing, [(1, 32)])
    assert torch.get_num_threads() == before


def test_verify_needs_a_changed_prediction_and_the_library_s_own_success():
    bench = _bench()
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # predicts the larger coordinate
    adv = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    assert bench.verify(model, adv, y, None).tolist() == [True, False, True]
    reported = torch.tensor([True, True, False])
    assert bench.verify(model, adv, y, reported).tolist() == [True, False, False]
    # predictions already made are used as given (one forward pass serves success and classes)
    classes = bench.predict(model, adv)
    assert classes.tolist() == [1, 0, 1]
    assert bench.verify(model, adv, y, None, torch.tensor([0, 0, 1])).tolist() == [False, False, True]


def _affine():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 10)).eval()


@pytest.mark.parametrize("k", [2, 4, 10])
def test_a_candidates_row_runs_and_prices_only_its_top_k_classes(monkeypatch, k):
    """A fewer-candidates row must weigh k classes, and its floor must price k - 1 gradient rows at
    the first step: pricing 9 would make the row's ratio to its floor look better than it is."""
    bench = _bench()
    model = _affine()
    x = torch.rand(5, 6)
    y = model(x).argmax(1)
    _, _, pts = bench.run_boundgeo(model, x, y, "l2", 5, candidates=k)
    assert pts.settings["candidates"] == k
    assert bench._kept(pts) == k - 1
    _, _, default = bench.run_boundgeo(model, x, y, "l2", 5)
    assert default.settings["candidates"] == bench.SETTINGS["candidates"]

    rows = []
    monkeypatch.setattr(bench, "_plain_call", lambda model, inp, n, vmapped: rows.append(n) or 1.0)
    bench.autograd_floor(model, x, pts, batch=5, threads=1, repeats=1)
    stepped = int((pts.iterations > 0).any())
    assert rows[0] == (k - 1 if stepped else 1)


def test_foolbox_is_given_the_candidates_of_the_row(monkeypatch):
    """foolbox at k candidates must really run with k: the table divides by its time."""
    import sys
    import types

    bench = _bench()
    seen = {}

    class Attack:
        def __init__(self, **settings):
            seen.update(settings)

        def __call__(self, fmodel, xb, yb, epsilons=None):
            return None, xb, torch.ones(len(xb), dtype=torch.bool)

    fake = types.SimpleNamespace(PyTorchModel=lambda model, bounds: model,
                                 attacks=types.SimpleNamespace(L2DeepFoolAttack=Attack, LinfDeepFoolAttack=Attack))
    monkeypatch.setitem(sys.modules, "foolbox", fake)
    x = torch.rand(3, 6)
    bench.run_foolbox(_affine(), x, torch.zeros(3, dtype=torch.long), "l2", 2, candidates=3)
    assert seen["candidates"] == 3 and seen["steps"] == bench.SETTINGS["steps"]
    bench.run_foolbox(_affine(), x, torch.zeros(3, dtype=torch.long), "linf", 2)
    assert seen["candidates"] == bench.SETTINGS["candidates"]
