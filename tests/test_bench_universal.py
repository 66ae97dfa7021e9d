"""analysis/benchmarks/bench_universal.py: ART's runs kept with their v, and taken over by later code.

No ART runs here: the rows are written by hand, on a toy model small enough to evaluate at once.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

import boundgeo as bg
from tests._scripts import load_script


@pytest.fixture()
def bench(monkeypatch):
    """bench_universal with a fixed environment (scope version s1, clean, on machine "cpu A")."""
    module = load_script("analysis/benchmarks/bench_universal.py")
    env = {"scope_version": "s1", "code_clean": True, "cpu_model": "cpu A", "cpu_count": 2}
    monkeypatch.setattr(module, "environment", lambda **extra: dict(env))
    monkeypatch.setattr(module, "finish", lambda e: e)
    monkeypatch.setattr(module, "_art_version", lambda: "1.20.1")
    return module


def _split(bench, seed: int = 0, fit: int = 8, outputs: str = "logits"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    clf = bg.Classifier(model, bounds=(0.0, 1.0), outputs=outputs)
    x = torch.rand(fit + 12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    split = bench.Split("mnist", model, clf, x[:fit], x[fit:], {"model": "toy",
                                                                "model_fingerprint": bench.model_fingerprint(clf),
                                                                "model_config": bench.model_config(clf)})
    normals = bg.deepfool(clf, split.x_eval, progress=False).directions("normal")
    split.spectrum = bg.spectrum(normals, k=bench.TOP_K, baseline_draws=1)
    return split


def _art_row(bench, split, v, **changes):
    row = {"model": "mnist", "library": "art", "method": "deepfool", "norm": "l2", "xi": 3.0, "seed": 0,
           "eval_fooling_rate": 0.99, "fit_fooling_rate": 0.98, "norm_of_v": float(v.norm()), "alignment": 0.5,
           "images": len(split.x_fit), "seconds": 600.0, "passes": 5, "threads": 1, "timing": "own-core",
           "inputs": bench.art_inputs(split, 1), "v": bench.pack(v)}
    return {**row, **changes}


def test_pack_gives_back_the_exact_tensor():
    bench = load_script("analysis/benchmarks/bench_universal.py")
    v = torch.randn(3, 8, 8)
    corner = 0.1 * torch.randint(0, 2, (1, 28, 28)).float().mul(2).sub(1)
    for t in (v, corner):
        again = bench.unpack(json.loads(json.dumps(bench.pack(t))))
        assert again.dtype == torch.float32 and torch.equal(again, t)
    assert len(bench.pack(corner)["zlib_base64"]) < 400  # a corner of the ℓ∞ ball compresses


def test_the_fingerprint_follows_what_art_reads(bench):
    split = _split(bench)
    same = _split(bench)
    assert bench.art_inputs(split, 1) == bench.art_inputs(same, 1)
    assert bench.art_inputs(split, 1) != bench.art_inputs(split, 2)  # torch's threads
    with torch.no_grad():
        same.model[1].bias[3] += 1e-6
    assert bench.art_inputs(split, 1) != bench.art_inputs(same, 1)  # one parameter
    other = _split(bench)
    other.x_fit = other.x_fit.clone()
    other.x_fit[0, 0, 0, 0] = 0.5 if other.x_fit[0, 0, 0, 0] != 0.5 else 0.25
    assert bench.art_inputs(split, 1) != bench.art_inputs(other, 1)  # one fit pixel
    other = _split(bench)
    other.x_eval = torch.zeros_like(other.x_eval)  # ART never reads the held-out images
    assert bench.art_inputs(split, 1) == bench.art_inputs(other, 1)
    bench.PASSES = 4
    try:
        assert bench.art_inputs(split, 1) != bench.art_inputs(same, 1)
    finally:
        bench.PASSES = 5


def _files(bench, tmp_path, split, part_rows, part_env):
    ours = {"model": "mnist", "library": "boundgeo", "method": "sgd", "norm": "l2", "xi": 3.0, "seed": 0,
            "eval_fooling_rate": 0.4, "fit_fooling_rate": 0.5, "seconds": 2.0, "threads": 2}
    main = tmp_path / "main.json"
    main.write_text(json.dumps({"environment": {"scope_version": "s1", "code_clean": True, "art": "1.20.1"},
                                "setup": {"mnist": {}},
                                "rows": [ours]}))
    part = tmp_path / "art.json"
    part.write_text(json.dumps({"environment": part_env, "setup": {"mnist": {"model": "old"}}, "rows": part_rows}))
    return main, part


def test_merge_takes_over_art_runs_of_other_code_and_evaluates_them_again(bench, tmp_path, monkeypatch):
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda model, data_dir, fit=None, spectrum=True: split)
    v = 3.0 * torch.nn.functional.normalize(torch.randn(1, 4, 4).flatten(), dim=0).reshape(1, 4, 4)
    rows = [_art_row(bench, split, v), _art_row(bench, split, v, seed=1, timing="concurrent")]
    main, part = _files(bench, tmp_path, split, rows,
                        {"scope_version": "s0", "code_clean": True, "commit": "abc", "cpu_model": "cpu A",
                         "cpu_count": 2})
    bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    merged = json.loads(main.read_text())
    art = sorted((r for r in merged["rows"] if r["library"] == "art"), key=lambda r: r["seed"])
    assert len(art) == 2
    expected = bg.fooling_rate(split.clf, split.x_eval, v)
    for r in art:
        assert r["eval_fooling_rate"] == expected != 0.99  # this code's evaluation, not the one recorded
        assert r["fit_fooling_rate"] == bg.fooling_rate(split.clf, split.x_fit, v)
        assert r["alignment"] == pytest.approx(bg.alignment(v, split.spectrum, bench.TOP_K))
        assert r["reused"]["recorded"]["eval_fooling_rate"] == 0.99 and r["reused"]["scope_version"] == "s0"
    assert art[0]["timing"] == "own-core"  # the same machine: its time still counts
    sgd = next(s for s in merged["summary"] if s["method"] == "sgd")
    assert sgd["speedup_vs_art"] == pytest.approx(300.0)  # 600 s of ART's timed run against 2 s
    assert merged["setup"]["mnist"] == {}  # the main run's setup, not the old part's


def test_art_runs_timed_on_another_machine_keep_their_rates_but_not_their_times(bench, tmp_path, monkeypatch):
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda model, data_dir, fit=None, spectrum=True: split)
    v = torch.full((1, 4, 4), 0.2)
    main, part = _files(bench, tmp_path, split, [_art_row(bench, split, v, norm="linf", xi=0.2)],
                        {"scope_version": "s0", "code_clean": True, "cpu_model": "cpu B", "cpu_count": 8})
    bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    merged = json.loads(main.read_text())
    art = next(r for r in merged["rows"] if r["library"] == "art")
    assert art["timing"] == "other machine" and art["reused"]["recorded"]["timing"] == "own-core"
    line = next(s for s in merged["summary"] if s["library"] == "art")
    assert line["median_seconds"] is None and line["median_seconds_by_threads"] == {}
    assert all("speedup_vs_art" not in r for r in merged["rows"])
    assert "untimed" in bench.table(merged)


@pytest.mark.parametrize("change, message", [
    (lambda bench, split, row: row.update(inputs="0" * 16), "other inputs"),
    (lambda bench, split, row: row.update(threads=2), "other inputs"),  # the fingerprint names the threads
    (lambda bench, split, row: row.pop("v"), "did not keep ART's v"),
    (lambda bench, split, row: row.update(images=9), "not on this split"),
    (lambda bench, split, row: row.update(v=bench.pack(torch.full((1, 4, 4), 2.0))), "larger than"),
    (lambda bench, split, row: row.update(library="boundgeo"), "other code"),
])
def test_merge_refuses_art_runs_it_cannot_check_and_writes_nothing(bench, tmp_path, monkeypatch, change, message):
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda model, data_dir, fit=None, spectrum=True: split)
    row = _art_row(bench, split, torch.full((1, 4, 4), 0.5))
    change(bench, split, row)
    main, part = _files(bench, tmp_path, split, [row], {"scope_version": "s0", "code_clean": True})
    before = main.read_text()
    with pytest.raises(SystemExit, match=message):
        bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    assert main.read_text() == before


def test_merge_refuses_art_runs_of_uncommitted_code(bench, tmp_path, monkeypatch):
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda *a, **k: pytest.fail("refused before any work"))
    main, part = _files(bench, tmp_path, split, [_art_row(bench, split, torch.full((1, 4, 4), 0.5))],
                        {"scope_version": "s0", "code_clean": False})
    with pytest.raises(SystemExit, match="clean: False"):
        bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))


def test_art_orders_replays_each_art_seed_once(bench, tmp_path, monkeypatch):
    """ART's seed 0 may have run at one and at two threads: its shuffles are replayed once."""
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda *a, **k: split)
    monkeypatch.setattr(bench, "MODEL_SETTINGS", {"mnist": [("l2", 3.0)]})
    seeds = []

    def fake(clf, x, *, seed, orders, **kw):
        seeds.append(seed)
        assert orders == bench.art_orders(seed, len(x))
        return argparse.Namespace(norm="l2", xi=3.0, eval_fooling_rate=0.1, fooling_rate=0.2,
                                  perturbation=torch.full((1, 4, 4), 0.1), seconds=1.0, passes=5, history=[])

    monkeypatch.setattr(bench.bg, "universal_perturbation", fake)
    v = torch.full((1, 4, 4), 0.5)
    rows = [_art_row(bench, split, v, threads=t, seed=s) for s, t in ((0, 1), (0, 2), (1, 1))]
    out = tmp_path / "bench_universal.json"
    out.write_text(json.dumps({"environment": {"scope_version": "s1", "code_clean": True, "art": "1.20.1"},
                               "rows": rows}))
    args = argparse.Namespace(out=str(out), model="mnist", data_dir=None, fit=None, art_orders=True, add_faithful=0)
    bench.add_faithful(args)
    assert seeds == [0, 1]
    data = json.loads(out.read_text())
    data["setup"] = {"mnist": {"model_fingerprint": "another model"}}
    out.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="another mnist model"):
        bench.add_faithful(args)


def test_peer_settings_trust_whole_runs_over_a_single_call(bench):
    art = dict(model="cifar10", library="art", method="deepfool", norm="linf", xi=8 / 255, fit_fooling_rate=0.5,
               eval_fooling_rate=0.3, timing="own-core", seed=0)
    rows = [dict(art, threads=1, seconds=900.0), dict(art, threads=2, seconds=1200.0)]
    result = {"rows": rows, "art_seconds_per_call": {"cifar10": {"1": 1.67, "2": 1.38}}}  # a call: two is faster
    bench.attach_ratios(result)
    peers = result["peer_settings"]["art"]["cifar10"]
    assert peers["torch_threads"] == [1] and peers["fastest"] is True and "whole runs" in peers["why"]
    line = result["summary"][0]
    assert line["median_seconds"] == 900.0 and line["median_seconds_by_threads"] == {"1": 900.0, "2": 1200.0}
    assert bench.ART_THREADS == {"mnist": 1, "cifar10": 1}


def test_merge_refuses_a_part_that_attacked_another_model(bench, tmp_path):
    """The MNIST CNN trained at one thread and at two were two models; one result holds one."""
    split, other = _split(bench), _split(bench, seed=1)
    assert bench.model_fingerprint(split.clf) != bench.model_fingerprint(other.clf)
    assert bench.model_fingerprint(split.clf) == bench.model_fingerprint(_split(bench).clf)
    row = {"model": "mnist", "library": "boundgeo", "method": "sgd", "norm": "l2", "xi": 3.0, "seed": 1,
           "eval_fooling_rate": 0.4, "fit_fooling_rate": 0.5, "seconds": 2.0, "threads": 2}
    env = {"scope_version": "s1", "code_clean": True, "art": "1.20.1"}
    main, part = tmp_path / "main.json", tmp_path / "part.json"
    main.write_text(json.dumps({"environment": env, "rows": [row],
                                "setup": {"mnist": {"model_fingerprint": bench.model_fingerprint(split.clf)}}}))
    part.write_text(json.dumps({"environment": env, "rows": [dict(row, seed=2)],
                                "setup": {"mnist": {"model_fingerprint": bench.model_fingerprint(other.clf)}}}))
    before = main.read_text()
    with pytest.raises(SystemExit, match="another mnist model"):
        bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    assert main.read_text() == before
    part.write_text(part.read_text().replace(bench.model_fingerprint(other.clf), bench.model_fingerprint(split.clf)))
    bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    assert len(json.loads(main.read_text())["rows"]) == 2


def test_merge_refuses_a_part_of_the_same_weights_in_another_configuration(bench, tmp_path):
    """Weights alone do not fix a model's outputs (outputs=, a stride, a buffer): the setups record
    both, and a part whose configuration differs is refused even where the weights agree."""
    split, other = _split(bench), _split(bench, outputs="auto")
    assert bench.model_fingerprint(split.clf) == bench.model_fingerprint(other.clf)
    assert bench.model_config(split.clf) != bench.model_config(other.clf)
    row = {"model": "mnist", "library": "boundgeo", "method": "sgd", "norm": "l2", "xi": 3.0, "seed": 1,
           "eval_fooling_rate": 0.4, "fit_fooling_rate": 0.5, "seconds": 2.0, "threads": 2}
    env = {"scope_version": "s1", "code_clean": True, "art": "1.20.1"}
    main, part = tmp_path / "main.json", tmp_path / "part.json"
    main.write_text(json.dumps({"environment": env, "rows": [row], "setup": {"mnist": split.setup}}))
    part.write_text(json.dumps({"environment": env, "rows": [dict(row, seed=2)], "setup": {"mnist": other.setup}}))
    before = main.read_text()
    with pytest.raises(SystemExit, match="another mnist model.*model_config"):
        bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    assert main.read_text() == before
    older = {"mnist": {"model_fingerprint": bench.model_fingerprint(other.clf)}}  # recorded before model_config
    part.write_text(json.dumps({"environment": env, "rows": [dict(row, seed=2)], "setup": older}))
    bench.merge(argparse.Namespace(out=str(main), merge=[str(part)], fresh=False))
    assert len(json.loads(main.read_text())["rows"]) == 2


def _art_seeds_args(out, seeds=(0, 1), settings=("l2:3",), timing="concurrent"):
    return argparse.Namespace(model="mnist", data_dir=None, fit=None, threads=1, art_seeds=list(seeds),
                              art_settings=list(settings), timing=timing, out=str(out))


@pytest.fixture()
def art_runs(bench, monkeypatch):
    """``--art-seeds`` on the toy split with ART replaced by a record of its calls (a fixed v per seed)."""
    split = _split(bench)
    monkeypatch.setattr(bench, "load_split", lambda *a, **k: split)
    calls = []

    def fake_art(model, x_fit, norm, xi, seed=0, threads=1):
        calls.append((norm, xi, seed))
        v = torch.full((1, 4, 4), 0.05 * (seed + 1))
        return v, 100.0 + seed, 0.5

    monkeypatch.setattr(bench, "run_art", fake_art)
    return split, calls


def test_art_seeds_keeps_the_current_runs_of_its_part_and_runs_only_the_missing(bench, art_runs, tmp_path):
    split, calls = art_runs
    out = tmp_path / "art.json"
    bench.art_seeds(_art_seeds_args(out, seeds=[0]))
    assert calls == [("l2", 3.0, 0)]
    first = json.loads(out.read_text())
    assert first["benchmark"] == "universal (ART seeds)" and [r["seed"] for r in first["rows"]] == [0]

    bench.art_seeds(_art_seeds_args(out, seeds=[0, 1]))  # seed 0 is current: only seed 1 runs
    assert calls == [("l2", 3.0, 0), ("l2", 3.0, 1)]
    rows = json.loads(out.read_text())["rows"]
    assert [r["seed"] for r in rows] == [0, 1]
    assert rows[0]["reused"]["part"] == "art.json" and "reused" not in rows[1]
    assert rows[0]["eval_fooling_rate"] == bg.fooling_rate(split.clf, split.x_eval, bench.unpack(rows[0]["v"]))

    before = out.read_text()
    bench.art_seeds(_art_seeds_args(out, seeds=[0, 1]))  # every run current: nothing runs, nothing written
    assert len(calls) == 2 and out.read_text() == before


@pytest.mark.parametrize("change", [
    lambda row: row.update(inputs="0" * 16),  # ART read something else then (the model, images, a version)
    lambda row: row.update(timing="own-core"),  # asked: concurrent; a timed run is not silently relabelled
    lambda row: row.pop("v"),
])
def test_art_seeds_runs_again_what_is_not_current(bench, art_runs, tmp_path, change):
    split, calls = art_runs
    out = tmp_path / "art.json"
    bench.art_seeds(_art_seeds_args(out, seeds=[0]))
    data = json.loads(out.read_text())
    change(data["rows"][0])
    out.write_text(json.dumps(data))
    bench.art_seeds(_art_seeds_args(out, seeds=[0]))
    assert calls == [("l2", 3.0, 0)] * 2
    row, = json.loads(out.read_text())["rows"]
    assert "reused" not in row and row["inputs"] == bench.art_inputs(split, 1) and row["timing"] == "concurrent"


def test_art_seeds_runs_again_the_runs_of_a_model_in_another_configuration(bench, art_runs, tmp_path):
    split, calls = art_runs
    out = tmp_path / "art.json"
    bench.art_seeds(_art_seeds_args(out, seeds=[0]))
    data = json.loads(out.read_text())
    data["setup"]["mnist"]["model_config"] = "0" * 16  # same weights (the row's inputs still match)
    out.write_text(json.dumps(data))
    bench.art_seeds(_art_seeds_args(out, seeds=[0]))
    assert calls == [("l2", 3.0, 0)] * 2
    data = json.loads(out.read_text())
    assert "reused" not in data["rows"][0] and data["setup"]["mnist"]["model_config"] == split.setup["model_config"]


def test_art_seeds_runs_again_a_timed_run_of_another_machine(bench, art_runs, tmp_path):
    split, calls = art_runs
    out = tmp_path / "art.json"
    bench.art_seeds(_art_seeds_args(out, seeds=[0], timing="own-core"))
    data = json.loads(out.read_text())
    data["environment"]["cpu_model"] = "cpu B"
    out.write_text(json.dumps(data))
    bench.art_seeds(_art_seeds_args(out, seeds=[0], timing="own-core"))
    assert len(calls) == 2 and json.loads(out.read_text())["rows"][0]["timing"] == "own-core"


@pytest.mark.parametrize("content, message", [
    ({"benchmark": "universal", "rows": []}, "not a part of ART's runs"),
    ("not json", "not readable JSON"),
    (None, "not asked for"),  # a part holding seed 2, asked for seeds 0-1
])
def test_art_seeds_refuses_an_out_it_would_damage_before_any_work(bench, tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(bench, "load_split", lambda *a, **k: pytest.fail("refused before any work"))
    out = tmp_path / "art.json"
    if content is None:
        content = {"benchmark": "universal (ART seeds)", "environment": {"code_clean": True},
                   "rows": [{"model": "mnist", "library": "art", "norm": "l2", "xi": 3.0, "seed": 2}]}
    out.write_text(content if isinstance(content, str) else json.dumps(content))
    before = out.read_text()
    with pytest.raises(SystemExit, match=message):
        bench.art_seeds(_art_seeds_args(out))
    assert out.read_text() == before
