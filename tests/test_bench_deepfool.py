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
