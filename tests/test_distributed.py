"""Runs under a torch.distributed process group (2 CPU processes, gloo) give one process's results.

The processes are started with ``torch.multiprocessing.spawn`` and meet through a file; what
they compute is in tests/_distributed_worker.py, and the same function runs once here without a
process group for the reference.
"""

from __future__ import annotations

import pytest
import torch

import boundgeo as bg

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - torch built without distributed support
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from tests import _distributed_worker as worker  # noqa: E402

BLOCK_BYTES = 8 * 200 * 16  # stream blocks of 16 columns: 4 blocks of the 64 digit pixels


def _spawn(folder, scenario: str, size: int = 2) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(worker.worker, args=(size, str(folder), scenario, BLOCK_BYTES), nprocs=size, join=True)
    return [torch.load(folder / f"{scenario}.rank{rank}.pt", weights_only=False) for rank in range(size)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    ranks = _spawn(folder, "compute")
    threads = torch.get_num_threads()
    spectrum_module = worker.spectrum_module
    block = spectrum_module._BLOCK_BYTES
    try:
        single = worker.compute(folder / "single", BLOCK_BYTES)
    finally:
        torch.set_num_threads(threads)
        spectrum_module._BLOCK_BYTES = block
    return single, ranks


def _same_points(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("key", ["normals_out", "normals_n"])
def test_normals_bit_identical_on_every_rank(runs, key):
    single, ranks = runs
    for rank in ranks:
        _same_points(single[key], rank[key])


def test_normals_with_n_skip_what_one_process_skips(runs):
    single, ranks = runs
    assert len(single["normals_n"]["index"]) == 150
    assert ranks[1]["normals_n"]["skipped"] == single["normals_n"]["skipped"] > 0


@pytest.mark.parametrize("key", ["spectrum_stream", "spectrum_gram_rows", "spectrum_gram_columns"])
def test_spectrum_equals_one_process(runs, key):
    single, ranks = runs
    for rank in ranks:
        assert rank[key]["route"] == single[key]["route"]
        torch.testing.assert_close(rank[key]["values"], single[key]["values"], rtol=1e-6, atol=0)
        # principal directions up to sign
        signs = torch.sign((rank[key]["components"] * single[key]["components"]).sum(1, keepdim=True))
        torch.testing.assert_close(rank[key]["components"] * signs, single[key]["components"],
                                   rtol=1e-4, atol=1e-5)


def test_sgd_in_pieces_is_bit_identical(runs):
    single, ranks = runs
    for rank in ranks:
        assert torch.equal(rank["uap_sgd_pieces"]["v"], single["uap_sgd_pieces"]["v"])
        assert rank["uap_sgd_pieces"]["history"] == single["uap_sgd_pieces"]["history"]
        assert rank["uap_sgd_pieces"]["eval"] == single["uap_sgd_pieces"]["eval"]


@pytest.mark.parametrize("key", ["uap_sgd", "uap_batched", "uap_algorithm1"])
def test_universal_perturbations_match_one_process(runs, key):
    single, ranks = runs
    assert torch.equal(ranks[0][key]["v"], ranks[1][key]["v"])  # the same v on every rank
    for rank in ranks:
        assert (rank[key]["v"] - single[key]["v"]).abs().max() <= 1e-5
        assert rank[key]["rate"] == pytest.approx(single[key]["rate"], abs=1e-12)


def test_fooling_rate_counts_are_exact(runs):
    single, ranks = runs
    assert [rank["fooling_rate"] for rank in ranks] == [single["fooling_rate"]] * 2


@pytest.mark.parametrize("key", ["profile", "subspace"])
def test_profile_and_subspace_rates_are_exact(runs, key):
    single, ranks = runs
    for rank in ranks:
        assert rank[key].keys() == single[key].keys()
        for name in single[key]:
            assert torch.equal(rank[key][name], single[key][name]), name


def test_settings_that_differ_across_ranks_are_refused(tmp_path):
    ranks = _spawn(tmp_path, "mismatch")
    for rank in ranks:
        assert set(rank) == {"seed", "out", "n", "xi", "map_rows"}
        assert "out of memory on rank 1" in rank["map_rows"]
        assert "seed: rank 0 0, rank 1 1" in rank["seed"]
        assert "n: rank 0 20, rank 1 21" in rank["n"]
        assert "out:" in rank["out"] and "differ across the 2 ranks" in rank["out"]
        assert "xi" in rank["xi"]


def test_an_error_on_one_rank_inside_a_split_computation_stops_every_rank(tmp_path):
    ranks = _spawn(tmp_path, "failures")
    expected = {"sgd": "CUDA out of memory (simulated) on rank 1", "batched": "CUDA out of memory (simulated) on rank 1",
                "spectrum": "read error (simulated) on rank 1", "profile": "witness failed (simulated) on rank 1"}
    for name, message in expected.items():
        assert message in ranks[1][name], (name, ranks[1][name])
        assert ranks[0][name].startswith("BoundgeoError: failed on rank 1 of 2"), (name, ranks[0][name])
        assert message in ranks[0][name], (name, ranks[0][name])
    assert ranks[0]["rows"] == ranks[1]["rows"] > 0


def test_a_crash_on_one_rank_resumes_when_the_job_starts_again(tmp_path):
    ranks = _spawn(tmp_path, "resume")
    assert "simulated crash of rank 1" in ranks[1]["error"]
    assert ranks[0]["error"].startswith("BoundgeoError") and "rank 1" in ranks[0]["error"]
    before = ranks[0]["finished_before"]
    assert 0 < len(before) < 7
    assert ranks[0]["kept"] == before  # the finished shards were reused, not computed again
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trained = bg.zoo.pretrained_digits_cnn()
        x, _ = bg.load_dataset("digits", split="test")
        single = bg.boundary_normals(bg.Classifier(trained.model.eval()), x[:200], batch_size=16, shard_size=32,
                                     progress=False)
    finally:
        torch.set_num_threads(threads)
    for rank in ranks:
        _same_points(worker._points(single), rank["points"])


# ---------------------------------------------------------------- one process: nothing changes

def test_outside_a_process_group_boundgeo_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert bg.distributed.world() == bg.distributed.World(0, 1)
    assert not bg.distributed.launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    assert bg.distributed.launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert not bg.distributed.launched_by_torchrun()


def test_resume_auto_continues_the_same_run_and_restarts_another(tmp_path, digits_cnn):
    trained, x, y = digits_cnn
    clf = bg.Classifier(trained.model.eval())
    first = bg.boundary_normals(clf, x[:40], out=tmp_path, batch_size=16, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("*.npz")}
    again = bg.boundary_normals(clf, x[:40], out=tmp_path, batch_size=16, progress=False, resume="auto")
    assert torch.equal(first.normal, again.normal)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("*.npz")} == stamps  # reused
    with pytest.raises(bg.BoundgeoError, match="batch_size was 16, now 8"):
        bg.boundary_normals(clf, x[:40], out=tmp_path, batch_size=8, progress=False)
    with pytest.warns(UserWarning, match="starting over"):
        other = bg.boundary_normals(clf, x[:40], out=tmp_path, batch_size=8, shard_size=16, progress=False,
                                    resume="auto")
    assert other.settings["batch_size"] == 8
    # starting over leaves none of the old run's shards behind: exactly the new run's three
    now = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").glob("*.npz")}
    assert len(now) == 3 and not set(now.items()) & set(stamps.items())
    with pytest.raises(bg.BoundgeoError, match="resume must be one of"):
        bg.boundary_normals(clf, x[:40], out=tmp_path, progress=False, resume="yes")


def test_map_rows_of_nothing_is_empty_as_in_one_process():
    out = bg.distributed.map_rows(bg.distributed.World(), 0, 4, lambda a, b: torch.ones(b - a),
                                  dtype=torch.float32, device="cpu")
    assert out.shape == (0,)
